// IPSource = "nginx-log": the follower on a real file (appends, partial and malformed lines, rename rotation and
// copytruncate, a missing file), which of nginx's answers count in each log format, and the shipped nginx
// configuration writing the log a server with active banning follows, rotated and reopened mid-run.
import assert from 'node:assert/strict';
import { appendFile, chmod, copyFile, mkdtemp, readFile, rename, rm, truncate, writeFile } from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { abuseEvents, subjects, type AbuseEvents } from '../server/abuse.js';
import { addressMatcher } from '../server/address-list.js';
import { createBanner } from '../server/fail2ban.js';
import { followNginxLog, isNginxOwnRefusal, parseNginxLine, type NginxLogFollower } from '../server/nginx-log.js';
import { freePort } from './helpers/local-daemon.js';
import { memoryLogger } from './helpers/memory-logger.js';
import { startNginx, type RunningNginx } from './helpers/nginx.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A line of nginx's combined format. */
function combined(ip: string, status: number, request = 'GET /upload/a/b.txt HTTP/1.1'): string {
  return `${ip} - - [01/Dec/2026:23:40:00 +0000] "${request}" ${status} 157 "-" "Mozilla/5.0 (X11; Linux x86_64)"`;
}
/** A line of the shipped hmac_file_server format. */
function shipped(ip: string, status: number, upstream = '-', request?: string): string {
  return `${combined(ip, status, request)} upstream=${upstream}`;
}

/** AbuseEvents that records what the follower reports. */
function recordingEvents(): { events: AbuseEvents; calls: string[] } {
  const calls: string[] = [];
  const none = () => {
    throw new Error('the follower has no requests');
  };
  return {
    calls,
    events: {
      authFailure: none,
      refused: none,
      authFailureOf: (ip, reason) => calls.push(`auth ${ip} ${reason}`),
      refusedOf: (ip, status) => calls.push(`refused ${ip} ${status}`),
    },
  };
}

async function until(what: string, check: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await sleep(10);
  }
}

describe('nginx log: which answers are nginx\'s own', () => {
  it('parses both formats and counts by the upstream field, or by status in the combined format', () => {
    const cases: Array<[string, boolean]> = [
      // The shipped format: only what never reached the server.
      [shipped('198.51.100.1', 401), true],
      [shipped('198.51.100.1', 403), true],
      [shipped('198.51.100.1', 400), true],
      [shipped('198.51.100.1', 408), true],
      [shipped('198.51.100.1', 413), true],
      [shipped('198.51.100.1', 429), true],
      [shipped('198.51.100.1', 444), true],
      [shipped('198.51.100.1', 499), false],
      [shipped('198.51.100.1', 404), false],
      [shipped('198.51.100.1', 200), false],
      [shipped('198.51.100.1', 403, '127.0.0.1:8080'), false],
      [shipped('198.51.100.1', 413, 'unix:/run/hmac-file-server/hmac-file-server.sock'), false],
      [`${combined('198.51.100.1', 502)} upstream=127.0.0.1:8080, 127.0.0.1:8081`, false],
      // The combined format: the server may have sent these, so only 444 and 408 count.
      [combined('198.51.100.1', 444), true],
      [combined('198.51.100.1', 408), true],
      [combined('198.51.100.1', 401), false],
      [combined('198.51.100.1', 403), false],
      [combined('198.51.100.1', 413), false],
      [combined('198.51.100.1', 400), false],
      [combined('198.51.100.1', 499), false],
    ];
    for (const [line, own] of cases) {
      const entry = parseNginxLine(line);
      assert.ok(entry, line);
      assert.equal(isNginxOwnRefusal(entry), own, line);
    }
    assert.deepEqual(parseNginxLine(shipped('2001:db8::7', 444)), { remoteAddr: '2001:db8::7', status: 444, upstream: '-' });
    // A user name with spaces, an escaped quote, a request line that is not one.
    assert.equal(parseNginxLine(`198.51.100.2 - alice smith [01/Dec/2026:23:40:00 +0000] "GET /\\x22 HTTP/1.1" 401 0 "-" "-" upstream=-`)?.status, 401);
    assert.equal(parseNginxLine(`198.51.100.3 - - [01/Dec/2026:23:40:00 +0000] "\\x16\\x03\\x01" 400 150 "-" "-" upstream=-`)?.status, 400);
    for (const bad of [
      '',
      'garbage',
      combined('unix:', 444),
      combined('not-an-ip', 444),
      combined('198.51.100.1', 4444),
      `${combined('198.51.100.1', 444)} upstream`,
      `${combined('198.51.100.1', 444)}upstream=-`,
      '198.51.100.1 - - [01/Dec/2026:23:40:00 +0000] "GET / HTTP/1.1 444 0 "-" "-"',
    ]) {
      assert.equal(parseNginxLine(bad), undefined, bad);
    }
  });
});

