// The S3 backend (StorageBackend = "s3"): committed files, metadata, versions and blobs as objects in one bucket.
//
//   meta/<h>.json                 metadata of the current file of a path (h = FileLayout.recordKey), written last
//   data/<h>/<random>             the bytes of one commit, as stored (encrypted when encryption is on)
//   versions/<h>/<version id>.json  metadata of a kept version; its bytes stay where they were written
//   blobs/<sha> and <sha>.json     dedup blobs: the bytes, and how to read them
//
// Bytes objects are written once and never overwritten: a commit writes its bytes under a new key and then the
// metadata that names them, so a GET sees the old file or the new one and never a mix, and keeping a version
// moves only its metadata. Without conditional writes in every engine, the per-path lock (across instances with
// Redis) decides which of two racing uploads gets a path.
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { PathLock } from '../hooks/path-lock.js';
import { httpError } from '../server/errors.js';
import { keyOf, plaintextStream } from './at-rest.js';
import { isMetadata, type FileMetadata } from './file-metadata.js';
import type { FileLayout } from './file-layout.js';
import type { S3Objects } from './s3-objects.js';
import type { BlobInfo, Blobs, CommittedFiles, FilesOptions, OnRemoved, OpenFile, ReadPolicy, Storage, StoredRecord, VersionInfo } from './storage.js';
import { isVersionId, newVersionId } from './versions.js';

/**
 * How long metadata read for a download is used again without asking S3. This process forgets an entry at
 * once on its own changes; another instance's replacement of a file is seen within this time (its bytes are
 * never overwritten, so until then the whole earlier file is served, never a mix), its removal at once (the
 * bytes are gone and the metadata is asked again).
 */
const RECENT_MS = 2000;
const RECENT_MAX = 4096;

/** Metadata of recently served files: saves a Range GET one of its two trips to S3. */
class RecentMetadata {
  private readonly entries = new Map<string, { meta: FileMetadata; until: number }>();

  get(key: string): FileMetadata | undefined {
    const entry = this.entries.get(key);
    if (entry && entry.until > Date.now()) return entry.meta;
    this.entries.delete(key);
    return undefined;
  }

  set(key: string, meta: FileMetadata): void {
    this.entries.delete(key);
    this.entries.set(key, { meta, until: Date.now() + RECENT_MS });
    // Oldest first in a Map: the first key is the one to drop.
    if (this.entries.size > RECENT_MAX) this.entries.delete(this.entries.keys().next().value!);
  }

  forget(key: string): void {
    this.entries.delete(key);
  }
}

const metaKey = (h: string) => `meta/${h}.json`;
const versionKey = (h: string, id: string) => `versions/${h}/${id}.json`;
const blobKey = (sha: string) => `blobs/${sha}`;

async function readMeta(objects: S3Objects, key: string): Promise<FileMetadata | undefined> {
  const value = await objects.getJson<unknown>(key);
  if (value === undefined) return undefined;
  if (!isMetadata(value)) throw new Error(`malformed metadata in ${key}`);
  return value;
}

/** The bytes of a removed copy go with it, unless they are a blob's (removed lets go of the blob). */
async function dropBytes(objects: S3Objects, meta: FileMetadata, removed: OnRemoved | undefined): Promise<void> {
  if (!meta.blob && meta.object) await objects.delete([meta.object]);
  if (removed) await removed(meta);
}

