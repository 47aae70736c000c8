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
import { createWriteStream } from 'node:fs';
import { readdir, stat, truncate } from 'node:fs/promises';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ERRORS } from '@tus/utils';
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

/** @tus/server answers an error thrown by a store with its status_code and body. */
export class TusStoreError extends Error {
  constructor(
    readonly status_code: number,
    readonly body: string,
  ) {
    super(body.trim());
  }
}

/**
 * @tus/file-store with our own write: ChunkSize as the write buffer, a byte count for the metrics, and the
 * checksum extension. A chunk whose Upload-Checksum does not match (or that broke off, so it cannot be
 * checked) is cut off again before the library records a new offset, so the upload stays where it was.
 */
export class CountingFileStore extends FileStore {
  constructor(
    storeDir: string,
    private readonly options: {
      /** Upload-Expires and the 410 for PATCHes after it; deleting is sweepTusUploads' job. */
      expirationMs: number;
      chunkSize: number;
      counters: TusCounters;
      checksums: AsyncLocalStorage<ExpectedChecksum>;
    },
  ) {
    super({ directory: path.join(storeDir, '.hmac', 'tus'), expirationPeriodInMilliseconds: options.expirationMs });
    // Concatenation is done by our router (the library answers 501); checksums here.
    this.extensions = [...this.extensions, 'checksum', 'concatenation'];
  }

  override async write(readable: Readable, id: string, offset: number): Promise<number> {
    const expected = this.options.checksums.getStore();
    const hash = expected ? createHash(expected.algorithm) : undefined;
    let received = 0;
    const tap = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        received += chunk.length;
        hash?.update(chunk);
        callback(null, chunk);
      },
    });
    // Ids reach the store only after the router matched UPLOAD_ID, so this stays inside the directory.
    const file = path.join(this.directory, id);
    try {
      await pipeline(readable, tap, createWriteStream(file, { flags: 'r+', start: offset, highWaterMark: this.options.chunkSize }));
    } catch {
      if (hash) await truncate(file, offset);
      throw new TusStoreError(ERRORS.FILE_WRITE_ERROR.status_code, ERRORS.FILE_WRITE_ERROR.body);
    }
    if (hash && hash.digest('base64') !== expected!.digest) {
      await truncate(file, offset);
      throw new TusStoreError(460, 'Checksum Mismatch\n');
    }
    this.options.counters.bytesReceived += received;
    return offset + received;
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
