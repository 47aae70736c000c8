// Where an upload body's bytes go: a file, written in batches (writev) at explicit offsets. Durability
// without a long wait at the end: a file written for 1 GiB and fsynced once would make the client wait for
// the whole GiB to reach the disk after its last byte; instead the written bytes are handed to the disk every
// SYNC_EVERY while more arrive (one fdatasync at a time, never holding up the writes), so the final fsync
// has only the tail left. A failed sync fails the stream like a failed write: the bytes are not safe.
import fs from 'node:fs';
import { open } from 'node:fs/promises';
import { Writable } from 'node:stream';

const SYNC_EVERY = 32 * 1024 * 1024;

/** What all upload write buffers together should stay near when many bodies arrive at once. */
const WRITE_BUDGET = 16 * 1024 * 1024;
const SMALLEST_BUFFER = 64 * 1024;

/**
 * The write buffer of one upload: ChunkSize while few uploads arrive, less each when many do, so memory
 * does not grow with ChunkSize times the number of bodies being received (never below 64 KiB, one socket read).
 */
export function writeBufferFor(chunkSize: number, activeUploads: number): number {
  return Math.max(Math.min(SMALLEST_BUFFER, chunkSize), Math.min(chunkSize, Math.floor(WRITE_BUDGET / Math.max(1, activeUploads))));
}

export interface FileSinkOptions {
  /** "wx": a new staging file (exclusive); "r+": an existing file continued at start (tus). */
  flags: 'wx' | 'r+';
  start?: number;
  mode?: number;
  /** Bytes buffered while a write is under way before the source is paused. */
  highWaterMark?: number;
  /** fsync before the stream finishes, so 'finish' means the bytes (and the size) are on disk. */
  durable: boolean;
}

function writeAll(fd: number, buffers: Buffer[], position: number, callback: (err: Error | null, written: number) => void, done = 0): void {
  fs.writev(fd, buffers, position, (err, written) => {
    if (err) return callback(err, done);
    const total = buffers.reduce((sum, b) => sum + b.length, 0);
    if (written >= total) return callback(null, done + written);
    // Nothing written and no error: never retry forever on a file that takes no bytes.
    if (written === 0) return callback(Object.assign(new Error('write took no bytes'), { code: 'ENOSPC' }), done);
    // A short write (a disk filling up): the rest goes again, and the next write reports the error.
    let skip = written;
    const rest: Buffer[] = [];
    for (const b of buffers) {
      if (skip >= b.length) skip -= b.length;
      else {
        rest.push(skip > 0 ? b.subarray(skip) : b);
        skip = 0;
      }
    }
    writeAll(fd, rest, position + written, callback, done + written);
  });
}

export function fileSink(filePath: string, options: FileSinkOptions): Writable {
  let fd: number | undefined;
  let position = options.start ?? 0;
  let unsynced = 0;
  let syncing: Promise<void> | undefined;
  let syncError: Error | undefined;

  const sync = (descriptor: number, data: boolean) =>
    new Promise<void>((resolve) => {
      const done = (err: Error | null) => {
        if (err) syncError ??= err;
        resolve();
      };
      if (data) fs.fdatasync(descriptor, done);
      else fs.fsync(descriptor, done);
    });

  const sink: Writable = new Writable({
    highWaterMark: options.highWaterMark,
    construct(callback) {
      fs.open(filePath, options.flags, options.mode ?? 0o600, (err, opened) => {
        if (err) return callback(err);
        fd = opened;
        // Like fs.WriteStream: whoever must undo a creation learns that the file now exists.
        sink.emit('open', opened);
        callback();
      });
    },
    writev(chunks, callback) {
      if (syncError) return callback(syncError);
      writeAll(
        fd!,
        chunks.map((c) => c.chunk as Buffer),
        position,
        (err, written) => {
          position += written;
          if (err) return callback(err);
          unsynced += written;
          if (unsynced >= SYNC_EVERY && !syncing) {
            unsynced = 0;
            syncing = sync(fd!, true).finally(() => (syncing = undefined));
          }
          callback();
        },
      );
    },
    final(callback) {
      void (async () => {
        await syncing;
        if (options.durable && !syncError) await sync(fd!, false);
        callback(syncError ?? null);
      })();
    },
    destroy(err, callback) {
      if (fd === undefined) return callback(err);
      const descriptor = fd;
      fd = undefined;
      // A sync still under way keeps using the descriptor: close after it.
      void Promise.resolve(syncing).then(() => fs.close(descriptor, () => callback(err)));
    },
  });
  return sink;
}

/** Makes what was written to a file without durable (a tus upload, PATCH by PATCH) safe on disk. */
export async function syncFile(filePath: string): Promise<void> {
  const handle = await open(filePath, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
