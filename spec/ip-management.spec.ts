// IP management: AllowedIPs and BlockedIPs at the door (v4, v6, IPv4-mapped, block over allow), a forwarded
// address believed only from a trusted proxy, and the lists re-read on IPCheckInterval and on SIGHUP with a
// broken file leaving the lists in force.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { freePort } from './helpers/local-daemon.js';
import os from 'node:os';
import path from 'node:path';
import { rawRequest, signedPath, signedPut } from './helpers/http.js';
import { startChildServer, toml, type ChildServer } from './helpers/child-server.js';
import { startTestServer, TEST_SECRET, type TestServer } from './helpers/test-server.js';

const LISTS = {
  EnableIPManagement: true,
  // 127.0.0.1 is the trusted proxy; the other loopback addresses are clients of their own.
  TrustedProxies: ['127.0.0.1/32'],
  AllowedIPs: ['127.0.0.0/24', '2001:db8:1::/48'],
  BlockedIPs: ['127.0.0.7', '127.0.0.64/26', '2001:db8:1:bad::/64'],
};

const from = (server: { url: string }, localAddress: string, headers: Record<string, string> = {}) => rawRequest(server.url, 'GET', '/upload/ip/file.txt', headers, undefined, { localAddress });
const via = (server: { url: string }, forwarded: string) => from(server, '127.0.0.1', { 'X-Forwarded-For': forwarded });

