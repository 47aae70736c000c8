// Deterministic upload bodies: any byte range of any payload can be produced again, so a download or a
// Range answer is checked byte for byte without keeping what was sent. Each 1 MiB block is one random block
// shared by all payloads, except its first 16 bytes: the payload id and the block number. So no two
// payloads (and no two blocks) are equal, and deduplication has nothing to merge between uploads.
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { MiB } from './stats.js';

const BLOCK = MiB;
const HEADER = 16;
let shared: Buffer | undefined;

function base(): Buffer {
  shared ??= randomBytes(BLOCK);
  return shared;
}

export class Payload {
  private sha: string | undefined;

  constructor(
    /** Unique per payload within a bench run. */
    readonly id: number,
    readonly size: number,
  ) {}

  /** Bytes start (inclusive) to end (exclusive). */
  bytes(start: number, end: number): Buffer {
    const out = Buffer.allocUnsafe(Math.max(0, end - start));
    const block = base();
    let at = start;
    while (at < end) {
      const index = Math.floor(at / BLOCK);
      const blockStart = index * BLOCK;
      const from = at - blockStart;
      const to = Math.min(end, blockStart + BLOCK) - blockStart;
      block.copy(out, at - start, from, to);
      if (from < HEADER) {
        const header = Buffer.alloc(HEADER);
        header.writeUInt32BE(Math.floor(this.id / 2 ** 32), 0);
        header.writeUInt32BE(this.id >>> 0, 4);
        header.writeUInt32BE(Math.floor(index / 2 ** 32), 8);
        header.writeUInt32BE(index >>> 0, 12);
        header.copy(out, at - start, from, Math.min(HEADER, to));
      }
      at = blockStart + to;
    }
    return out;
  }

  /** The bytes start..end (exclusive) as a stream of blocks, produced as the consumer reads. */
  stream(start = 0, end = this.size): Readable {
    let at = start;
    const readable: Readable = new Readable({
      read: () => {
        if (at >= end) return void readable.push(null);
        const next = Math.min(end, (Math.floor(at / BLOCK) + 1) * BLOCK);
        const chunk = this.bytes(at, next);
        at = next;
        readable.push(chunk);
      },
    });
    return readable;
  }

  /** SHA-256 (hex) of the whole payload; computed once, before any clock starts. */
  digest(): string {
    if (this.sha === undefined) {
      const hash = createHash('sha256');
      for (let at = 0; at < this.size; at += BLOCK) hash.update(this.bytes(at, Math.min(this.size, at + BLOCK)));
      this.sha = hash.digest('hex');
    }
    return this.sha;
  }
}

let nextId = 1;

/** A payload no other payload of this process shares. */
export function newPayload(size: number): Payload {
  return new Payload(nextId++, size);
}
