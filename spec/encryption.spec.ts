// Encryption at rest through both doors: round trips, what lies on disk, ranges, resumes, key changes, failures.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as tus from 'tus-js-client';
import type { ConfigInput } from '../server/config-schema.js';
import { runCli, type CliResult } from './helpers/cli.js';
import { rawRequest, signedPath, signedPut } from './helpers/http.js';
import { exchange, head } from './helpers/socket.js';
import { grantFor, tusUpload } from './helpers/tus-client.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

const SIZES = [0, 1, 15, 16, 17, 4095, 1024 * 1024 + 3];
const KEY_A = 'a'.repeat(64);
const KEY_B = 'b'.repeat(64);
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Text, so a leak would be long readable runs, not random noise matching by chance. */
function plaintext(size: number): Buffer {
  const line = Buffer.from('The quick brown fox jumps over the lazy dog. 0123456789 hmac-file-server at rest.\n');
  return Buffer.alloc(size, line);
}

/** True when any 64-byte run of plain (sampled every 8 bytes) appears anywhere in stored, or at its own offset. */
function leaks(stored: Buffer, plain: Buffer): boolean {
  for (let i = 0; i + 64 <= plain.length; i += i < 65_536 ? 8 : 4096) {
    const run = plain.subarray(i, i + 64);
    if (stored.subarray(i, i + 64).equals(run) || stored.indexOf(run) !== -1) return true;
  }
  return false;
}

async function storedFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

async function get(server: TestServer, url: string, headers: Record<string, string> = {}) {
  return rawRequest(server.url, 'GET', new URL(url, server.url).pathname, headers);
}

