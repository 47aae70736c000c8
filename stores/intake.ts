// The first stage of every upload body: one pass-through that shows each chunk to the caller (counting,
// hashing) and cuts a body that stops moving. One stage instead of one per concern, because every stage a
// chunk passes costs a few microseconds, and a 1 GiB body is 16,384 chunks.
//
// The stall rule: a body that has not moved for stallMs is cut, so a long ReadTimeout (for big uploads) is no
// shelter for a slow-loris body. Time spent waiting for our own disk (bytes buffered downstream) is not the
// client's stall and does not count.
import { Transform } from 'node:stream';
import { httpError } from '../server/errors.js';

export interface IntakeOptions {
  /** UploadStallTimeout in ms; 0 never cuts. */
  stallMs: number;
  onChunk?: (chunk: Buffer) => void;
}

export function intake({ stallMs, onChunk }: IntakeOptions): Transform {
  let timer: NodeJS.Timeout | undefined;
  const stage: Transform = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      timer?.refresh();
      onChunk?.(chunk);
      callback(null, chunk);
    },
    flush(callback) {
      clearTimeout(timer);
      callback();
    },
    destroy(err, callback) {
      clearTimeout(timer);
      callback(err);
    },
  });
  if (stallMs > 0) {
    const check = () => {
      // Backpressure: the bytes are here and wait for the disk; the client is not the one stalling.
      if (stage.writableLength > 0 || stage.readableLength > 0) return void timer?.refresh();
      stage.destroy(httpError('E_INCOMPLETE', { message: `Upload stalled: no data for ${Math.round(stallMs / 1000)} s` }));
    };
    timer = setTimeout(check, stallMs);
    timer.unref();
  }
  return stage;
}
