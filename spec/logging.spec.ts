// The log itself: the text line fail2ban reads (unchanged), LogFormat = "json" (the same events and fields, one
// object per line), the levels of request.rejected (info) and request.failed (error, with the stack), and
// LogFile reopened on SIGHUP after logrotate renamed it (the shipped logrotate/hmac-file-server run for real
// against the real command line), including a reopen that fails.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, readdir, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import express from 'express';
import request from 'supertest';
import { buildConfig } from '../server/config.js';
import { httpError } from '../server/errors.js';
import { createLogger, logAuthFailure, reopenLogFile, type Logger } from '../server/logger.js';
import { errorHandler } from '../middleware/error-handler.js';
import { startChildServer, toml, type ChildServer } from './helpers/child-server.js';
import { runCli } from './helpers/cli.js';
import { ensureDebianPackages } from './helpers/debian-packages.js';
import { rawRequest } from './helpers/http.js';
import { memoryLogger } from './helpers/memory-logger.js';
import { startTestServer } from './helpers/test-server.js';
import { grantFor } from './helpers/tus-client.js';

const run = promisify(execFile);
const REPO = path.resolve(import.meta.dirname, '..');
const FILTER = path.join(REPO, 'fail2ban/filter.d/hmac-auth.conf');
const SHIPPED_LOGROTATE = path.join(REPO, 'logrotate/hmac-file-server');
const TEXT_LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warn|error) [a-z0-9_.]+( [A-Za-z]+=\S+)*$/;

/** Ends the logger and waits until its transports have written everything. */
function endLogger(logger: Logger): Promise<void> {
  return new Promise((resolve) => {
    logger.once('finish', () => resolve());
    logger.end();
  });
}

async function lines(file: string): Promise<string[]> {
  return (await readFile(file, 'utf8')).split('\n').filter(Boolean);
}

