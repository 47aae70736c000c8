// A pass-through that fails when the client stops sending: a body that has not moved for stallMs is cut,
// so a long ReadTimeout (for big uploads) is no shelter for a slow-loris body. Time spent waiting for our
// own disk (bytes buffered downstream) is not the client's stall and does not count.
import { Transform } from 'node:stream';
import { httpError } from '../server/errors.js';

export function stallWatch(stallMs: number): Transform {
  let timer: NodeJS.Timeout | undefined;
  const watch: Transform = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      timer?.refresh();
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
      if (watch.writableLength > 0 || watch.readableLength > 0) return void timer?.refresh();
      watch.destroy(httpError('E_INCOMPLETE', { message: `Upload stalled: no data for ${Math.round(stallMs / 1000)} s` }));
    };
    timer = setTimeout(check, stallMs);
    timer.unref();
  }
  return watch;
}
