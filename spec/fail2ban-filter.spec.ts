// The shipped fail2ban filter must match exactly the auth.failed lines the server writes, with the right IP.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ensureDebianPackages } from './helpers/debian-packages.js';
import { rawRequest, signedPut } from './helpers/http.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

const run = promisify(execFile);
const FILTER = path.resolve(import.meta.dirname, '../fail2ban/filter.d/hmac-auth.conf');

describe('fail2ban filter', function () {
  this.timeout(300_000);
  let server: TestServer;
  let dir: string;
  before(async () => {
    await ensureDebianPackages({ 'fail2ban-regex': 'fail2ban' });
    dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-f2b-'));
    // A proxy on loopback forwards for 198.51.100.23: the ban must name that client, not the proxy.
    server = await startTestServer({ TrustedProxies: ['127.0.0.0/8'] });
  });
  after(async () => {
    // The folder first: a before() that failed early leaves no server to close.
    if (dir) await rm(dir, { recursive: true, force: true });
    await server?.close();
  });

  it('matches every auth failure with the forwarded client IP and nothing else', async () => {
    const forwarded = { 'X-Forwarded-For': '198.51.100.23' };
    await rawRequest(server.url, 'PUT', `/upload/a/b.txt?v=${'0'.repeat(64)}`, { 'Content-Length': 1, ...forwarded }, Buffer.from('x'));
    await rawRequest(server.url, 'PUT', '/upload/a/c.txt', { 'Content-Length': 1, ...forwarded }, Buffer.from('x'));
    await rawRequest(server.url, 'DELETE', `/upload/a/b.txt?token=${'1'.repeat(64)}`, forwarded);
    // Successful and merely missing requests must not count.
    assert.equal((await signedPut(server, 'a/ok.txt', Buffer.from('fine'))).status, 201);
    await rawRequest(server.url, 'GET', '/upload/a/missing.txt', forwarded);

    // What the scan stage writes for an infected upload (the scanner itself is tested with clamd).
    const infected = `${new Date().toISOString()} warn scan.infected client=203.0.113.50 signature=Eicar-Test-Body.UNOFFICIAL path=a/eicar.txt`;
    const log = path.join(dir, 'hmac.log');
    await writeFile(log, `${[...server.logs, infected].join('\n')}\n`);
    const { stdout } = await run('fail2ban-regex', ['--print-all-matched', log, FILTER]);
    // DELETE is refused with 405 here (no DeleteSecret) before any token check, so two failures count.
    assert.match(stdout, /Failregex: 3 total/);
    const matchedIps = [...stdout.matchAll(/Z warn (?:auth\.failed|scan\.infected) client=(\S+) /g)].map((m) => m[1]);
    assert.deepEqual(matchedIps, ['198.51.100.23', '198.51.100.23', '203.0.113.50']);
  });
});
