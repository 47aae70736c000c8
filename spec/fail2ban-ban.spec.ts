// Bans with a real fail2ban: the shipped filter against every kind of line it must (and must not) match, the
// shipped jail watching the server's log, and the server's active banning (Fail2BanEnabled) asking a private
// fail2ban-server through fail2ban-client; plus the banner's window, memory bounds and failure handling.
// The fail2ban-server has its own config, socket and database in a temp folder and a recording action instead
// of a firewall. Clients are 127.0.0.x source addresses.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { createBanner, execFileCommand, type RunCommand } from '../server/fail2ban.js';
import { ensureDebianPackages } from './helpers/debian-packages.js';
import { pumpLogs, startFail2Ban, JAIL, type RunningFail2Ban } from './helpers/fail2ban.js';
import { rawRequest, signedPut, type RawResponse } from './helpers/http.js';
import { memoryLogger } from './helpers/memory-logger.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

const run = promisify(execFile);
const FILTER = path.resolve(import.meta.dirname, '../fail2ban/filter.d/hmac-auth.conf');
const BAD_MAC = `?v=${'0'.repeat(64)}`;

/** A PUT with a wrong MAC from localAddress (and optionally a forwarded client); 403. */
async function badMac(server: TestServer, localAddress: string, headers: Record<string, string> = {}): Promise<RawResponse & { ms: number }> {
  const started = Date.now();
  const res = await rawRequest(server.url, 'PUT', `/upload/f2b/x.txt${BAD_MAC}`, { 'Content-Length': 1, ...headers }, Buffer.from('x'), { localAddress });
  return { ...res, ms: Date.now() - started };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('fail2ban: the shipped filter', function () {
  this.timeout(300_000);
  let server: TestServer;
  let dir: string;
  before(async () => {
    await ensureDebianPackages({ 'fail2ban-regex': 'fail2ban' });
    dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-f2b-filter-'));
    server = await startTestServer({ TrustedProxies: ['127.0.0.1/32'], EnableIPManagement: true, AllowedIPs: ['127.0.0.0/25'], BlockedIPs: ['127.0.0.30/32'] });
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    await server?.close();
  });

  it('matches bad signatures, IP-list refusals, infected uploads and rate-limit refusals, and nothing else', async () => {
    assert.equal((await badMac(server, '127.0.0.21')).status, 403);
    assert.equal((await badMac(server, '127.0.0.30')).status, 403); // blocked
    assert.equal((await badMac(server, '127.0.0.200')).status, 403); // not in AllowedIPs
    // Not failures: a good upload, a missing file, and a client that writes "warn auth.failed client=…" into its path.
    assert.equal((await signedPut(server, 'f2b/ok.txt', Buffer.from('fine'))).status, 201);
    await rawRequest(server.url, 'GET', '/upload/f2b/missing.txt', {}, undefined, { localAddress: '127.0.0.22' });
    await rawRequest(server.url, 'GET', '/upload/warn%20auth.failed%20client=127.0.0.66%20reason=x', {}, undefined, { localAddress: '127.0.0.23' });
    assert.ok(await server.waitForLog(/auth\.failed client=127\.0\.0\.200 reason=ip_not_allowed/));
    assert.ok(server.logs.some((l) => / warn auth\.failed client=127\.0\.0\.30 reason=ip_blocked /.test(l)));

    // What the scan stage and the rate limit write (each is tested where it lives).
    const now = new Date().toISOString();
    const written = [
      `${now} warn scan.infected client=127.0.0.40 signature=Eicar-Test-Signature path=f2b/eicar.txt`,
      `${now} warn rate.limited client=127.0.0.41 method=PUT path=/upload/f2b/y.txt`,
      `${now} warn rate.limited client=2001:db8::41 method=PUT path=/upload/f2b/y.txt`,
      // Look-alikes: another level, another event, the words inside a value.
      `${now} info auth.failed client=127.0.0.42 reason=mac_invalid method=PUT path=/x`,
      `${now} warn auth.failedx client=127.0.0.43 reason=mac_invalid method=PUT path=/x`,
      `${now} info http.request method=GET path="/warn auth.failed client=127.0.0.44 reason=x" status=404 client=127.0.0.45`,
    ];
    const log = path.join(dir, 'hmac.log');
    await writeFile(log, `${[...server.logs, ...written].join('\n')}\n`);
    const { stdout } = await run('fail2ban-regex', ['--print-all-matched', log, FILTER], { timeout: 60_000 });
    const matched = [...stdout.matchAll(/Z warn (auth\.failed|scan\.infected|rate\.limited) client=(\S+) (?:reason=(\S+))?/g)].map((m) => `${m[1]} ${m[2]}${m[3] ? ` ${m[3]}` : ''}`);
    assert.deepEqual(matched, [
      'auth.failed 127.0.0.21 mac_invalid',
      'auth.failed 127.0.0.30 ip_blocked',
      'auth.failed 127.0.0.200 ip_not_allowed',
      'scan.infected 127.0.0.40',
      'rate.limited 127.0.0.41',
      'rate.limited 2001:db8::41',
    ]);
    assert.match(stdout, /Failregex: 6 total/);
  });
});

describe('fail2ban: banning with a real fail2ban-server', function () {
  this.timeout(60_000);
  let f2b: RunningFail2Ban;
  const servers: TestServer[] = [];
  const temp: string[] = [];
  const serve = async (...args: Parameters<typeof startTestServer>) => {
    const s = await startTestServer(...args);
    servers.push(s);
    return s;
  };

  before(async function () {
    this.timeout(600_000);
    // Far from UTC on purpose: the log's times end in "Z" and must be read as UTC, or every line looks hours
    // old (older than findtime) and nobody is ever banned.
    f2b = await startFail2Ban({ env: { TZ: 'Asia/Tokyo' } });
  });
  after(async () => {
    for (const s of servers) await s.close();
    await f2b?.stop();
    for (const d of temp) await rm(d, { recursive: true, force: true });
  });

  it('the shipped jail bans a client after five bad signatures in the server log, never loopback', async () => {
    assert.equal((await f2b.client('get', JAIL, 'maxretry')).trim(), '5');
    assert.equal((await f2b.client('get', JAIL, 'findtime')).trim(), '600');
    assert.equal((await f2b.client('get', JAIL, 'bantime')).trim(), '3600');
    const server = await serve({ TrustedProxies: ['127.0.0.1/32'] });
    const pump = pumpLogs(server.logs, f2b.logFile);
    try {
      // 127.0.0.1 (nginx, health checks) fails as often as it likes: the jail ignores it, as the server does.
      for (let i = 0; i < 7; i += 1) assert.equal((await badMac(server, '127.0.0.1')).status, 403);
      for (let i = 0; i < 4; i += 1) assert.equal((await badMac(server, '127.0.0.20')).status, 403);
      await pump.flush();
      await f2b.waitFor('four failures of 127.0.0.20 counted', async () => (await f2b.status()).totalFailed >= 4);
      assert.deepEqual((await f2b.status()).banned, []);

      assert.equal((await badMac(server, '127.0.0.20')).status, 403);
      await pump.flush();
      await f2b.waitFor('the ban of 127.0.0.20', async () => (await f2b.status()).banned.includes('127.0.0.20'));
      await f2b.waitFor('the action for 127.0.0.20', async () => (await f2b.actions()).includes('ban 127.0.0.20'));
      const status = await f2b.status();
      assert.equal(status.totalFailed, 5);
      assert.ok(!status.banned.includes('127.0.0.1'));
      assert.ok(!(await f2b.actions()).includes('ban 127.0.0.1'));
    } finally {
      await pump.stop();
    }
  });

  describe('active banning (Fail2BanEnabled)', () => {
    let server: TestServer;
    before(async () => {
      server = await serve({ TrustedProxies: ['127.0.0.1/32'], Fail2BanEnabled: true, Fail2BanCommand: f2b.clientWrapper, Fail2BanMaxRetry: 3 });
    });
    const callsFor = async (ip: string) => (await f2b.calls()).filter((c) => c.endsWith(` ${ip}`));

    it('asks fail2ban once to ban a client at its third bad signature, not again at the fourth', async () => {
      for (let i = 0; i < 2; i += 1) assert.equal((await badMac(server, '127.0.0.9')).status, 403);
      await sleep(300);
      assert.deepEqual(await callsFor('127.0.0.9'), []);
      const third = await badMac(server, '127.0.0.9');
      assert.equal(third.status, 403);
      assert.ok(await server.waitForLog(/ warn fail2ban\.banned client=127\.0\.0\.9 jail=hmac-auth$/, 10_000), server.logs.slice(-5).join('\n'));
      await f2b.waitFor('the ban of 127.0.0.9', async () => (await f2b.status()).banned.includes('127.0.0.9'));
      assert.ok((await f2b.actions()).includes('ban 127.0.0.9'));

      assert.equal((await badMac(server, '127.0.0.9')).status, 403);
      await sleep(700);
      assert.deepEqual(await callsFor('127.0.0.9'), [`set ${JAIL} banip 127.0.0.9`]);
      assert.equal(server.running.guards.counters.bans?.banned, 1);
      assert.equal(server.running.guards.counters.bans?.failed, 0);
    });

    it('never bans the trusted proxy itself, but bans the client it forwards for', async () => {
      for (let i = 0; i < 10; i += 1) assert.equal((await badMac(server, '127.0.0.1')).status, 403);
      for (let i = 0; i < 3; i += 1) assert.equal((await badMac(server, '127.0.0.1', { 'X-Forwarded-For': '127.0.0.10' })).status, 403);
      // An untrusted peer cannot get someone else banned by naming them.
      for (let i = 0; i < 3; i += 1) assert.equal((await badMac(server, '127.0.0.11', { 'X-Forwarded-For': '127.0.0.12' })).status, 403);
      await f2b.waitFor('the bans of 127.0.0.10 and 127.0.0.11', async () => {
        const { banned } = await f2b.status();
        return banned.includes('127.0.0.10') && banned.includes('127.0.0.11');
      });
      await sleep(500);
      const { banned } = await f2b.status();
      assert.ok(!banned.includes('127.0.0.1'), banned.join(' '));
      assert.ok(!banned.includes('127.0.0.12'), banned.join(' '));
      assert.deepEqual(await callsFor('127.0.0.1'), []);
      assert.deepEqual(await callsFor('127.0.0.12'), []);
      assert.ok(!server.logs.some((l) => /fail2ban\.\S+ client=127\.0\.0\.1 /.test(l)));
    });
  });

  it('a missing command is logged and counted; the answers are the same and prompt', async () => {
    const server = await serve({ TrustedProxies: ['127.0.0.1/32'], Fail2BanEnabled: true, Fail2BanCommand: '/nonexistent', Fail2BanMaxRetry: 1 });
    const res = await badMac(server, '127.0.0.13');
    assert.equal(res.status, 403);
    assert.equal(res.body.toString().trim(), 'Invalid signature');
    assert.ok(res.ms < 1000, `${res.ms} ms`);
    const line = await server.waitForLog(/fail2ban\.failed/, 5000);
    assert.match(line ?? '', / error fail2ban\.failed client=127\.0\.0\.13 cause="spawn \/nonexistent ENOENT"$/);
    assert.equal(server.running.guards.counters.bans?.failed, 1);
    assert.equal(server.running.guards.counters.bans?.banned, 0);
    assert.equal((await signedPut(server, 'f2b/after.txt', Buffer.from('still fine'))).status, 201);
  });

  it('a hanging command never holds up an answer, and is killed when the server stops', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-f2b-hang-'));
    temp.push(dir);
    const script = path.join(dir, 'hang');
    await writeFile(script, `#!/bin/sh\necho $$ >> '${path.join(dir, 'pids')}'\nexec sleep 30\n`);
    await chmod(script, 0o755);
    const server = await startTestServer({ TrustedProxies: ['127.0.0.1/32'], Fail2BanEnabled: true, Fail2BanCommand: script, Fail2BanMaxRetry: 1 });
    let closed = false;
    try {
      for (const ip of ['127.0.0.14', '127.0.0.15', '127.0.0.16']) {
        const res = await badMac(server, ip);
        assert.equal(res.status, 403);
        assert.equal(res.body.toString().trim(), 'Invalid signature');
        assert.ok(res.ms < 1000, `${res.ms} ms`);
      }
      const readPids = async () => (await readFile(path.join(dir, 'pids'), 'utf8').catch(() => '')).split('\n').filter(Boolean).map(Number);
      for (let i = 0; i < 50 && (await readPids()).length < 3; i += 1) await sleep(100);
      const pids = await readPids();
      assert.equal(pids.length, 3);
      assert.equal((await signedPut(server, 'f2b/meanwhile.txt', Buffer.from('fine'))).status, 201);
      await server.close();
      closed = true;
      await sleep(200);
      for (const pid of pids) assert.throws(() => process.kill(pid, 0), /ESRCH/, `the command ${pid} still runs`);
    } finally {
      if (!closed) await server.close();
    }
  });
});

