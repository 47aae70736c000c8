// Receiving bytes into a staging file: exclusive create, stream through the given transforms, fsync, close.
// On any failure the staging file is removed, so an aborted upload leaves nothing behind; what a crash
// leaves is swept later.
import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Readable, Transform } from 'node:stream';
import { finished } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { HttpError, httpError } from '../server/errors.js';
import { fileSink } from './file-sink.js';
import { intake } from './intake.js';

export interface StagedBytes {
  stagingPath: string;
  /** Bytes received from the client (before any transform). */
  size: number;
}

export interface ReceiveOptions {
  stagingPath: string;
  /** The announced length; receiving fewer is an E_INCOMPLETE. */
  expectedSize: number;
  /** Sees every chunk as it arrives, before any transform (the digest of the plaintext). */
  onChunk?: (chunk: Buffer) => void;
  /** Applied in order between the source and the file (encryption). */
  transforms?: Transform[];
  highWaterMark?: number;
  /** UploadStallTimeout: a body that does not move for this long is cut (0 = never). */
  stallMs?: number;
  /** fsync before the end (default): the staged file is what the commit links into place. */
  durable?: boolean;
}

/**
 * Streams source into a new staging file. The source is piped, never handed to the pipeline: a failure of
 * our own (a full disk, no descriptors) must not destroy the request, so the client still gets its 507 or
 * 503 instead of a reset, and such a failure is reported as what it is, never as a short body.
 */
export async function receiveToStaging(source: Readable, options: ReceiveOptions): Promise<StagedBytes> {
  let size = 0;
  const { onChunk } = options;
  const watch = intake({
    stallMs: options.stallMs ?? 0,
    onChunk: (chunk) => {
      size += chunk.length;
      onChunk?.(chunk);
    },
  });
  // durable: the data is fsynced before the pipeline ends, so a commit never links a file whose bytes are
  // still only in the page cache.
  const sink = fileSink(options.stagingPath, { flags: 'wx', mode: 0o600, durable: options.durable ?? true, highWaterMark: options.highWaterMark });
  let sinkError: unknown;
  sink.once('error', (err) => (sinkError ??= err));
  // The client hung up or timed out: the request ends without its last bytes.
  const stopSource = finished(source, { writable: false }, (err) => {
    if (err) watch.destroy(err);
  });
  source.pipe(watch);
  try {
    try {
      await pipeline([watch, ...(options.transforms ?? []), sink]);
    } catch (err) {
      if (sinkError !== undefined) throw sinkError as Error;
      // The client went away, stalled or was cut by a timeout before sending everything it announced.
      if (size < options.expectedSize) throw err instanceof HttpError ? err : httpError('E_INCOMPLETE', { cause: err });
      throw err;
    }
    if (size !== options.expectedSize) throw httpError('E_INCOMPLETE');
    return { stagingPath: options.stagingPath, size };
  } catch (err) {
    source.unpipe(watch);
    // A failure before the file was opened (a client gone at once) lets the open finish after the rm below:
    // remove the file again then.
    sink.once('open', () => void rm(options.stagingPath, { force: true }));
    await rm(options.stagingPath, { force: true });
    throw err;
  } finally {
    stopSource();
  }
}

/**
 * Removes staging files older than maxAgeMs: what a crash or a kill left behind. A live upload's staging file
 * is never that old, since ReadTimeout ends any request before.
 */
export async function sweepStaging(stagingDir: string, maxAgeMs: number, now = Date.now()): Promise<number> {
  let removed = 0;
  for (const name of await readdir(stagingDir).catch(() => [] as string[])) {
    const file = path.join(stagingDir, name);
    const info = await stat(file).catch(() => undefined);
    if (info?.isFile() && now - info.mtimeMs > maxAgeMs) {
      await rm(file, { force: true });
      removed += 1;
    }
  }
  return removed;
}