for (const [method, overrides] of [
  ['aes', { AESEnabled: true, AESKey: KEY_A }],
  ['xor', { XOREnabled: true, Method: 'xor' }],
] as Array<[string, Partial<ConfigInput>]>) {
  describe(`encryption at rest: ${method}`, function () {
    this.timeout(60_000);
    let server: TestServer;
    let grant: string;
    before(async () => {
      server = await startTestServer({ ...overrides, MaxUploadSize: '16MiB' });
      grant = await grantFor(server);
    });
    after(() => server.close());

    for (const size of SIZES) {
      it(`round-trips ${size} bytes through a legacy PUT and through tus, and stores no plaintext`, async () => {
        const data = plaintext(size);
        const slot = `${method}-${size}/file.txt`;
        assert.equal((await signedPut(server, slot, data)).status, 201);
        const legacy = await get(server, `/upload/${slot}`);
        assert.equal(sha256(legacy.body), sha256(data));
        const viaTus = await tusUpload(server, data, grant, { chunkSize: 64 * 1024 + 5, metadata: { filename: `${size}.txt` } });
        assert.equal(sha256((await get(server, viaTus.downloadUrl)).body), sha256(data));
        if (size >= 64) {
          const onDisk = await readFile(path.join(server.storeDir, 'upload', slot));
          assert.equal(onDisk.length, size);
          assert.ok(!leaks(onDisk, data), 'legacy file on disk holds plaintext');
          const tusFile = path.join(server.storeDir, 'upload', ...new URL(viaTus.downloadUrl).pathname.split('/').slice(2).map(decodeURIComponent));
          assert.ok(!leaks(await readFile(tusFile), data), 'tus file on disk holds plaintext');
        }
      });
    }

    it('keeps staging bytes encrypted too, for a legacy PUT and a tus upload in progress', async () => {
      const data = plaintext(256 * 1024);
      // A legacy PUT that has sent half its body: look at its staging file while it waits.
      const pending = exchange(server.url, [head('PUT', signedPath(server, 'staging/half.txt', data.length), { 'Content-Length': data.length }), data.subarray(0, 128 * 1024), 400], { end: true });
      await new Promise((r) => setTimeout(r, 200));
      const [part] = await storedFiles(path.join(server.storeDir, '.hmac', 'staging'));
      assert.ok(part, 'no staging file while the PUT is running');
      const staged = await readFile(part);
      assert.ok(staged.length > 0 && !leaks(staged, data.subarray(0, staged.length)));
      await pending;
      // A tus upload left half done.
      const headers = { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${grant}` };
      const created = await rawRequest(server.url, 'POST', '/files/', { ...headers, 'Upload-Length': data.length, 'Upload-Metadata': `filename ${Buffer.from('half.txt').toString('base64')}`, 'Content-Type': 'application/offset+octet-stream' }, data.subarray(0, 100_000));
      assert.equal(created.headers['upload-offset'], '100000');
      const id = String(created.headers.location).split('/').pop()!;
      const tusStaged = await readFile(path.join(server.storeDir, '.hmac', 'tus', id));
      assert.equal(tusStaged.length, 100_000);
      assert.ok(!leaks(tusStaged, data.subarray(0, 100_000)));
    });

    it('serves odd and suffix ranges as exactly the plaintext slice', async () => {
      const data = randomBytes(100_003);
      assert.equal((await signedPut(server, 'ranges/r.bin', data)).status, 201);
      const cases: Array<[string, number, number]> = [
        ['bytes=17-4000', 17, 4000],
        ['bytes=4095-4095', 4095, 4095],
        ['bytes=1-15', 1, 15],
        ['bytes=99999-', 99_999, 100_002],
        ['bytes=-33', 100_003 - 33, 100_002],
        ['bytes=65531-65551', 65_531, 65_551],
      ];
      for (const [range, start, end] of cases) {
        const res = await get(server, '/upload/ranges/r.bin', { Range: range });
        assert.equal(res.status, 206, range);
        assert.deepEqual(res.body, data.subarray(start, end + 1), range);
      }
    });

    it('joins encrypted partials of a parallel tus upload into one file', async () => {
      const data = randomBytes(500_001);
      const { downloadUrl } = await tusUpload(server, data, grant, { parallelUploads: 3, metadata: { filename: 'parallel.bin' } });
      assert.equal(sha256((await get(server, downloadUrl)).body), sha256(data));
    });

    it(`says at start-up whether ${method} is real encryption`, () => {
      const weak = server.logs.some((l) => l.includes('warn encryption.weak'));
      assert.equal(weak, method === 'xor');
      assert.ok(server.logs.some((l) => new RegExp(`server\\.listening .*encryption=${method}-[0-9a-f]{16}`).test(l)));
    });

    it('resumes a tus upload interrupted at chunk boundaries that are not multiples of 16', async () => {
      const data = randomBytes(300_000);
      const url = await new Promise<string>((resolve, reject) => {
        const upload: tus.Upload = new tus.Upload(data, {
          endpoint: `${server.url}/files/`,
          headers: { Authorization: `Bearer ${grant}` },
          metadata: { filename: 'odd.bin' },
          chunkSize: 10_007,
          retryDelays: [],
          onError: reject,
          onChunkComplete: (_chunk, accepted) => {
            if (accepted >= 150_000) void upload.abort().then(() => resolve(upload.url!));
          },
        });
        upload.start();
      });
      const { downloadUrl } = await tusUpload(server, data, grant, { uploadUrl: url, chunkSize: 7_777 });
      assert.equal(sha256((await get(server, downloadUrl)).body), sha256(data));
    });
  });
}

describe('encryption switched on, off and rotated over one store', function () {
  this.timeout(60_000);
  let storeDir: string;
  const files = new Map<string, Buffer>();
  before(async () => {
    storeDir = await mkdtemp(path.join(os.tmpdir(), 'hfs-rotate-'));
  });
  after(() => rm(storeDir, { recursive: true, force: true }));

  const phases: Array<[string, Partial<ConfigInput>]> = [
    ['plain', {}],
    ['aes-a', { AESEnabled: true, AESKey: KEY_A }],
    ['aes-b', { AESEnabled: true, AESKey: KEY_B, PreviousAESKeys: [KEY_A] }],
    ['xor', { XOREnabled: true, Method: 'xor', AESKey: KEY_B, PreviousAESKeys: [KEY_A] }],
    ['off', { AESKey: KEY_B, PreviousAESKeys: [KEY_A] }],
  ];
  for (const [phase, overrides] of phases) {
    it(`${phase}: uploads a file and every earlier file still downloads correctly`, async () => {
      const server = await startTestServer({ ...overrides, StoreDir: storeDir });
      try {
        const data = randomBytes(5000 + files.size);
        assert.equal((await signedPut(server, `rotate/${phase}.bin`, data)).status, 201);
        files.set(phase, data);
        for (const [name, bytes] of files) {
          const res = await rawRequest(server.url, 'GET', `/upload/rotate/${name}.bin`);
          assert.equal(res.status, 200, `${name} under ${phase}`);
          assert.deepEqual(res.body, bytes, `${name} under ${phase}`);
        }
      } finally {
        await server.close();
      }
    });
  }

  it('answers 500 with a clear log line for a file whose key is gone', async () => {
    const server = await startTestServer({ AESEnabled: true, AESKey: KEY_B, StoreDir: storeDir });
    try {
      const res = await rawRequest(server.url, 'GET', '/upload/rotate/aes-a.bin');
      assert.equal(res.status, 500);
      assert.equal(res.body.toString(), 'Stored file cannot be decrypted\n');
      const line = await server.waitForLog(/request\.failed code=E_KEY_UNKNOWN/);
      assert.match(line ?? '', /written with key aes-[0-9a-f]{16}, which is not configured/);
    } finally {
      await server.close();
    }
  });
});

describe('damaged encrypted files', () => {
  let server: TestServer;
  const data = randomBytes(50_000);
  before(async () => {
    server = await startTestServer({ AESEnabled: true });
    assert.equal((await signedPut(server, 'damaged/flipped.bin', data)).status, 201);
    assert.equal((await signedPut(server, 'damaged/short.bin', data)).status, 201);
  });
  after(() => server.close());

  it('refuses a file whose size no longer matches its record', async () => {
    await truncate(path.join(server.storeDir, 'upload', 'damaged', 'short.bin'), 40_000);
    const res = await rawRequest(server.url, 'GET', '/upload/damaged/short.bin');
    assert.equal(res.status, 500);
    assert.equal(res.body.toString(), 'Stored file is damaged\n');
  });

  it('cuts off a whole-file download whose bytes no longer match the recorded digest', async () => {
    const file = await open(path.join(server.storeDir, 'upload', 'damaged', 'flipped.bin'), 'r+');
    // Flip every bit of one byte, so the file really changes whatever the byte was.
    const byte = Buffer.alloc(1);
    await file.read(byte, 0, 1, 30_000);
    await file.write(Buffer.from([byte[0]! ^ 0xff]), 0, 1, 30_000);
    await file.close();
    const answer = await exchange(server.url, [head('GET', '/upload/damaged/flipped.bin')]);
    // Headers and most bytes went out before the end of the file was hashed: the transfer is cut short.
    const body = Buffer.from(answer.slice(answer.indexOf('\r\n\r\n') + 4), 'latin1');
    assert.ok(body.length < data.length, `${body.length} bytes arrived`);
    assert.ok(await server.waitForLog(/request\.failed code=E_INTEGRITY .*sha256 [0-9a-f]{64} does not match/));
    // A range that does not cover the damage is still served.
    const res = await rawRequest(server.url, 'GET', '/upload/damaged/flipped.bin', { Range: 'bytes=0-999' });
    assert.deepEqual(res.body, data.subarray(0, 1000));
  });
});

describe('encryption keys in config.toml', () => {
  for (const [key, value, message] of [
    ['AESKey', 'abc', /AESKey = "abc": expected 64 hex characters .*not hex/],
    ['AESKey', 'ab'.repeat(16), /AESKey = "a[ab]+": expected 64 hex characters \(a 32-byte key\), not 16 bytes/],
    ['XORKey', 'zz'.repeat(32), /XORKey = "z+": expected 64 hex characters .*not hex/],
    ['PreviousAESKeys', ['12'], /PreviousAESKeys\[0\] = "12": expected 64 hex characters/],
  ] as Array<[string, string | string[], RegExp]>) {
    it(`stops start-up with exit 2 for ${key} = ${JSON.stringify(value).slice(0, 20)}`, async () => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-keys-'));
      let result: CliResult;
      try {
        await writeFile(path.join(dir, 'config.toml'), `Secret = "s"\nAESEnabled = true\n${key} = ${JSON.stringify(value)}\n`);
        result = await runCli(['--config', path.join(dir, 'config.toml'), '--validate-config']);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
      assert.equal(result.code, 2);
      assert.match(result.stderr, message);
    });
  }
});