describe('nginx log: following the file', () => {
  let dir: string;
  let file: string;
  let follower: NginxLogFollower | undefined;
  let recorded: ReturnType<typeof recordingEvents>;
  const follow = async (events: AbuseEvents = recorded.events) => {
    const log = memoryLogger();
    follower = followNginxLog({ file, events, logger: log.logger, pollMs: 20 });
    // The first look (where "the end" is) is taken at once; give it a moment.
    await sleep(60);
    return { follower, log };
  };
  const append = (...lines: string[]) => appendFile(file, lines.map((l) => `${l}\n`).join(''));

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-nginx-follow-'));
    file = path.join(dir, 'access.log');
    recorded = recordingEvents();
  });
  afterEach(async () => {
    await follower?.stop();
    follower = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('starts at the end of the file and reports what is appended', async () => {
    await writeFile(file, `${shipped('198.51.100.9', 444)}\n${shipped('198.51.100.9', 401)}\n`);
    const { follower } = await follow();
    await append(shipped('198.51.100.10', 401), shipped('198.51.100.10', 200, '127.0.0.1:8080'), shipped('198.51.100.11', 413), combined('198.51.100.12', 444));
    await until('four lines', () => follower.counters.lines === 4);
    await sleep(50);
    assert.deepEqual(recorded.calls, ['auth 198.51.100.10 nginx_401', 'refused 198.51.100.11 413', 'refused 198.51.100.12 444']);
    assert.equal(follower.counters.counted, 3);
  });

  it('keeps a partial last line until its end arrives', async () => {
    await writeFile(file, '');
    const { follower } = await follow();
    const line = shipped('198.51.100.13', 403);
    await appendFile(file, line.slice(0, 30));
    await sleep(100);
    assert.equal(follower.counters.lines, 0);
    await appendFile(file, line.slice(30, 60));
    await sleep(100);
    assert.equal(follower.counters.lines, 0);
    await appendFile(file, `${line.slice(60)}\n${shipped('198.51.100.14', 400).slice(0, 10)}`);
    await until('the whole line', () => follower.counters.lines === 1);
    await sleep(50);
    assert.deepEqual(recorded.calls, ['auth 198.51.100.13 nginx_403']);
  });

  it('skips malformed and overlong lines and goes on', async () => {
    await writeFile(file, '');
    const { follower, log } = await follow();
    await appendFile(file, Buffer.from([0xff, 0xfe, 0x00, 0x0a, 0xc3, 0x28, 0x0a]));
    await append('not nginx', combined('unix:', 444), `${'x'.repeat(200_000)}`, shipped('198.51.100.15', 444));
    await until('the good line', () => follower.counters.counted === 1);
    assert.deepEqual(recorded.calls, ['refused 198.51.100.15 444']);
    assert.equal(follower.counters.lines, 6);
    assert.equal(follower.counters.malformed, 5);
    assert.equal(log.lines.filter((l) => l.includes('nginx_log.unparsed')).length, 1, 'said once');
  });

  it('follows a rename rotation, reading what nginx still writes to the old file', async () => {
    await writeFile(file, '');
    const { follower } = await follow();
    await append(shipped('198.51.100.20', 444));
    await until('the first line', () => follower.counters.lines === 1);
    // logrotate: rename, then nginx writes on to the renamed file until it reopens, then to a new file.
    await rename(file, `${file}.1`);
    await sleep(60);
    await appendFile(`${file}.1`, `${shipped('198.51.100.21', 444)}\n`);
    await writeFile(file, `${shipped('198.51.100.22', 444)}\n`);
    await until('three lines', () => follower.counters.lines === 3);
    await append(shipped('198.51.100.23', 444));
    await until('four lines', () => follower.counters.lines === 4);
    assert.deepEqual([...recorded.calls].sort(), ['refused 198.51.100.20 444', 'refused 198.51.100.21 444', 'refused 198.51.100.22 444', 'refused 198.51.100.23 444']);
    assert.ok(follower.counters.rotations >= 1);
    // Once the old file has been quiet for a second it is let go (and closed).
    await sleep(1300);
    await appendFile(`${file}.1`, `${shipped('198.51.100.29', 444)}\n`);
    await sleep(100);
    assert.equal(follower.counters.lines, 4);
    // Again, with the path missing for a while.
    await rename(file, `${file}.2`);
    await sleep(100);
    await writeFile(file, `${shipped('198.51.100.24', 444)}\n`);
    await until('five lines', () => follower.counters.lines === 5);
    assert.equal(recorded.calls.at(-1), 'refused 198.51.100.24 444');
  });

  it('follows copytruncate', async () => {
    await writeFile(file, `${'old line\n'.repeat(50)}`);
    const { follower } = await follow();
    await append(shipped('198.51.100.30', 444), shipped('198.51.100.31', 444));
    await until('two lines', () => follower.counters.lines === 2);
    await copyFile(file, `${file}.1`);
    await truncate(file, 0);
    await sleep(60);
    await append(shipped('198.51.100.32', 403));
    await until('the line after the truncation', () => follower.counters.lines === 3);
    assert.deepEqual(recorded.calls, ['refused 198.51.100.30 444', 'refused 198.51.100.31 444', 'auth 198.51.100.32 nginx_403']);
    assert.equal(follower.counters.rotations, 1);
  });

  it('waits quietly for a missing file and reads it from its start', async () => {
    const { follower, log } = await follow();
    await sleep(100);
    assert.equal(log.lines.filter((l) => l.includes('nginx_log.missing')).length, 1);
    await writeFile(file, `${shipped('198.51.100.40', 444)}\n`);
    await until('the line', () => follower.counters.lines === 1);
    assert.deepEqual(recorded.calls, ['refused 198.51.100.40 444']);
  });

  it('reports nothing after stop()', async () => {
    await writeFile(file, '');
    const { follower: f } = await follow();
    await f.stop();
    await append(shipped('198.51.100.41', 444));
    await sleep(100);
    assert.equal(f.counters.lines, 0);
    assert.deepEqual(recorded.calls, []);
  });

  it("counts nginx's own 401 and 403 towards a ban, never for an exempt address", async () => {
    await writeFile(file, '');
    const bans: string[] = [];
    const banner = createBanner({
      config: { Fail2BanCommand: '/usr/bin/fail2ban-client', Fail2BanJail: 'hmac-auth', Fail2BanMaxRetry: 3, Fail2BanFindTime: 600_000 },
      logger: memoryLogger().logger,
      run: (_file, args) => {
        bans.push(args.join(' '));
        return Promise.resolve();
      },
    });
    const events = abuseEvents(subjects(addressMatcher(['127.0.0.1/32'])), [banner.listener]);
    const { follower } = await follow(events);
    await append(...Array.from({ length: 5 }, () => shipped('127.0.0.1', 403)), shipped('127.0.0.50', 401), shipped('127.0.0.50', 403), shipped('127.0.0.50', 403, '127.0.0.1:8080'));
    await until('eight lines', () => follower.counters.lines === 8);
    assert.deepEqual(bans, [], 'two of its own, one the server counted itself');
    await append(shipped('127.0.0.50', 401));
    await until('the ban', () => bans.length === 1);
    assert.deepEqual(bans, ['set hmac-auth banip 127.0.0.50']);
    banner.stop();
  });
});

