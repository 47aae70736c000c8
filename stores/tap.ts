// A pass-through stream that shows every chunk to a callback (counting, hashing) on its way.
import { Transform } from 'node:stream';

export function tap(onChunk: (chunk: Buffer) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      onChunk(chunk);
      callback(null, chunk);
    },
  });
}
