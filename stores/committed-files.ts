// The file-system backend's committed files: the data under the upload tree plus its metadata. Opening
// refuses symlinks, anything outside the upload tree and anything whose commit has not finished (no metadata
// yet), and hands out plaintext: an encrypted file is decrypted from whatever offset is read; a file whose
// size does not match its record, or whose key is gone, is an error before any byte is sent.
import fs, { constants, createReadStream, type Stats } from 'node:fs';
import { rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import type { FileLayout } from './file-layout.js';
import { httpError } from '../server/errors.js';
import { keyOf, plaintextStream } from './at-rest.js';
import { readMetadata, removeMetadata, type FileMetadata } from './file-metadata.js';
import { identityOf, MetadataCache } from './metadata-cache.js';
import type { CommittedFiles, FilesOptions, OnRemoved, OpenFile, ReadPolicy, VersionInfo } from './storage.js';
import { placeFile } from './place.js';
import { keepAsVersion, listVersions, pruneVersions, removeAllVersions, restoreVersion, versionMeta } from './versions.js';

const MISSING = new Set(['ENOENT', 'ENOTDIR', 'ELOOP', 'EISDIR']);

/**
 * Read size of a download. Node's 64 KiB default makes a 1 GiB download 16,384 reads, each a trip through the
 * thread pool; 512 KiB cuts that to 2,048 and is still little to hold per download. A small Range read
 * allocates only what it asks for.
 */
const READ_CHUNK = 512 * 1024;

interface OpenedData {
  fd: number;
  info: Stats;
}

const openFd = promisify(fs.open);

/**
 * Closing a descriptor opened for reading writes nothing back, so it never waits for a disk: done at once, it
 * saves a trip through the thread pool per download, which on a small Range GET is a good part of the cost.
 */
function closeNow(fd: number, callback: (err: NodeJS.ErrnoException | null) => void = () => undefined): void {
  try {
    fs.closeSync(fd);
    callback(null);
  } catch (err) {
    callback(err as NodeJS.ErrnoException);
  }
}

/** What the read streams of downloads use in place of node:fs. */
const DOWNLOAD_FS = { open: fs.open, read: fs.read, close: closeNow };

/** Opens a data file, refusing a symlink; undefined when there is nothing there. */
async function openData(dataPath: string): Promise<OpenedData | undefined> {
  let fd: number;
  try {
    // O_NOFOLLOW: the final component must be the file we placed, not a symlink planted later.
    fd = await openFd(dataPath, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    if (MISSING.has((err as NodeJS.ErrnoException).code ?? '')) return undefined;
    throw err;
  }
  try {
    // Synchronous: an open file's inode is in memory, so this never waits for a disk, and a trip through the
    // thread pool costs more than the call itself.
    return { fd, info: fs.fstatSync(fd) };
  } catch (err) {
    closeNow(fd);
    throw err;
  }
}

/** The key must be known and the size must match before anything is sent. Takes over the descriptor. */
function openFileOf({ fd, info }: OpenedData, meta: Readonly<FileMetadata>, policy: ReadPolicy, what: string): OpenFile {
  const key = meta.encryption ? keyOf(policy.keys, meta.encryption, what) : undefined;
  if (info.size !== meta.size) throw httpError('E_INTEGRITY', { cause: new Error(`${what}: ${info.size} bytes on disk, ${meta.size} recorded`) });
  const verify = meta.encryption !== undefined || policy.verifyPlaintext;
  let taken = false;
  return {
    meta,
    stream: (start, end) => {
      taken = true;
      const raw = createReadStream('', { fd, fs: DOWNLOAD_FS, start, end, autoClose: true, highWaterMark: READ_CHUNK });
      const whole = start === 0 && end === meta.size - 1;
      return plaintextStream(raw, { key, encryption: meta.encryption, start, wholeFileDigest: whole && verify ? meta.sha256 : undefined, what });
    },
    readShort: (start, end) => {
      const length = end - start + 1;
      const whole = start === 0 && end === meta.size - 1;
      if (key || length > READ_CHUNK || (whole && verify && meta.sha256 !== undefined)) return undefined;
      taken = true;
      return new Promise((resolve, reject) => {
        const bytes = Buffer.allocUnsafe(length);
        fs.read(fd, bytes, 0, length, start, (err, bytesRead) => {
          closeNow(fd);
          if (err) reject(err);
          // The size was checked at open: a file that shrank since is damaged.
          else if (bytesRead !== length) reject(httpError('E_INTEGRITY', { cause: new Error(`${what}: ${bytesRead} of ${length} bytes at ${start}`) }));
          else resolve(bytes);
        });
      });
    },
    close: () => {
      if (!taken) closeNow(fd);
      return Promise.resolve();
    },
  };
}

/** Opens stored bytes described by meta (a kept version); undefined when they are gone. */
export async function openStored(dataPath: string, meta: Readonly<FileMetadata>, policy: ReadPolicy, what: string): Promise<OpenFile | undefined> {
  const opened = await openData(dataPath);
  if (!opened) return undefined;
  try {
    return openFileOf(opened, meta, policy, what);
  } catch (err) {
    closeNow(opened.fd);
    throw err;
  }
}

/** One tenant's committed files under StoreDir (stores/file-layout.ts). */
export class FsCommittedFiles implements CommittedFiles {
  readonly prefix: string;
  readonly durableStaging = true;
  private readonly removed: OnRemoved | undefined;
  private readonly cache: MetadataCache;

  constructor(
    private readonly layout: FileLayout,
    private readonly policy: ReadPolicy,
    options: FilesOptions = {},
  ) {
    this.prefix = layout.prefix;
    this.removed = options.removed;
    this.cache = options.cache ?? new MetadataCache(0);
  }

  async exists(slotPath: string): Promise<boolean> {
    return (await readMetadata(this.layout.metaPath(slotPath))) !== undefined;
  }

  /** The data file is opened first and its metadata found by what was opened, so the two belong together. */
  async open(slotPath: string): Promise<OpenFile | undefined> {
    const dataPath = this.layout.dataPath(slotPath);
    const opened = await openData(dataPath);
    if (!opened) return undefined;
    try {
      // Outside the upload tree (through a planted symlink) is nothing we serve: as absent as a missing file.
      if (!(await this.layout.isOpenedInside(opened.fd, dataPath))) {
        closeNow(opened.fd);
        return undefined;
      }
      const meta = await this.cache.read(this.layout.metaPath(slotPath), identityOf(opened.info));
      // Linked but not yet described: the commit has not finished.
      if (!meta) {
        closeNow(opened.fd);
        return undefined;
      }
      return openFileOf(opened, meta, this.policy, slotPath);
    } catch (err) {
      closeNow(opened.fd);
      throw err;
    }
  }

  async remove(slotPath: string): Promise<FileMetadata | undefined> {
    const metaPath = this.layout.metaPath(slotPath);
    this.cache.forget(metaPath);
    const meta = await readMetadata(metaPath);
    if (!meta) return undefined;
    await removeMetadata(metaPath);
    this.cache.forget(metaPath);
    await rm(this.layout.dataPath(slotPath), { force: true });
    if (this.removed) await this.removed(meta);
    return meta;
  }

  async place(from: string, meta: FileMetadata): Promise<void> {
    try {
      await placeFile(this.layout, from, meta);
    } finally {
      this.cache.forget(this.layout.metaPath(meta.path));
    }
  }

  async keepAsVersion(slotPath: string): Promise<string | undefined> {
    try {
      return await keepAsVersion(this.layout, slotPath);
    } finally {
      this.cache.forget(this.layout.metaPath(slotPath));
    }
  }

  restoreVersion(slotPath: string, id: string): Promise<void> {
    return restoreVersion(this.layout, slotPath, id);
  }

  pruneVersions(slotPath: string, max: number): Promise<number> {
    return pruneVersions(this.layout, slotPath, max, this.removed);
  }

  listVersions(slotPath: string): Promise<VersionInfo[]> {
    return listVersions(this.layout, slotPath);
  }

  async openVersion(slotPath: string, id: string): Promise<OpenFile | undefined> {
    const version = await versionMeta(this.layout, slotPath, id);
    return version ? openStored(version.dataPath, version.meta, this.policy, `${slotPath}@${id}`) : undefined;
  }

  removeAllVersions(slotPath: string): Promise<void> {
    return removeAllVersions(this.layout, slotPath, this.removed);
  }
}