describe('nginx log: behind the shipped nginx configuration', function () {
  this.timeout(60_000);
  let dir: string;
  let nginx: RunningNginx;
  let server: TestServer;
  let callsFile: string;

  /** An HTTPS request through nginx (self-signed certificate) from a loopback address. */
  const viaNginx = (method: string, requestPath: string, localAddress: string, headers: Record<string, string | number> = {}, body?: Buffer) =>
    new Promise<number>((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port: nginx.port, method, path: requestPath, headers, rejectUnauthorized: false, localAddress, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end(body);
    });
  const counters = () => server.running.guards.counters.nginxLog!;
  const calls = async () => (await readFile(callsFile, 'utf8').catch(() => '')).split('\n').filter(Boolean);

  before(async function () {
    this.timeout(600_000);
    dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-nginx-ban-'));
    callsFile = path.join(dir, 'calls.log');
    const recorder = path.join(dir, 'record-ban');
    await writeFile(recorder, `#!/bin/sh\nprintf '%s\\n' "$*" >> '${callsFile}'\n`);
    await chmod(recorder, 0o755);
    const upstreamPort = await freePort();
    // This test's copy only: a small body limit (nginx's own 413) and a location nginx refuses itself (403), which
    // the shipped configuration has not.
    nginx = await startNginx(upstreamPort, {
      edit: (site) => site.replace('client_max_body_size 0;', 'client_max_body_size 1k;').replace('    location /upload/ {', '    location = /denied {\n        deny all;\n    }\n    location /upload/ {'),
    });
    server = await startTestServer({
      ListenPort: upstreamPort,
      TrustedProxies: ['127.0.0.1/32'],
      IPSource: 'nginx-log',
      NginxLogFile: nginx.accessLog,
      Fail2BanEnabled: true,
      Fail2BanCommand: recorder,
      Fail2BanMaxRetry: 3,
    });
    assert.ok(await server.waitForLog(/nginx_log\.following .*from=end/, 5000), server.logs.join('\n'));
  });
  after(async () => {
    await server?.close();
    await nginx?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("reads every line nginx writes and counts only nginx's own refusals", async () => {
    const before = { ...counters() };
    assert.equal(await viaNginx('GET', '/upload/nginx-log/missing.txt', '127.0.0.32'), 404); // the server's answer
    assert.equal(await viaNginx('PUT', '/upload/nginx-log/big.bin', '127.0.0.33', { 'Content-Length': 2048 }, Buffer.alloc(2048)), 413); // nginx's
    assert.equal(await viaNginx('GET', '/../etc/passwd', '127.0.0.33'), 400); // nginx's
    await until('three lines', () => counters().lines - before.lines === 3, 5000);
    assert.equal(counters().counted - before.counted, 2);
    assert.equal(counters().malformed, 0, 'the shipped log_format parses');
    const log = await readFile(nginx.accessLog, 'utf8');
    assert.match(log, /^127\.0\.0\.32 - - \[[^\]]+\] "GET \/upload\/nginx-log\/missing\.txt HTTP\/1\.1" 404 \d+ "-" "-" upstream=127\.0\.0\.1:\d+$/m);
    assert.match(log, /^127\.0\.0\.33 .* 413 \d+ "-" "-" upstream=-$/m);
  });

  it("bans a client for nginx's own 403s, never 127.0.0.1", async () => {
    for (let i = 0; i < 5; i += 1) assert.equal(await viaNginx('GET', '/denied', '127.0.0.1'), 403);
    for (let i = 0; i < 3; i += 1) assert.equal(await viaNginx('GET', '/denied', '127.0.0.34'), 403);
    await until('the ban', () => server.logs.some((l) => / fail2ban\.banned client=127\.0\.0\.34 /.test(l)), 5000);
    assert.deepEqual(await calls(), ['set hmac-auth banip 127.0.0.34']);
  });

  it('follows the log through a rotation by rename and nginx -s reopen', async () => {
    const before = { ...counters() };
    await rename(nginx.accessLog, `${nginx.accessLog}.1`);
    // Until it reopens, nginx writes to the renamed file.
    assert.equal(await viaNginx('GET', '/denied', '127.0.0.35'), 403);
    await nginx.reopen();
    await until('the rotation noticed', () => counters().rotations > before.rotations, 5000);
    for (let i = 0; i < 2; i += 1) assert.equal(await viaNginx('GET', '/denied', '127.0.0.35'), 403);
    await until('the ban after the rotation', () => server.logs.some((l) => / fail2ban\.banned client=127\.0\.0\.35 /.test(l)), 5000);
    assert.deepEqual((await calls()).slice(-1), ['set hmac-auth banip 127.0.0.35']);
    assert.match(await readFile(`${nginx.accessLog}.1`, 'utf8'), /^127\.0\.0\.35 /m);
    assert.match(await readFile(nginx.accessLog, 'utf8'), /^127\.0\.0\.35 /m);
    assert.equal(counters().lines - before.lines, 3);
  });
});
