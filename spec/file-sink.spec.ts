// The file sink of upload bodies: bytes land at their offsets, a finished sink has closed its file, and the
// write buffer shrinks as more uploads arrive at once.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileSink, writeBufferFor } from '../stores/file-sink.js';

const KiB = 1024;
const MiB = 1024 * KiB;

describe('file sink', () => {
  let dir: string;
  before(async () => (dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-sink-'))));
  after(() => rm(dir, { recursive: true, force: true }));

  it('writes a new file in order, many chunks batched, and refuses one that exists', async () => {
    const chunks = Array.from({ length: 300 }, () => randomBytes(7 * KiB + 3));
    const file = path.join(dir, 'new.part');
    await pipeline(Readable.from(chunks), fileSink(file, { flags: 'wx', durable: true, highWaterMark: 64 * KiB }));
    assert.deepEqual(await readFile(file), Buffer.concat(chunks));
    await assert.rejects(pipeline(Readable.from([Buffer.from('x')]), fileSink(file, { flags: 'wx', durable: true })), { code: 'EEXIST' });
    assert.deepEqual(await readFile(file), Buffer.concat(chunks), 'the existing file is untouched');
  });

  it('continues an existing file at its offset (tus)', async () => {
    const file = path.join(dir, 'resume.part');
    await writeFile(file, 'hello ');
    await pipeline(Readable.from([Buffer.from('wor'), Buffer.from('ld')]), fileSink(file, { flags: 'r+', start: 6, durable: false }));
    assert.equal(await readFile(file, 'utf8'), 'hello world');
  });

  it('gives each upload less buffer when many arrive at once, within bounds', () => {
    assert.equal(writeBufferFor(MiB, 1), MiB);
    assert.equal(writeBufferFor(MiB, 16), MiB);
    assert.equal(writeBufferFor(MiB, 64), 256 * KiB);
    assert.equal(writeBufferFor(MiB, 10_000), 64 * KiB);
    assert.equal(writeBufferFor(16 * KiB, 10_000), 16 * KiB, 'never more than ChunkSize');
    assert.equal(writeBufferFor(8 * MiB, 0), 8 * MiB);
  });
});