/** Plaintext from a stored object; the key is checked at once, the size when the object answers. */
function openObject(objects: S3Objects, meta: FileMetadata, policy: ReadPolicy, what: string, recordKey: string, recent?: RecentMetadata): OpenFile {
  const key = meta.encryption ? keyOf(policy.keys, meta.encryption, what) : undefined;
  const verify = meta.encryption !== undefined || policy.verifyPlaintext;
  return {
    meta,
    stream: async (start, end): Promise<Readable> => {
      const got = meta.object ? await objects.getRange(meta.object, start, end) : undefined;
      if (!got) {
        recent?.forget(recordKey);
        // Removed between its metadata and its bytes: gone, as a GET a moment later would find it.
        if (!(await objects.exists(recordKey))) throw httpError('E_NOT_FOUND');
        throw httpError('E_INTEGRITY', { cause: new Error(`${what}: object ${meta.object ?? '(none recorded)'} is missing`) });
      }
      if (got.total !== meta.size) {
        got.body.destroy();
        throw httpError('E_INTEGRITY', { cause: new Error(`${what}: ${got.total} bytes stored, ${meta.size} recorded`) });
      }
      const whole = start === 0 && end === meta.size - 1;
      return plaintextStream(got.body, { key, encryption: meta.encryption, start, wholeFileDigest: whole && verify ? meta.sha256 : undefined, what });
    },
    readShort: () => undefined,
    close: () => Promise.resolve(),
  };
}

class S3CommittedFiles implements CommittedFiles {
  readonly prefix: string;
  readonly durableStaging = false;
  private readonly removed: OnRemoved | undefined;

  constructor(
    private readonly objects: S3Objects,
    private readonly layout: FileLayout,
    private readonly policy: ReadPolicy,
    private readonly lock: PathLock,
    private readonly recent: RecentMetadata,
    options: FilesOptions,
  ) {
    this.prefix = layout.prefix;
    this.removed = options.removed;
  }

  private h(slotPath: string): string {
    return this.layout.recordKey(slotPath);
  }

  exists(slotPath: string): Promise<boolean> {
    return this.objects.exists(metaKey(this.h(slotPath)));
  }

  async open(slotPath: string): Promise<OpenFile | undefined> {
    const key = metaKey(this.h(slotPath));
    let meta = this.recent.get(key);
    if (!meta) {
      meta = await readMeta(this.objects, key);
      if (meta) this.recent.set(key, meta);
    }
    return meta ? openObject(this.objects, meta, this.policy, slotPath, key, this.recent) : undefined;
  }

  async remove(slotPath: string): Promise<FileMetadata | undefined> {
    const key = metaKey(this.h(slotPath));
    this.recent.forget(key);
    const meta = await readMeta(this.objects, key);
    if (!meta) return undefined;
    await this.objects.delete([key]);
    await dropBytes(this.objects, meta, this.removed);
    return meta;
  }

  async place(from: string, meta: FileMetadata): Promise<void> {
    const h = this.h(meta.path);
    const object = meta.blob ? blobKey(meta.blob.sha) : `data/${h}/${randomBytes(12).toString('hex')}`;
    // The bytes go up outside the lock (a large file takes a while); only the check and the metadata are under it.
    if (!meta.blob) await this.objects.putFile(object, from, meta.size);
    try {
      await this.lock(`place:${this.prefix}/${meta.path}`, async () => {
        if (await this.objects.exists(metaKey(h))) throw httpError('E_EXISTS');
        await this.objects.putJson(metaKey(h), { ...meta, object });
        this.recent.forget(metaKey(h));
      });
    } catch (err) {
      if (!meta.blob) await this.objects.delete([object]).catch(() => undefined);
      throw err;
    }
  }

  async keepAsVersion(slotPath: string): Promise<string | undefined> {
    const h = this.h(slotPath);
    const meta = await readMeta(this.objects, metaKey(h));
    if (!meta) return undefined;
    const id = newVersionId(meta.createdAt);
    await this.objects.putJson(versionKey(h, id), meta);
    this.recent.forget(metaKey(h));
    await this.objects.delete([metaKey(h)]);
    return id;
  }

  async restoreVersion(slotPath: string, id: string): Promise<void> {
    const h = this.h(slotPath);
    const meta = await readMeta(this.objects, versionKey(h, id));
    if (!meta) return;
    await this.objects.putJson(metaKey(h), meta);
    this.recent.forget(metaKey(h));
    await this.objects.delete([versionKey(h, id)]);
  }

  /** Oldest first. */
  private async versionIds(h: string): Promise<string[]> {
    const ids: string[] = [];
    for await (const key of this.objects.list(`versions/${h}/`)) {
      const id = key.slice(`versions/${h}/`.length, -'.json'.length);
      if (key.endsWith('.json') && isVersionId(id)) ids.push(id);
    }
    return ids.sort();
  }

