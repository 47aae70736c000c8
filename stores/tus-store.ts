// The tus staging area: @tus/file-store under StoreDir/.hmac/tus (same filesystem as the upload tree, so a
// finished upload is committed by a link), one data file and one <id>.json record per upload:
//
//   StoreDir/.hmac/tus/<id>         the bytes received so far
//   StoreDir/.hmac/tus/<id>.json    tus record: size, metadata (client's filename and type, our owner)
//
// After commit the data file stays, as a second link to the committed file, so HEAD still reports the
// final offset; the sweep removes it (never the committed file) once the upload has expired.
import { FileStore } from '@tus/file-store';
import { readdir, stat } from 'node:fs/promises';
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

/** @tus/file-store that counts the bytes it writes. */
export class CountingFileStore extends FileStore {
  constructor(
    storeDir: string,
    /** Upload-Expires and the 410 for PATCHes after it; deleting is sweepTusUploads' job. */
    expirationMs: number,
    private readonly counters: TusCounters,
  ) {
    super({ directory: path.join(storeDir, '.hmac', 'tus'), expirationPeriodInMilliseconds: expirationMs });
  }

  override async write(...args: Parameters<FileStore['write']>): Promise<number> {
    const offset = await super.write(...args);
    this.counters.bytesReceived += offset - args[2];
    return offset;
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