describe('fail2ban: the banner', () => {
  const config = { Fail2BanCommand: '/usr/bin/fail2ban-client', Fail2BanJail: 'hmac-auth', Fail2BanMaxRetry: 3, Fail2BanFindTime: 1000 };

  /** A run that records its calls and succeeds (or does what answer says). */
  function recorder(answer: () => Promise<void> = () => Promise.resolve()) {
    const calls: string[][] = [];
    const runner: RunCommand = (file, args) => {
      calls.push([file, ...args]);
      return answer();
    };
    return { calls, runner };
  }

  it('bans at Fail2BanMaxRetry failures within the sliding window, once per window', async () => {
    let clock = 0;
    const { calls, runner } = recorder();
    const log = memoryLogger();
    const banner = createBanner({ config, logger: log.logger, run: runner, now: () => clock });
    const fail = (at: number) => {
      clock = at;
      banner.listener.authFailure!('127.0.0.9', 'mac_invalid');
    };
    fail(0);
    fail(400);
    fail(1100); // the one at 0 has left the window
    assert.equal(calls.length, 0);
    fail(1200);
    assert.deepEqual(calls, [['/usr/bin/fail2ban-client', 'set', 'hmac-auth', 'banip', '127.0.0.9']]);
    for (const at of [1300, 1500, 1800, 2100]) fail(at);
    assert.equal(calls.length, 1, 'at most one ban per window');
    // Once the window since the ban has passed, the failures of the last window count again.
    fail(2300);
    assert.equal(calls.length, 2);
    // Failures older than the window are forgotten.
    const other = (at: number) => {
      clock = at;
      banner.listener.authFailure!('127.0.0.8', 'mac_invalid');
    };
    other(3000);
    other(3100);
    other(4200);
    other(4300);
    assert.equal(calls.length, 2);
    other(4400);
    assert.equal(calls.length, 3);
    await sleep(10);
    assert.equal(banner.counters.banned, 3);
    assert.match(log.lines.find((l) => l.includes('fail2ban.banned')) ?? '', / warn fail2ban\.banned client=127\.0\.0\.9 jail=hmac-auth$/);
    banner.stop();
  });

  it('forgets addresses after the window and never counts more than maxTracked', () => {
    let clock = 0;
    const { runner } = recorder();
    const banner = createBanner({ config, logger: memoryLogger().logger, run: runner, now: () => clock, maxTracked: 50 });
    for (let i = 0; i < 200; i += 1) banner.listener.authFailure!(`10.0.${i >> 8}.${i & 255}`, 'mac_invalid');
    assert.equal(banner.tracked(), 50);
    clock = 999;
    banner.listener.authFailure!('10.1.0.1', 'mac_invalid');
    assert.equal(banner.tracked(), 50);
    clock = 1500;
    assert.equal(banner.tracked(), 1);
    clock = 3000;
    assert.equal(banner.tracked(), 0);
    banner.stop();
  });

  it('passes only addresses to the command, IPv4-mapped ones as IPv4', async () => {
    const { calls, runner } = recorder();
    const banner = createBanner({ config: { ...config, Fail2BanMaxRetry: 1 }, logger: memoryLogger().logger, run: runner });
    for (const odd of ['', 'unknown', '-h', '127.0.0.9; reboot', '127.0.0.9 ', '--help', '1.2.3.4.5', '../../x']) banner.listener.authFailure!(odd, 'mac_invalid');
    assert.equal(calls.length, 0);
    banner.listener.authFailure!('::ffff:127.0.0.17', 'mac_invalid');
    banner.listener.authFailure!('2001:db8::17', 'mac_invalid');
    assert.deepEqual(
      calls.map((c) => c.at(-1)),
      ['127.0.0.17', '2001:db8::17'],
    );
    await sleep(10);
    banner.stop();
  });

  it('returns at once whatever the command does, and runs at most maxRunning commands together', async () => {
    const pending: Array<() => void> = [];
    const { calls, runner } = recorder(() => new Promise<void>((resolve) => pending.push(resolve)));
    const banner = createBanner({ config: { ...config, Fail2BanMaxRetry: 1 }, logger: memoryLogger().logger, run: runner, maxRunning: 2 });
    const started = Date.now();
    for (let i = 1; i <= 5; i += 1) banner.listener.authFailure!(`127.0.1.${i}`, 'mac_invalid');
    assert.ok(Date.now() - started < 50);
    assert.equal(calls.length, 2);
    pending.shift()!();
    await sleep(10);
    assert.equal(calls.length, 3);
    assert.equal(banner.counters.banned, 1);
    banner.stop();

    const throwing = createBanner({
      config: { ...config, Fail2BanMaxRetry: 1 },
      logger: memoryLogger().logger,
      run: () => {
        throw new Error('cannot run');
      },
    });
    assert.doesNotThrow(() => throwing.listener.authFailure!('127.0.1.9', 'mac_invalid'));
    await sleep(10);
    assert.equal(throwing.counters.failed, 1);
    throwing.stop();
  });

  describe('with execFile', () => {
    let dir: string;
    before(async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-f2b-exec-'));
    });
    after(async () => {
      if (dir) await rm(dir, { recursive: true, force: true });
    });
    const script = async (name: string, body: string) => {
      const file = path.join(dir, name);
      await writeFile(file, `#!/bin/sh\n${body}\n`);
      await chmod(file, 0o755);
      return file;
    };

    it('kills a command that outlives the timeout and logs it', async () => {
      const pidFile = path.join(dir, 'pid');
      const hang = await script('hang', `echo $$ > '${pidFile}'\nexec sleep 30`);
      const log = memoryLogger();
      const banner = createBanner({ config: { ...config, Fail2BanCommand: hang, Fail2BanMaxRetry: 1 }, logger: log.logger, timeoutMs: 300 });
      const started = Date.now();
      banner.listener.authFailure!('127.0.0.18', 'mac_invalid');
      const line = await log.waitFor(/fail2ban\.failed/, 3000);
      assert.match(line ?? '', / error fail2ban\.failed client=127\.0\.0\.18 cause="timed out after 300 ms"$/);
      assert.ok(Date.now() - started < 2000);
      assert.equal(banner.counters.failed, 1);
      const pid = Number(await readFile(pidFile, 'utf8'));
      await sleep(100);
      assert.throws(() => process.kill(pid, 0), /ESRCH/);
      banner.stop();
    });

    it('logs a refusing command with its exit code and what it said', async () => {
      const refuse = await script('refuse', `echo "Sorry but the jail '$2' does not exist" >&2\nexit 255`);
      const log = memoryLogger();
      const banner = createBanner({ config: { ...config, Fail2BanCommand: refuse, Fail2BanMaxRetry: 1 }, logger: log.logger });
      banner.listener.authFailure!('127.0.0.19', 'mac_invalid');
      const line = await log.waitFor(/fail2ban\.failed/, 3000);
      assert.match(line ?? '', / error fail2ban\.failed client=127\.0\.0\.19 cause="exit code 255: Sorry but the jail 'hmac-auth' does not exist"$/);
      banner.stop();
    });

    it('runs the command without a shell', async () => {
      const out = path.join(dir, 'args');
      const record = await script('record', `for a in "$@"; do printf '[%s]' "$a" >> '${out}'; done`);
      await execFileCommand(record, ['set', 'hmac-auth', 'banip', '$(id)', '*'], 2000);
      assert.equal(await readFile(out, 'utf8'), '[set][hmac-auth][banip][$(id)][*]');
    });
  });
});