  private async removeVersion(h: string, id: string): Promise<void> {
    const meta = await readMeta(this.objects, versionKey(h, id)).catch(() => undefined);
    await this.objects.delete([versionKey(h, id)]);
    if (meta) await dropBytes(this.objects, meta, this.removed);
  }

  async pruneVersions(slotPath: string, max: number): Promise<number> {
    const h = this.h(slotPath);
    const ids = await this.versionIds(h);
    const surplus = ids.slice(0, Math.max(0, ids.length - max));
    for (const id of surplus) await this.removeVersion(h, id);
    return surplus.length;
  }

  async listVersions(slotPath: string): Promise<VersionInfo[]> {
    const h = this.h(slotPath);
    const list: VersionInfo[] = [];
    for (const id of (await this.versionIds(h)).reverse()) {
      const meta = await readMeta(this.objects, versionKey(h, id));
      if (meta) list.push({ id, size: meta.size, contentType: meta.contentType, createdAt: meta.createdAt });
    }
    return list;
  }

  async openVersion(slotPath: string, id: string): Promise<OpenFile | undefined> {
    if (!isVersionId(id)) return undefined;
    const key = versionKey(this.h(slotPath), id);
    const meta = await readMeta(this.objects, key);
    return meta ? openObject(this.objects, meta, this.policy, `${slotPath}@${id}`, key) : undefined;
  }

  async removeAllVersions(slotPath: string): Promise<void> {
    const h = this.h(slotPath);
    for (const id of await this.versionIds(h)) await this.removeVersion(h, id);
  }
}

class S3Blobs implements Blobs {
  constructor(
    private readonly objects: S3Objects,
    readonly lock: PathLock,
  ) {}

  sourceOf(sha: string): string {
    return blobKey(sha);
  }

  info(sha: string): Promise<BlobInfo | undefined> {
    return this.objects.getJson<BlobInfo>(`${blobKey(sha)}.json`);
  }

  async adopt(sha: string, stagingPath: string, staged: BlobInfo): Promise<BlobInfo & { existed: boolean }> {
    const existing = await this.info(sha);
    if (existing) return { ...existing, existed: true };
    // Bytes first, info last: a blob without its info is unknown, and the next adopt writes it again.
    await this.objects.putFile(blobKey(sha), stagingPath, staged.size);
    await this.objects.putJson(`${blobKey(sha)}.json`, staged);
    return { ...staged, existed: false };
  }

  async release(sha: string): Promise<void> {
    await this.objects.delete([`${blobKey(sha)}.json`, blobKey(sha)]);
  }
}

/**
 * pathLock: one placement at a time per path (across instances with Redis), since a PUT cannot be made
 * conditional on every engine.
 */
export function s3Storage(objects: S3Objects, pathLock: PathLock): Storage {
  // One for every tenant: whatever removes or replaces a file drops it where downloads look.
  const recent = new RecentMetadata();
  return {
    kind: 's3',
    files: (layout, policy, options = {}) => new S3CommittedFiles(objects, layout, policy, pathLock, recent, options),
    blobs: (lock) => new S3Blobs(objects, lock),
    async *records(): AsyncGenerator<StoredRecord> {
      for await (const key of objects.list('meta/')) {
        const meta = key.endsWith('.json') ? await readMeta(objects, key).catch(() => undefined) : undefined;
        if (meta) yield { meta };
      }
      for await (const key of objects.list('versions/')) {
        const meta = key.endsWith('.json') ? await readMeta(objects, key).catch(() => undefined) : undefined;
        if (!meta) continue;
        const id = key.slice(key.lastIndexOf('/') + 1, -'.json'.length);
        yield {
          meta,
          version: {
            id,
            remove: async (removed) => {
              await objects.delete([key]);
              await dropBytes(objects, meta, removed);
            },
          },
        };
      }
    },
    check: () => objects.ping(),
    close: () => objects.close(),
  };
}
