import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { rawRequest } from './helpers/http.js';
import { runCli } from './helpers/cli.js';
import { startTestServer, TEST_SECRET, type TestServer } from './helpers/test-server.js';

describe('hmac-file-server sign', () => {
  let server: TestServer;
  let configFile: string;
  let dir: string | undefined;
  before(async () => {
    server = await startTestServer();
    dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-sign-'));
    configFile = path.join(dir, 'config.toml');
    await writeFile(configFile, `Secret = "${TEST_SECRET}"\nListenPort = "${new URL(server.url).port}"\n`);
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    await server?.close();
  });

  for (const protocol of ['v', 'v2', 'token']) {
    it(`prints a ${protocol} PUT URL that uploads with 201 and a GET URL that returns the bytes`, async () => {
      const body = randomBytes(1234);
      const name = `2c4f7a80-0000-4000-8000-00000000000${protocol.length}/my file ${protocol}.jpg`;
      const result = await runCli(['sign', '--config', configFile, '--path', name, '--size', String(body.length), '--type', 'image/jpeg', '--protocol', protocol]);
      assert.equal(result.code, 0, result.stderr);
      const [put, get] = result.stdout.trim().split('\n').map((line) => line.split(' ')[1]!);
      assert.ok(put!.startsWith(`${server.url}/upload/`), put);
      assert.ok(put!.includes(`?${protocol}=`));
      const putUrl = new URL(put!);
      const res = await rawRequest(server.url, 'PUT', putUrl.pathname + putUrl.search, { 'Content-Length': body.length, 'Content-Type': 'image/jpeg' }, body);
      assert.equal(res.status, 201, res.body.toString());
      const got = await rawRequest(server.url, 'GET', new URL(get!).pathname);
      assert.deepEqual(got.body, body);
    });
  }

  it('prints URLs on PublicURL when it is set', async () => {
    const withPublic = path.join(dir!, 'public.toml');
    await writeFile(withPublic, `Secret = "${TEST_SECRET}"\nListenPort = "${new URL(server.url).port}"\nPublicURL = "https://files.example.org/share/"\n`);
    const result = await runCli(['sign', '--config', withPublic, '--path', 'a/b.txt', '--size', '3']);
    assert.equal(result.code, 0, result.stderr);
    const [put, get] = result.stdout.trim().split('\n').map((line) => line.split(' ')[1]!);
    assert.ok(put!.startsWith('https://files.example.org/share/upload/a/b.txt?v'), put);
    assert.equal(get, 'https://files.example.org/share/upload/a/b.txt');
  });

  it('exits 2 when --path or --size is missing or the protocol is unknown', async () => {
    assert.equal((await runCli(['sign', '--config', configFile, '--size', '3'])).code, 2);
    assert.equal((await runCli(['sign', '--config', configFile, '--path', 'a/b', '--size', '3', '--protocol', 'v3'])).code, 2);
    assert.equal((await runCli(['sign', '--config', configFile, '--path', '../b', '--size', '3'])).code, 2);
  });
});