async function eventually(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Captures what the process writes to stderr while fn runs. */
async function captureStderr(fn: () => void | Promise<void>): Promise<string> {
  const original = process.stderr.write.bind(process.stderr);
  let captured = '';
  process.stderr.write = (chunk: string | Uint8Array) => {
    captured += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
    return true;
  };
  try {
    await fn();
  } finally {
    process.stderr.write = original;
  }
  return captured;
}

describe('logging', function () {
  this.timeout(60_000);
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-logging-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe('LogFormat', () => {
    it('is "text" by default and refuses anything but "text" and "json"', () => {
      assert.equal(buildConfig({ Secret: 's' }, dir).config.LogFormat, 'text');
      assert.equal(buildConfig({ Secret: 's', LogFormat: 'json' }, dir).config.LogFormat, 'json');
      assert.throws(() => buildConfig({ Secret: 's', LogFormat: 'xml' }, dir), /LogFormat = "xml": expected one of "text", "json"/);
    });

    it('text: LogFile gets the same lines as before, and the shipped fail2ban filter matches them', async function () {
      this.timeout(300_000);
      await ensureDebianPackages({ 'fail2ban-regex': 'fail2ban' });
      const file = path.join(dir, 'text.log');
      const logger = createLogger({ LoggingEnabled: true, LogLevel: 'info', LogFile: file, LogFormat: 'text' });
      logAuthFailure(logger, { client: '203.0.113.9', reason: 'mac_invalid', method: 'PUT', path: '/upload/a/b.txt' });
      logger.info('http.request', { method: 'PUT', path: '/upload/a/b c.txt', status: 403, bytesIn: 120, client: '203.0.113.9' });
      logger.debug('not.written');
      await endLogger(logger);
      const written = await lines(file);
      assert.equal(written.length, 2);
      assert.match(written[0]!, /^\d{4}-\d\d-\d\dT[\d:.]+Z warn auth\.failed client=203\.0\.113\.9 reason=mac_invalid method=PUT path=\/upload\/a\/b\.txt$/);
      assert.match(written[1]!, / info http\.request method=PUT path="\/upload\/a\/b c\.txt" status=403 bytesIn=120 client=203\.0\.113\.9$/);
      // The same lines as the in-memory logger of the HTTP tests writes (lineFormat), time stamps aside.
      const memory = memoryLogger('info');
      logAuthFailure(memory.logger, { client: '203.0.113.9', reason: 'mac_invalid', method: 'PUT', path: '/upload/a/b.txt' });
      const line = await memory.waitFor(/auth\.failed/);
      assert.equal(line?.replace(/^\S+ /, ''), written[0]!.replace(/^\S+ /, ''));
      const { stdout } = await run('fail2ban-regex', ['--print-all-matched', file, FILTER]);
      assert.match(stdout, /Failregex: 1 total/);
      assert.match(stdout, /warn auth\.failed client=203\.0\.113\.9 /);
    });

    it('json: one object per line, with time, level, event and the same fields', async () => {
      const file = path.join(dir, 'json.log');
      const logger = createLogger({ LoggingEnabled: true, LogLevel: 'info', LogFile: file, LogFormat: 'json' });
      logAuthFailure(logger, { client: '203.0.113.9', reason: 'mac_invalid', method: 'PUT', path: '/upload/a/b.txt' });
      logger.info('http.request', { method: 'GET', path: '/upload/a "b"\n.txt', status: 200, bytesIn: 10, bytesOut: 2048, ms: 3, client: '::1' });
      const error = new Error('disk on fire');
      logger.error('request.failed', { code: 'E_INTERNAL', status: 500, cause: error.stack, event: 'not the event' });
      logger.info('big.number', { value: 2n ** 70n });
      await endLogger(logger);
      const written = await lines(file);
      assert.equal(written.length, 4, written.join('\n'));
      const objects = written.map((l) => JSON.parse(l) as Record<string, unknown>);
      for (const object of objects) {
        assert.deepEqual(Object.keys(object).slice(0, 3), ['time', 'level', 'event']);
        assert.match(String(object.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      }
      assert.deepEqual({ ...objects[0], time: undefined }, { time: undefined, level: 'warn', event: 'auth.failed', client: '203.0.113.9', reason: 'mac_invalid', method: 'PUT', path: '/upload/a/b.txt' });
      assert.deepEqual({ ...objects[1], time: undefined }, { time: undefined, level: 'info', event: 'http.request', method: 'GET', path: '/upload/a "b"\n.txt', status: 200, bytesIn: 10, bytesOut: 2048, ms: 3, client: '::1' });
      // A stack stays one line; a field cannot take the event's place.
      assert.equal(objects[2]!.event, 'request.failed');
      assert.equal(objects[2]!.level, 'error');
      assert.equal(objects[2]!.cause, error.stack);
      assert.equal(objects[3]!.value, (2n ** 70n).toString());
    });

    it('json through the command line: every line of standard output is an object, 4xx logged at info', async () => {
      const child = await startChildServer({ config: { LogFormat: 'json' } });
      try {
        assert.equal((await rawRequest(child.url, 'GET', '/upload/no/such.txt')).status, 404);
        await eventually(() => child.stdout.some((l) => l.includes('"event":"http.request"')), 'the http.request line');
        const objects = child.stdout.map((l) => JSON.parse(l) as Record<string, unknown>);
        assert.ok(objects.some((o) => o.event === 'server.listening' && o.level === 'info'));
        const rejected = objects.find((o) => o.event === 'request.rejected');
        assert.deepEqual({ ...rejected, time: undefined }, { time: undefined, level: 'info', event: 'request.rejected', code: 'E_NOT_FOUND', status: 404, method: 'GET', path: '/upload/no/such.txt' });
        const logged = objects.find((o) => o.event === 'http.request');
        assert.equal(logged?.status, 404);
        assert.equal(logged?.client, '127.0.0.1');
      } finally {
        await child.stop();
      }
    });
  });

  describe('levels', () => {
    it('4xx: request.rejected at info; 5xx: request.failed at error with the stack of the cause', async () => {
      const memory = memoryLogger('info');
      const app = express();
      app.get('/missing', () => {
        throw httpError('E_NOT_FOUND');
      });
      app.get('/broken', () => {
        throw new Error('the disk caught fire');
      });
      app.use(errorHandler(memory.logger));
      assert.equal((await request(app).get('/missing')).status, 404);
      assert.equal((await request(app).get('/broken')).status, 500);
      assert.match((await memory.waitFor(/request\.rejected/)) ?? '', /^\S+ info request\.rejected code=E_NOT_FOUND status=404 method=GET path=\/missing$/);
      const failed = (await memory.waitFor(/request\.failed/)) ?? '';
      assert.match(failed, /^\S+ error request\.failed code=\S+ status=500 method=GET path=\/broken cause="Error: the disk caught fire\\n {4}at /);
    });

    it('the tus door logs its refusals at info too', async () => {
      const server = await startTestServer({ LogLevel: 'info' });
      try {
        const headers = { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${await grantFor(server)}` };
        const created = await rawRequest(server.url, 'POST', '/files/', { ...headers, 'Upload-Length': 10, 'Upload-Metadata': `filename ${Buffer.from('t.txt').toString('base64')}` });
        assert.equal(created.status, 201);
        const location = String(created.headers.location);
        // The library itself refuses a PATCH at the wrong offset (409); answerTusError logs it.
        const wrong = await rawRequest(server.url, 'PATCH', location, { ...headers, 'Upload-Offset': 5, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': 5 }, Buffer.from('12345'));
        assert.equal(wrong.status, 409);
        const line = await server.waitForLog(/request\.rejected/);
        assert.match(line ?? '', new RegExp(`^\\S+ info request\\.rejected status=409 method=PATCH path=${new URL(location).pathname} code=\\S+$`));
      } finally {
        await server.close();
      }
    });
  });

  describe('LogFile and SIGHUP', () => {
    it('reopens the file by name: lines before go to the renamed file, lines after to the new one', async () => {
      const file = path.join(dir, 'reopen.log');
      const logger = createLogger({ LoggingEnabled: true, LogLevel: 'info', LogFile: file });
      logger.info('before.rename');
      await rename(file, `${file}.1`);
      logger.info('after.rename');
      assert.equal(reopenLogFile(logger), true);
      logger.info('after.reopen');
      await endLogger(logger);
      assert.deepEqual((await lines(`${file}.1`)).map((l) => l.split(' ')[2]), ['before.rename', 'after.rename']);
      assert.deepEqual((await lines(file)).map((l) => l.split(' ')[2]), ['log.reopened', 'after.reopen']);
      assert.equal((await stat(file)).mode & 0o777, 0o640 & ~process.umask());
    });

    it('keeps the old file and says so on stderr when the path cannot be opened', async () => {
      const file = path.join(dir, 'stuck.log');
      const logger = createLogger({ LoggingEnabled: true, LogLevel: 'info', LogFile: file });
      logger.info('first');
      await rename(file, `${file}.1`);
      await mkdir(file);
      let reopened = true;
      const stderr = await captureStderr(() => {
        reopened = reopenLogFile(logger);
      });
      assert.equal(reopened, false);
      assert.equal(stderr, `hmac-file-server: cannot reopen LogFile ${file}: EISDIR; still writing to the file opened before\n`);
      logger.info('still.logged');
      await rmdir(file);
      assert.equal(reopenLogFile(logger), true);
      logger.info('in.the.new.file');
      await endLogger(logger);
      assert.deepEqual((await lines(`${file}.1`)).map((l) => l.split(' ').slice(1, 3).join(' ')), ['info first', 'error log.reopen_failed', 'info still.logged']);
      assert.match((await lines(`${file}.1`))[1]!, / error log\.reopen_failed file=\S+stuck\.log cause=EISDIR$/);
      assert.deepEqual((await lines(file)).map((l) => l.split(' ')[2]), ['log.reopened', 'in.the.new.file']);
    });

    it('a LogFile that cannot be opened stops the start with exit code 1 and the reason', async () => {
      const configFile = path.join(dir, 'config.toml');
      await mkdir(path.join(dir, 'a-folder.log'));
      await writeFile(configFile, toml({ Secret: 's', StoreDir: path.join(dir, 'store'), LogFile: 'a-folder.log' }));
      const result = await runCli(['--config', configFile]);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /^hmac-file-server: EISDIR: illegal operation on a directory, open '.*a-folder\.log'\n$/);
    });
  });

  describe('the shipped logrotate/hmac-file-server with the real command line', function () {
    this.timeout(300_000);
    let child: ChildServer;
    let logDir: string;
    let config: string;
    let state: string;
    before(async () => {
      await ensureDebianPackages({ logrotate: 'logrotate' });
    });
    beforeEach(async () => {
      child = await startChildServer({ config: { LogFile: 'log/hmac-file-server.log' } });
      logDir = path.dirname(child.logFile!);
      const { stdout: group } = await run('id', ['-gn']);
      const shipped = await readFile(SHIPPED_LOGROTATE, 'utf8');
      const postrotate = /^(\s*)systemctl kill --signal=HUP --kill-whom=main hmac-file-server\.service .*$/m;
      assert.match(shipped, postrotate);
      assert.ok(shipped.includes('/var/log/hmac-file-server/*.log {'));
      assert.ok(shipped.includes('create 0640 hmac-file-server hmac-file-server'));
      config = path.join(dir, 'logrotate.conf');
      state = path.join(dir, 'logrotate.state');
      // Only the path, the owner of the new file and the target of the signal are replaced.
      await writeFile(
        config,
        shipped
          .replace('/var/log/hmac-file-server/*.log {', `${logDir}/*.log {`)
          .replace('create 0640 hmac-file-server hmac-file-server', `create 0640 ${os.userInfo().username} ${group.trim()}`)
          .replace(postrotate, `$1kill -HUP ${child.pid}`),
      );
      await chmod(config, 0o644);
    });
    afterEach(async () => {
      await child?.stop();
    });

    it('rotates under load: nothing lost, new lines in a new 0640 file, the old one compressed a rotation later', async () => {
      let sent = 0;
      let answered = 0;
      let running = true;
      const worker = async () => {
        while (running) {
          const n = sent++;
          const res = await rawRequest(child.url, 'GET', `/upload/rotate/${n}.txt`);
          assert.equal(res.status, 404);
          answered += 1;
        }
      };
      const workers = [worker(), worker(), worker()];
      await eventually(() => answered >= 30, 'the first requests');
      await run('logrotate', ['-f', '-s', state, config]);
      await eventually(async () => (await child.logLines()).some((l) => / info log\.reopened /.test(l)), 'log.reopened in the new file');
      const afterRotation = answered;
      await eventually(() => answered >= afterRotation + 30, 'requests after the rotation');
      running = false;
      await Promise.all(workers);
      // A request's line is written when its answer has gone out: the last one may still be on its way to the file.
      await eventually(async () => (await lines(path.join(logDir, 'hmac-file-server.log'))).some((l) => l.includes(`path=/upload/rotate/${sent - 1}.txt `)), 'the last request logged');

      const old = await lines(path.join(logDir, 'hmac-file-server.log.1'));
      const current = await lines(path.join(logDir, 'hmac-file-server.log'));
      for (const line of [...old, ...current]) assert.match(line, TEXT_LINE);
      assert.ok(old.some((l) => / info server\.listening /.test(l)));
      assert.match(current.find((l) => /log\.reopened/.test(l)) ?? '', / info log\.reopened file=\S+hmac-file-server\.log$/);
      assert.equal((await stat(path.join(logDir, 'hmac-file-server.log'))).mode & 0o777, 0o640);
      // Every answered request has its line, in one file or the other, once.
      const numbers = (all: string[]) => all.flatMap((l) => /http\.request method=GET path=\/upload\/rotate\/(\d+)\.txt status=404 /.exec(l)?.[1] ?? []).map(Number);
      const logged = [...numbers(old), ...numbers(current)].sort((a, b) => a - b);
      assert.deepEqual(logged, Array.from({ length: sent }, (_, i) => i));
      assert.ok(numbers(old).length > 0 && numbers(current).length > 0, `${numbers(old).length} lines before, ${numbers(current).length} after`);

      // The next rotation compresses the first (delaycompress) and keeps the server writing.
      await rawRequest(child.url, 'GET', '/upload/rotate/second.txt');
      await run('logrotate', ['-f', '-s', state, config]);
      await eventually(async () => (await child.logLines()).some((l) => /log\.reopened/.test(l)), 'the second log.reopened');
      assert.deepEqual((await readdir(logDir)).sort(), ['hmac-file-server.log', 'hmac-file-server.log.1', 'hmac-file-server.log.2.gz']);
      assert.ok(gunzipSync(await readFile(path.join(logDir, 'hmac-file-server.log.2.gz'))).toString().includes(' info server.listening '));
      assert.ok((await lines(path.join(logDir, 'hmac-file-server.log.1'))).some((l) => l.includes('path=/upload/rotate/second.txt')));
      assert.ok(child.alive());
      assert.deepEqual(child.stderr, []);
      // SIGTERM: the last lines are in the file when the process has exited (0).
      process.kill(child.pid, 'SIGTERM');
      assert.deepEqual(await child.waitForExit(15_000), { code: 0, signal: null });
      assert.match((await lines(child.logFile!)).at(-1) ?? '', / info server\.stopped$/);
    });

    it('keeps logging to the renamed file when the new one cannot be opened, and says so on stderr', async () => {
      const file = child.logFile!;
      await rename(file, `${file}.1`);
      await mkdir(file);
      process.kill(child.pid, 'SIGHUP');
      await eventually(() => child.stderr.some((l) => l.includes('cannot reopen LogFile')), 'the complaint on stderr');
      assert.deepEqual(child.stderr, [`hmac-file-server: cannot reopen LogFile ${file}: EISDIR; still writing to the file opened before`]);
      assert.equal((await rawRequest(child.url, 'GET', '/upload/after/failure.txt')).status, 404);
      await eventually(async () => (await lines(`${file}.1`)).some((l) => l.includes('path=/upload/after/failure.txt')), 'the request line in the old file');
      assert.ok((await lines(`${file}.1`)).some((l) => / error log\.reopen_failed file=\S+ cause=EISDIR$/.test(l)));
      assert.ok(child.alive());
      // Once the path can be opened, the next SIGHUP (logrotate's next run) moves on to it.
      await rmdir(file);
      process.kill(child.pid, 'SIGHUP');
      await eventually(async () => (await child.logLines()).some((l) => / info log\.reopened /.test(l)), 'log.reopened');
    });
  });
});
