// `hmac-file-server upload`: the real command line against a real server; every upload checked by the sha256
// of what GET returns.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { MAIN, runCli } from './helpers/cli.js';
import { grantFor } from './helpers/tus-client.js';
import { startTestServer, TEST_SECRET, type TestServer } from './helpers/test-server.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface Finished {
  file: string;
  url: string;
  size: number;
  sha256: string;
  resumedAt: number;
}

describe('hmac-file-server upload', function () {
  this.timeout(120_000);
  let server: TestServer;
  let dir: string;
  let grant: string;
  let stateFile: string;
  const endpoint = () => `${server.url}/files/`;
  const fileOf = async (name: string, data: Buffer) => {
    const file = path.join(dir, name);
    await writeFile(file, data);
    return file;
  };
  const served = async (url: string) => Buffer.from(await (await fetch(url)).arrayBuffer());

  before(async () => {
    server = await startTestServer({ MaxUploadSize: '128MiB' });
    dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-cli-upload-'));
    grant = await grantFor(server, { subject: 'alice', maxSize: 128 * 1024 * 1024 });
    stateFile = path.join(dir, 'state', 'uploads.json');
  });
  after(async () => {
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('uploads files, prints their download URLs, and with --json one object per file', async () => {
    const one = randomBytes(300_000);
    const two = randomBytes(1);
    const files = [await fileOf('one.bin', one), await fileOf('two words.txt', two)];
    const plain = await runCli(['upload', ...files, '--url', endpoint(), '--grant', grant, '--state-file', stateFile]);
    assert.equal(plain.code, 0, plain.stderr);
    const urls = plain.stdout.trim().split('\n');
    assert.equal(urls.length, 2);
    assert.match(urls[1]!, /\/upload\/[0-9a-f]{32}\/two%20words\.txt$/);
    assert.equal(sha256(await served(urls[0]!)), sha256(one));
    // Not a terminal: plain progress lines on stderr.
    assert.match(plain.stderr, /^one\.bin: 100% \(0\.3 MiB of 0\.3 MiB\)$/m);
    const json = await runCli(['upload', files[0]!, '--url', endpoint(), '--grant', grant, '--json', '--state-file', stateFile]);
    assert.equal(json.code, 0, json.stderr);
    const finished = JSON.parse(json.stdout) as Finished;
    assert.equal(finished.size, one.length);
    assert.equal(finished.sha256, sha256(one));
    assert.equal(sha256(await served(finished.url)), finished.sha256);
  });

  /** Runs an upload and sends it signal once its progress passed a fifth; its exit code, signal and stderr. */
  const interrupt = (args: string[], name: string, signal: NodeJS.Signals) =>
    new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      let sent = false;
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        // --json keeps stdout for results; progress lines go to stderr.
        if (!sent && new RegExp(`${name}: ([2-9]\\d)%`).test(stderr)) sent = child.kill(signal);
      });
      child.on('error', reject);
      child.on('close', (code, got) => resolve(`${code} ${got} ${stderr}`));
    });

  for (const [signal, expected] of [
    ['SIGKILL', /^null SIGKILL/],
    ['SIGINT', /^1 null [^]*interrupted: run the same command again to resume\n$/],
  ] as const) {
    it(`resumes a 50 MB upload stopped mid-way (${signal}) from the server offset when run again`, async () => {
      const data = randomBytes(50 * 1024 * 1024);
      const name = `big-${signal}.bin`;
      const args = ['upload', await fileOf(name, data), '--url', endpoint(), '--grant', grant, '--chunk-size', '1MiB', '--json', '--state-file', stateFile];
      const stopped = await interrupt(args, name, signal);
      assert.match(stopped, expected, `the first run did not stop as it should: ${stopped}`);
      const again = await runCli(args);
      assert.equal(again.code, 0, again.stderr);
      const finished = JSON.parse(again.stdout) as Finished;
      assert.ok(finished.resumedAt > 0, `resumed at ${finished.resumedAt}, not from zero`);
      assert.equal(sha256(await served(finished.url)), sha256(data));
    });
  }

  it('uploads with --parallel 4 (concatenation)', async () => {
    const data = randomBytes(5 * 1024 * 1024 + 3);
    const res = await runCli(['upload', await fileOf('parallel.bin', data), '--url', endpoint(), '--grant', grant, '--parallel', '4', '--state-file', stateFile]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(sha256(await served(res.stdout.trim())), sha256(data));
  });

  it('exits 1 with the server reason when an upload is refused, and goes on with the next file', async () => {
    const small = await grantFor(server, { subject: 'alice', maxSize: 10 });
    const files = [await fileOf('too-big.bin', randomBytes(11)), await fileOf('fits.bin', randomBytes(10))];
    const res = await runCli(['upload', ...files, '--url', endpoint(), '--grant', small, '--state-file', stateFile]);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /^.*too-big\.bin: 413 Maximum size exceeded$/m);
    assert.equal(res.stdout.trim().split('\n').length, 1, 'the file that fits was uploaded');
    const expired = await grantFor(server, { subject: 'alice', ttlSeconds: -60 });
    const refused = await runCli(['upload', files[1]!, '--url', endpoint(), '--grant', expired, '--state-file', stateFile]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /fits\.bin: 401 /);
  });

  it('makes its own grant from --config, and exits 2 on a usage error', async () => {
    const config = path.join(dir, 'config.toml');
    await writeFile(config, `Secret = "${TEST_SECRET}"\nListenPort = "${new URL(server.url).port}"\n`);
    const data = randomBytes(1000);
    const res = await runCli(['upload', await fileOf('configured.bin', data), '--config', config, '--state-file', stateFile]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(sha256(await served(res.stdout.trim())), sha256(data));
    for (const args of [['upload'], ['upload', 'x.bin'], ['upload', 'x.bin', '--url', endpoint(), '--grant', grant, '--parallel', '0']]) {
      const usage = await runCli(args);
      assert.equal(usage.code, 2, args.join(' '));
      assert.match(usage.stderr, /Usage:/);
    }
  });

  it('draws a progress bar with speed and ETA on a terminal', async () => {
    const file = await fileOf('tty.bin', randomBytes(2 * 1024 * 1024));
    const command = [process.execPath, '--import', 'tsx', MAIN, 'upload', file, '--url', endpoint(), '--grant', grant, '--state-file', stateFile].map((a) => `'${a}'`).join(' ');
    // script(1) runs the command under a pseudo-terminal.
    const { stdout } = await promisify(execFile)('script', ['-qfec', command, '/dev/null'], { cwd: path.resolve(import.meta.dirname, '..') });
    assert.match(stdout, /tty\.bin \|[█░]+\| 100% 2\.0 MiB of 2\.0 MiB \| [\d.]+ MiB\/s \| ETA /);
    assert.match(stdout, /\/upload\/[0-9a-f]{32}\/tty\.bin/);
  });
});