async function eventually(check: () => Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('IP management', () => {
  describe('the lists at the door', () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer(LISTS);
      assert.equal((await signedPut(server, 'ip/file.txt', Buffer.from('listed'))).status, 201);
    });
    after(() => server.close());

    const cases: Array<[string, string, number]> = [
      ['an allowed IPv4 address', '127.0.0.2', 200],
      ['a blocked address inside the allowed range (block wins)', '127.0.0.7', 403],
      ['an address in a blocked subnet', '127.0.0.70', 403],
      ['an address outside every allowed range', '127.0.1.5', 403],
    ];
    for (const [what, address, status] of cases) {
      it(`answers ${status} to ${what} (${address})`, async () => {
        const res = await from(server, address);
        assert.equal(res.status, status);
        if (status === 403) {
          assert.equal(res.body.toString(), 'Your address is not allowed to use this server\n');
          assert.ok(await server.waitForLog(new RegExp(`warn auth\\.failed client=${address.replace(/\./g, '\\.')} reason=ip_(blocked|not_allowed) `)));
        }
      });
    }

    const forwarded: Array<[string, string, number]> = [
      ['an allowed IPv6 client', '2001:db8:1::5', 200],
      ['a blocked IPv6 client', '2001:db8:1:bad::9', 403],
      ['an IPv6 client outside the allowed ranges', '2001:db8:2::1', 403],
      ['an IPv4-mapped IPv6 client judged by the IPv4 lists', '::ffff:127.0.0.7', 403],
      ['an IPv4-mapped IPv6 client in an allowed IPv4 range', '::ffff:127.0.0.3', 200],
    ];
    for (const [what, address, status] of forwarded) {
      it(`answers ${status} to ${what} behind the trusted proxy (${address})`, async () => {
        assert.equal((await via(server, address)).status, status);
      });
    }

    it('never refuses the trusted proxy itself, nor 127.0.0.1 speaking for itself', async () => {
      assert.equal((await from(server, '127.0.0.1')).status, 200);
    });

    it('does not believe X-Forwarded-For from an untrusted peer, either way', async () => {
      // A blocked client cannot get in by claiming an allowed address…
      assert.equal((await from(server, '127.0.0.7', { 'X-Forwarded-For': '127.0.0.2' })).status, 403);
      // …and an allowed one cannot get another address refused.
      const before = server.logs.length;
      assert.equal((await from(server, '127.0.0.3', { 'X-Forwarded-For': '127.0.0.7' })).status, 200);
      const line = server.logs.slice(before).find((l) => l.includes('http.request'));
      assert.match(line ?? '', / client=127\.0\.0\.3$/);
    });

    it('ignores a malformed forwarded value from a trusted peer: the peer is the client, and is logged as such', async () => {
      const res = await via(server, 'not-an-address');
      assert.equal(res.status, 200);
      assert.ok(await server.waitForLog(/http\.request method=GET path=\/upload\/ip\/file\.txt status=200 .* client=127\.0\.0\.1$/));
      assert.ok(!server.logs.some((l) => l.includes('client=not-an-address')));
    });

    it('refuses before any other work: a blocked client gets 403 even with a valid signature', async () => {
      const put = await rawRequest(server.url, 'PUT', signedPath(server, 'ip/x.txt', 1), { 'Content-Length': 1 }, Buffer.from('x'), { localAddress: '127.0.0.7' });
      assert.equal(put.status, 403);
      assert.equal(put.body.toString(), 'Your address is not allowed to use this server\n');
      assert.ok(server.running.guards.counters.ipFilter.blocked >= 1);
    });
  });

  describe('reloading the lists', () => {
    let dir: string;
    let configFile: string;
    let server: TestServer;
    const write = (lists: { AllowedIPs: string[]; BlockedIPs: string[] }, extra = '') =>
      writeFile(configFile, toml({ Secret: TEST_SECRET, ...lists }) + extra);

    before(async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-iplists-'));
      configFile = path.join(dir, 'config.toml');
      await write({ AllowedIPs: LISTS.AllowedIPs, BlockedIPs: [] });
      server = await startTestServer({ ...LISTS, BlockedIPs: [], IPCheckInterval: '200ms' }, { configFile });
      assert.equal((await signedPut(server, 'ip/file.txt', Buffer.from('listed'))).status, 201);
    });
    after(async () => {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    });

    it('takes new lists from the file on the next IPCheckInterval', async () => {
      assert.equal((await from(server, '127.0.0.20')).status, 200);
      await write({ AllowedIPs: LISTS.AllowedIPs, BlockedIPs: ['127.0.0.20'] });
      await eventually(async () => (await from(server, '127.0.0.20')).status === 403, '127.0.0.20 blocked after the reload');
      assert.equal((await from(server, '127.0.0.21')).status, 200);
    });

    it('keeps the lists in force when the file no longer validates, and says so', async () => {
      await writeFile(configFile, `${toml({ Secret: TEST_SECRET, BlockedIPs: ['127.0.0.20'] })}AllowedIPs = ["not-a-cidr"]\n`);
      assert.equal(await server.running.guards.reloadLists(), false);
      assert.ok(await server.waitForLog(/error ip_lists\.reload_failed .*AllowedIPs\[0\]/));
      await new Promise((r) => setTimeout(r, 400));
      assert.equal((await from(server, '127.0.0.20')).status, 403);
      assert.equal((await from(server, '127.0.0.21')).status, 200);
    });
  });

  describe('SIGHUP', () => {
    let child: ChildServer;
    before(async () => {
      child = await startChildServer({ config: { ...LISTS, BlockedIPs: [], IPCheckInterval: '1h' } });
    });
    after(() => child.stop());

    it('lives through a SIGHUP that comes while it is still starting, and acts on it once it runs', async () => {
      let sentAt: number | undefined;
      const dead = await freePort();
      const starting = await startChildServer({
        // Redis that never answers holds the start for its 2 s grace: a wide window for the signal.
        config: { ...LISTS, BlockedIPs: [], IPCheckInterval: '1h', RedisEnabled: true, RedisAddr: `127.0.0.1:${dead}` },
        startTimeoutMs: 30_000,
        onSpawn: (pid) =>
          void (async () => {
            // As soon as the process listens for SIGHUP (bit 0 of SigCgt), long before it serves.
            for (;;) {
              const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
              if (status === '') return;
              const caught = /^SigCgt:\s*([0-9a-f]+)$/m.exec(status)?.[1];
              if (caught !== undefined && (BigInt(`0x${caught}`) & 1n) === 1n) break;
              await new Promise((r) => setTimeout(r, 5));
            }
            sentAt = Date.now();
            process.kill(pid, 'SIGHUP');
          })(),
      });
      try {
        assert.ok(sentAt !== undefined, 'no SIGHUP was sent');
        const listening = (await starting.logLines()).find((l) => l.includes('server.listening'))!;
        const listeningAt = Date.parse(listening.split(' ')[0]!);
        assert.ok(listeningAt > sentAt, `the signal came after the start (${listening})`);
        assert.ok(starting.alive());
        await eventually(async () => (await starting.logLines()).some((l) => l.includes('ip_lists.reloaded')), 'the SIGHUP was acted on once the server ran');
        assert.equal((await from(starting, '127.0.0.30')).status, 404);
      } finally {
        await starting.stop();
      }
    });

    it('re-reads the lists from config.toml when the process gets SIGHUP', async () => {
      assert.equal((await from(child, '127.0.0.30')).status, 404);
      const text = await readFile(child.configFile, 'utf8');
      await writeFile(child.configFile, text.replace(/^BlockedIPs = .*$/m, 'BlockedIPs = ["127.0.0.30"]'));
      process.kill(child.pid, 'SIGHUP');
      await eventually(async () => (await from(child, '127.0.0.30')).status === 403, '127.0.0.30 blocked after SIGHUP');
      assert.equal((await from(child, '127.0.0.31')).status, 404);
      assert.ok(child.alive());
    });
  });
});
