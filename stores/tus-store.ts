// The tus staging area: @tus/file-store under StoreDir/.hmac/tus (same filesystem as the upload tree, so a
// finished upload is committed by a link), one data file and one <id>.json record per upload:
//
//   StoreDir/.hmac/tus/<id>         the bytes received so far
//   StoreDir/.hmac/tus/<id>.json    tus record: size, metadata (client's filename and type, our owner)
//
// After commit the data file stays, as a second link to the committed file, so HEAD still reports the
// final offset; the sweep removes it (never the committed file) once the upload has expired.
import { FileStore } from '@tus/file-store';
import type { AsyncLocalStorage } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import { readdir, stat, truncate } from 'node:fs/promises';
import { pipeline, Transform } from 'node:stream';
import path from 'node:path';
import type { Logger } from '../server/logger.js';


/** Our naming function's shape (32 lower-case hex); anything else is refused before it reaches the store. */
export const UPLOAD_ID = /^[0-9a-f]{32}$/;

/** Progress the metrics work reads; the store only counts, it knows no metrics registry. */
export interface TusCounters {
  bytesReceived: number;
  created: number;
  finished: number;
  terminated: number;
}

export function newTusCounters(): TusCounters {
  return { bytesReceived: 0, created: 0, finished: 0, terminated: 0 };
}

/** tus checksum extension: the algorithms a client may name in Upload-Checksum. */
export const CHECKSUM_ALGORITHMS = ['md5', 'sha1', 'sha256'] as const;
export type ChecksumAlgorithm = (typeof CHECKSUM_ALGORITHMS)[number];

/** The checksum a PATCH announced for its body; set per request around the library's handling. */
export interface ExpectedChecksum {
  algorithm: ChecksumAlgorithm;
  /** Base64 digest, as sent. */
  digest: string;
}

/** What @tus/server answers for an error thrown by a store: its status_code and body. */
export class ChecksumMismatch extends Error {
  readonly status_code = 460;
  readonly body = 'Checksum Mismatch\n';
}

/**
 * @tus/file-store that counts the bytes it writes and verifies a chunk's Upload-Checksum: a chunk whose
 * digest does not match is cut off again (the file is truncated to the old offset) before the library
 * records a new offset, so the upload stays where it was.
 */
export class CountingFileStore extends FileStore {
  constructor(
    storeDir: string,
    /** Upload-Expires and the 410 for PATCHes after it; deleting is sweepTusUploads' job. */
    expirationMs: number,
    private readonly counters: TusCounters,
    private readonly checksums: AsyncLocalStorage<ExpectedChecksum>,
  ) {
    super({ directory: path.join(storeDir, '.hmac', 'tus'), expirationPeriodInMilliseconds: expirationMs });
    // Concatenation is done by our router (the library answers 501); checksums here.
    this.extensions = [...this.extensions, 'checksum', 'concatenation'];
  }

  override async write(...[readable, id, offset]: Parameters<FileStore['write']>): Promise<number> {
    const expected = this.checksums.getStore();
    if (!expected) return this.counted(offset, await super.write(readable, id, offset));
    const hash = createHash(expected.algorithm);
    const hashing = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        hash.update(chunk);
        callback(null, chunk);
      },
    });
    pipeline(readable, hashing, () => undefined);
    const newOffset = await super.write(hashing, id, offset);
    if (hash.digest('base64') !== expected.digest) {
      await truncate(path.join(this.directory, id), offset);
      throw new ChecksumMismatch();
    }
    return this.counted(offset, newOffset);
  }

  private counted(before: number, after: number): number {
    this.counters.bytesReceived += after - before;
    return after;
  }
}

/**
 * Removes tus uploads older than maxAgeMs: abandoned ones lose their bytes, finished ones only their
 * staging link and record (the committed file is another link and stays). Returns how many went.
 */
export async function sweepTusUploads(store: FileStore, maxAgeMs: number, logger: Logger, now = Date.now()): Promise<number> {
  let removed = 0;
  let names: string[];
  try {
    names = await readdir(store.directory);
  } catch {
    return 0;
  }
  for (const name of names) {
    const id = name.endsWith('.json') ? name.slice(0, -5) : '';
    if (!UPLOAD_ID.test(id)) continue;
    try {
      const record = await store.configstore.get(id);
      const created = record?.creation_date ? Date.parse(record.creation_date) : (await stat(path.join(store.directory, name))).mtimeMs;
      if (now - created <= maxAgeMs) continue;
      await store.remove(id).catch(() => store.configstore.delete(id));
      removed += 1;
      logger.info('tus.expired', { id });
    } catch (err) {
      logger.warn('tus.sweep_failed', { id, cause: err instanceof Error ? err.message : String(err) });
    }
  }
  return removed;
}
