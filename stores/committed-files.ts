// Read and remove access to committed files: the data under the upload tree plus its metadata. Opening
// refuses symlinks and anything whose commit has not finished (no metadata yet), and hands out plaintext:
// an encrypted file is decrypted from whatever offset is read; a file whose size does not match its record,
// or whose key is gone, is an error before any byte is sent.
import { constants, createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { open, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { FileLayout } from './file-layout.js';
import { httpError } from '../server/errors.js';
import { keyOf, plaintextStream } from './at-rest.js';
import { readMetadata, removeMetadata, type FileMetadata } from './file-metadata.js';
import type { KeyRing } from './key-ring.js';
import type { ReleaseBlob } from './versions.js';

export interface OpenFile {
  meta: FileMetadata;
  /**
   * Plaintext bytes start..end inclusive, as Range counts them; a whole-file read also checks the recorded
   * digest. Takes over the handle; close() is then a no-op.
   */
  stream(start: number, end: number): Readable;
  close(): Promise<void>;
}

const MISSING = new Set(['ENOENT', 'ENOTDIR', 'ELOOP', 'EISDIR']);

/**
 * Opens stored bytes described by meta (a committed file or a kept version): the key must be known and the
 * size must match before anything is sent. check runs once the file is open (the upload tree's symlink test).
 */
export async function openStored(dataPath: string, meta: FileMetadata, keys: KeyRing, what: string, check?: () => Promise<void>): Promise<OpenFile | undefined> {
  const key = meta.encryption ? keyOf(keys, meta.encryption, what) : undefined;
  let handle: FileHandle;
  try {
    // O_NOFOLLOW: the final component must be the file we placed, not a symlink planted later.
    handle = await open(dataPath, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    if (MISSING.has((err as NodeJS.ErrnoException).code ?? '')) return undefined;
    throw err;
  }
  try {
    await check?.();
    const { size } = await handle.stat();
    if (size !== meta.size) throw httpError('E_INTEGRITY', { cause: new Error(`${what}: ${size} bytes on disk, ${meta.size} recorded`) });
  } catch (err) {
    await handle.close();
    throw err;
  }
  let taken = false;
  return {
    meta,
    stream: (start, end) => {
      taken = true;
      const raw = createReadStream('', { fd: handle, start, end, autoClose: true });
      const whole = start === 0 && end === meta.size - 1;
      return plaintextStream(raw, { key, encryption: meta.encryption, start, wholeFileDigest: whole ? meta.sha256 : undefined, what });
    },
    close: async () => {
      if (!taken) await handle.close();
    },
  };
}

export class CommittedFiles {
  constructor(
    private readonly layout: FileLayout,
    private readonly keys: KeyRing,
    /** Deduplication: told when a removed file shared a blob. */
    private readonly release?: ReleaseBlob,
  ) {}

  async exists(slotPath: string): Promise<boolean> {
    return (await readMetadata(this.layout.metaPath(slotPath))) !== undefined;
  }

  /** The committed file at slotPath, or undefined. The caller must stream or close it. */
  async open(slotPath: string): Promise<OpenFile | undefined> {
    const meta = await readMetadata(this.layout.metaPath(slotPath));
    if (!meta) return undefined;
    const dataPath = this.layout.dataPath(slotPath);
    return openStored(dataPath, meta, this.keys, slotPath, () => this.layout.assertInside(path.dirname(dataPath)));
  }

  /** Removes a committed file; false when there was none. Metadata goes first so GETs stop at once. */
  async remove(slotPath: string): Promise<boolean> {
    const metaPath = this.layout.metaPath(slotPath);
    const meta = await readMetadata(metaPath);
    if (!meta) return false;
    await removeMetadata(metaPath);
    await rm(this.layout.dataPath(slotPath), { force: true });
    if (meta.blob && this.release) await this.release(meta.blob);
    return true;
  }
}
