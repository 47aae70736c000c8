// Security invariant: no request reads or writes outside StoreDir (README, "Threat model").
import assert from 'node:assert/strict';
import { mkdir, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { signSlot } from '../middleware/slot-verifier-hmac.js';
import { rawRequest } from './helpers/http.js';
import { startTestServer, TEST_SECRET, type TestServer } from './helpers/test-server.js';

describe('path traversal and hostile names', () => {
  let server: TestServer;
  let outside: string;
  before(async () => {
    server = await startTestServer();
    outside = path.join(server.storeDir, '..', `${path.basename(server.storeDir)}-outside`);
    await mkdir(outside, { recursive: true });
    await writeFile(path.join(outside, 'secret.txt'), 'not yours');
  });
  after(async () => {
    await server.close();
    await rm(outside, { recursive: true, force: true });
  });

  // Raw paths as they reach the server; "decoded" is what a MAC would have to be made over.
  const attempts: Array<[string, string]> = [
    ['/upload/../config.toml', '../config.toml'],
    ['/upload/a/../../etc/passwd', 'a/../../etc/passwd'],
    ['/upload/%2e%2e/%2e%2e/etc/passwd', '../../etc/passwd'],
    ['/upload/a%2f..%2f..%2fetc%2fpasswd', 'a/../../etc/passwd'],
    ['/upload/%2fetc%2fpasswd', '/etc/passwd'],
    ['/upload//etc/passwd', '/etc/passwd'],
    ['/upload/a\\..\\..\\etc\\passwd', 'a\\..\\..\\etc\\passwd'],
    ['/upload/a/%5c..%5c..%5cetc', 'a/\\..\\..\\etc'],
    ['/upload/a/file%00.txt', 'a/file\0.txt'],
    ['/upload/a/./b.txt', 'a/./b.txt'],
    ['/upload/a/%E0%A4%A', 'a/bad-escape'],
    [`/upload/a/${'x'.repeat(300)}.txt`, `a/${'x'.repeat(300)}.txt`],
  ];

  for (const [raw, decoded] of attempts) {
    it(`refuses ${raw.length > 60 ? `${raw.slice(0, 40)}… (${raw.length} bytes)` : raw} with 400 for PUT and no file for GET`, async () => {
      const body = Buffer.from('pwned');
      const mac = signSlot(TEST_SECRET, 'v', decoded, body.length, '');
      const put = await rawRequest(server.url, 'PUT', `${raw}?v=${mac}`, { 'Content-Length': body.length }, body);
      assert.equal(put.status, 400, put.body.toString());
      const get = await rawRequest(server.url, 'GET', raw);
      assert.ok(get.status === 400 || get.status === 404, `GET ${get.status}`);
      assert.notEqual(get.body.toString(), 'not yours');
    });
  }

  it('refuses to serve or write through a symlink planted inside the store', async () => {
    await symlink(outside, path.join(server.storeDir, 'upload', 'link'));
    const get = await rawRequest(server.url, 'GET', '/upload/link/secret.txt');
    assert.equal(get.status, 404);
    const body = Buffer.from('pwned');
    const mac = signSlot(TEST_SECRET, 'v', 'link/new.txt', body.length, '');
    const put = await rawRequest(server.url, 'PUT', `/upload/link/new.txt?v=${mac}`, { 'Content-Length': body.length }, body);
    assert.equal(put.status, 400);
    assert.deepEqual((await readdir(outside)).sort(), ['secret.txt']);
  });

  it('leaves nothing outside the store after all attempts', async () => {
    assert.deepEqual(await readdir(outside), ['secret.txt']);
    assert.ok(!(await readdir(os.tmpdir())).includes('passwd'));
  });
});
