// The files for running the server as a service: the systemd unit (systemd-analyze verify and its offline
// security score), the logrotate file (logrotate -d), the unix-socket nginx site with real nginx in front of a
// server on UnixSocket = true, and `npm install -g .` from a fresh copy of the repository giving a working
// hmac-file-server command.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { access, constants, cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { DEFAULTS } from '../server/config-schema.js';
import { parseDuration } from '../server/units.js';
import { ensureDebianPackages } from './helpers/debian-packages.js';
import { signedPath } from './helpers/http.js';
import { startNginx, type RunningNginx } from './helpers/nginx.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';
import { grantFor } from './helpers/tus-client.js';

const run = promisify(execFile);
const REPO = path.resolve(import.meta.dirname, '..');
const UNIT = path.join(REPO, 'systemd/hmac-file-server.service');
const LOGROTATE = path.join(REPO, 'logrotate/hmac-file-server');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** The [Service] (or any section's) directives of a unit file: name → every value given, in order. */
function directives(unit: string): Map<string, string[]> {
  const found = new Map<string, string[]>();
  for (const raw of unit.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';') || line.startsWith('[')) continue;
    const eq = line.indexOf('=');
    const name = line.slice(0, eq);
    found.set(name, [...(found.get(name) ?? []), line.slice(eq + 1)]);
  }
  return found;
}

async function isExecutable(file: string): Promise<boolean> {
  try {
    await access(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

describe('service files', function () {
  this.timeout(60_000);
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-service-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe('systemd/hmac-file-server.service', () => {
    before(async function () {
      this.timeout(300_000);
      await ensureDebianPackages({ 'systemd-analyze': 'systemd' });
    });

    it('has the hardening, paths and timeouts the server needs', async () => {
      const unit = directives(await readFile(UNIT, 'utf8'));
      const one = (name: string) => {
        const values = unit.get(name);
        assert.ok(values && values.length === 1, `${name} is set once`);
        return values[0]!;
      };
      assert.equal(one('ExecStart'), '/usr/bin/hmac-file-server --config /etc/hmac-file-server/config.toml');
      assert.equal(one('ExecReload'), '/bin/kill -HUP $MAINPID');
      assert.equal(one('KillSignal'), 'SIGTERM');
      assert.equal(one('Restart'), 'on-failure');
      assert.equal(one('User'), 'hmac-file-server');
      for (const [name, value] of Object.entries({ ProtectSystem: 'strict', NoNewPrivileges: 'yes', PrivateTmp: 'yes', ProtectHome: 'yes', LimitNOFILE: '65536', CapabilityBoundingSet: '', AmbientCapabilities: '' })) {
        assert.equal(one(name), value, name);
      }
      assert.deepEqual(one('RestrictAddressFamilies').split(/\s+/).sort(), ['AF_INET', 'AF_INET6', 'AF_UNIX']);
      // systemd's SIGKILL must not come before the grace the server gives running transfers.
      const stopMs = parseDuration(one('TimeoutStopSec'));
      const graceMs = parseDuration(String(DEFAULTS.GracefulShutdownTimeout));
      assert.ok(stopMs !== undefined && graceMs !== undefined && stopMs >= graceMs + 10_000, `TimeoutStopSec ${stopMs} ms, grace ${graceMs} ms`);
      // StoreDir's default and the log folder of the logrotate file are writable; the socket's folder exists.
      const writable = one('ReadWritePaths').split(/\s+/);
      assert.ok(writable.includes(DEFAULTS.StoreDir), writable.join(' '));
      const rotated = /^(\/\S+)\/\*\.log \{$/m.exec(await readFile(LOGROTATE, 'utf8'))?.[1];
      assert.ok(rotated && writable.includes(rotated), `${rotated} in ReadWritePaths`);
      assert.equal(`/var/lib/${one('StateDirectory')}`, DEFAULTS.StoreDir);
      assert.equal(`/var/log/${one('LogsDirectory')}`, rotated);
      assert.equal(`/run/${one('RuntimeDirectory')}`, path.dirname(DEFAULTS.UnixSocketPath));
    });

    it('passes systemd-analyze verify, with an offline security exposure below 2.5', async () => {
      // verify insists that ExecStart's program exists: on a machine without the installed command, this copy
      // runs node instead (same arguments); nothing else is changed.
      const shipped = await readFile(UNIT, 'utf8');
      const installed = await isExecutable('/usr/bin/hmac-file-server');
      const unit = path.join(dir, 'hmac-file-server.service');
      await writeFile(unit, installed ? shipped : shipped.replace(/^ExecStart=\/usr\/bin\/hmac-file-server /m, `ExecStart=${process.execPath} `));
      const verified = await run('systemd-analyze', ['verify', unit]).catch((err: { code?: number; stdout?: string; stderr?: string }) => err);
      assert.equal('code' in verified ? verified.code : 0, 0, `${verified.stdout ?? ''}${verified.stderr ?? ''}`);
      assert.equal(`${verified.stdout ?? ''}${verified.stderr ?? ''}`.trim(), '');
      const { stdout } = await run('systemd-analyze', ['security', '--offline=yes', '--no-pager', unit]);
      const exposure = Number(/Overall exposure level for hmac-file-server\.service: (\d+\.\d+)/.exec(stdout)?.[1]);
      assert.ok(exposure < 2.5, `exposure ${exposure}:\n${stdout}`);
    });
  });

  describe('logrotate/hmac-file-server', () => {
    it('passes logrotate -d: daily, 14 rotations, compressed, empty logs kept, SIGHUP to the service', async function () {
      this.timeout(300_000);
      await ensureDebianPackages({ logrotate: 'logrotate' });
      const shipped = await readFile(LOGROTATE, 'utf8');
      for (const directive of ['daily', 'rotate 14', 'compress', 'delaycompress', 'missingok', 'notifempty', 'create 0640 hmac-file-server hmac-file-server', 'sharedscripts']) {
        assert.match(shipped, new RegExp(`^\\s+${directive}$`, 'm'), directive);
      }
      assert.match(shipped, /^\s+postrotate\n\s+systemctl kill --signal=HUP --kill-whom=main hmac-file-server\.service\b.*\n\s+endscript$/m);
      // The user of the systemd unit need not exist here: the file's owner is this test's user; the folder is the
      // test's. Nothing else is changed.
      const { stdout: group } = await run('id', ['-gn']);
      const logs = path.join(dir, 'log');
      await mkdir(logs);
      await writeFile(path.join(logs, 'hmac-file-server.log'), 'a line\n');
      const config = path.join(dir, 'logrotate.conf');
      await writeFile(config, shipped.replace('/var/log/hmac-file-server/*.log {', `${logs}/*.log {`).replace('create 0640 hmac-file-server hmac-file-server', `create 0640 ${os.userInfo().username} ${group.trim()}`));
      const { stdout, stderr } = await run('logrotate', ['-d', '-s', path.join(dir, 'state'), config]);
      const output = `${stdout}${stderr}`;
      assert.doesNotMatch(output, /^error:/m, output);
      assert.match(output, /rotating pattern: \S+\/log\/\*\.log {2}after 1 days \(14 rotations\)/);
      assert.match(output, /empty log files are not rotated, old logs are removed/);
      assert.match(output, /considering log \S+\/hmac-file-server\.log/);
    });
  });

  describe('nginx/hmac-file-server-unix.conf in front of a server on a unix socket', function () {
    this.timeout(120_000);
    let server: TestServer;
    let nginx: RunningNginx;
    let socketDir: string;
    before(async function () {
      this.timeout(600_000);
      socketDir = await mkdtemp(path.join(os.tmpdir(), 'hfs-unix-'));
      server = await startTestServer({ UnixSocket: true, UnixSocketPath: path.join(socketDir, 'hfs.sock'), MaxUploadSize: '64MiB' });
      nginx = await startNginx({ socket: server.config.UnixSocketPath }, { shipped: 'hmac-file-server-unix.conf' });
    });
    after(async () => {
      await nginx?.stop();
      await server?.close();
      if (socketDir) await rm(socketDir, { recursive: true, force: true });
    });

    /** An HTTPS request through nginx (self-signed certificate), optionally from another loopback address. */
    function viaNginx(method: string, urlPath: string, headers: Record<string, string | number> = {}, body?: Buffer, localAddress = '127.0.0.1'): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
      return new Promise((resolve, reject) => {
        const req = https.request({ host: '127.0.0.1', port: nginx.port, method, path: urlPath, headers, rejectUnauthorized: false, localAddress, agent: false }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        });
        req.on('error', reject);
        req.end(body);
      });
    }

    it('differs from nginx/hmac-file-server.conf only in its opening comment and the upstream server', async () => {
      const strip = (conf: string) =>
        conf
          .replace(/^(#.*\n)+/, '')
          .replace(/upstream hmac_file_server \{[^}]*\}/, 'upstream hmac_file_server {}');
      const tcp = await readFile(path.join(REPO, 'nginx/hmac-file-server.conf'), 'utf8');
      const unix = await readFile(path.join(REPO, 'nginx/hmac-file-server-unix.conf'), 'utf8');
      assert.equal(strip(unix), strip(tcp));
      assert.match(unix, new RegExp(`^\\s+server unix:${DEFAULTS.UnixSocketPath.replace(/\./g, '\\.')};$`, 'm'));
      assert.ok(server.running.address === server.config.UnixSocketPath);
    });

    it('carries a legacy PUT and GET (whole and by range) to the server on its socket', async () => {
      const data = randomBytes(5 * 1024 * 1024);
      const put = await viaNginx('PUT', signedPath(server, 'unix/file.bin', data.length), { 'Content-Length': data.length }, data);
      assert.equal(put.status, 201, put.body.toString());
      const got = await viaNginx('GET', '/upload/unix/file.bin');
      assert.equal(got.status, 200);
      assert.equal(sha256(got.body), sha256(data));
      const range = await viaNginx('GET', '/upload/unix/file.bin', { Range: 'bytes=100-199' });
      assert.equal(range.status, 206);
      assert.deepEqual(range.body, data.subarray(100, 200));
      assert.match(await readFile(nginx.accessLog, 'utf8'), /"GET \/upload\/unix\/file\.bin HTTP\/1\.1" 200 \d+ .* upstream=unix:\S+hfs\.sock/);
    });

    it('carries a tus upload (POST, PATCH, HEAD)', async () => {
      const headers = { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${await grantFor(server)}` };
      const data = randomBytes(1024 * 1024);
      const created = await viaNginx('POST', '/files/', { ...headers, 'Upload-Length': data.length, 'Upload-Metadata': `filename ${Buffer.from('u.bin').toString('base64')}` });
      assert.equal(created.status, 201);
      const location = String(created.headers.location);
      const patched = await viaNginx('PATCH', location, { ...headers, 'Upload-Offset': 0, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': data.length }, data);
      assert.equal(patched.status, 204);
      assert.equal((await viaNginx('HEAD', location, headers)).headers['upload-offset'], String(data.length));
      const got = await viaNginx('GET', String(patched.headers['x-download-url']));
      assert.equal(sha256(got.body), sha256(data));
    });

    it('logs the real client address that nginx forwards over the socket, for fail2ban', async () => {
      const res = await viaNginx('PUT', `/upload/unix/x.txt?v=${'0'.repeat(64)}`, { 'Content-Length': 1 }, Buffer.from('x'), '127.0.0.7');
      assert.equal(res.status, 403);
      assert.match((await server.waitForLog(/auth\.failed .*unix\/x\.txt/)) ?? '', /warn auth\.failed client=127\.0\.0\.7 /);
    });
  });

  describe('npm install -g . from a fresh copy of the repository', function () {
    this.timeout(300_000);
    let source: string;
    let version: string;
    beforeEach(async () => {
      // What a clone of this tree holds: the files git tracks or would track, as they are now.
      source = path.join(dir, 'hmac-file-server');
      const { stdout } = await run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: REPO, maxBuffer: 16 * 1024 * 1024 });
      for (const file of stdout.split('\0').filter(Boolean)) {
        await cp(path.join(REPO, file), path.join(source, file)).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err; // deleted in the working tree
        });
      }
      version = (JSON.parse(await readFile(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
    });

    const install = async (extra: string[]) => {
      const prefix = path.join(dir, 'prefix');
      // The local npm cache only (--prefer-offline): what `npm ci` in this repository already fetched.
      await run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', ...extra, '.'], { cwd: source, timeout: 240_000, maxBuffer: 64 * 1024 * 1024 });
      const command = path.join(prefix, 'bin', 'hmac-file-server');
      const { stdout: printed } = await run(command, ['--version'], { cwd: dir });
      assert.equal(printed, `${version}\n`);
      const { stdout: defaults } = await run(command, ['--print-default-config'], { cwd: dir });
      assert.match(defaults, /^LogFormat = "text"$/m);
      assert.match(defaults, /^StoreDir = "\/var\/lib\/hmac-files"$/m);
      return prefix;
    };

    it('links the folder, installs its dependencies and builds it (prepare)', async () => {
      const prefix = await install([]);
      assert.ok(await isExecutable(path.join(source, 'dist', 'server', 'main.js')));
      assert.ok(await isExecutable(path.join(prefix, 'lib', 'node_modules', 'hmac-file-server', 'dist', 'server', 'main.js')));
    });

    it('with --install-links, installs a copy that works once the folder is gone', async () => {
      const prefix = await install(['--install-links']);
      const installed = path.join(prefix, 'lib', 'node_modules', 'hmac-file-server');
      for (const shipped of ['config.toml', 'nginx/hmac-file-server-unix.conf', 'systemd/hmac-file-server.service', 'logrotate/hmac-file-server', 'fail2ban/filter.d/hmac-auth.conf']) {
        await access(path.join(installed, shipped));
      }
      // Runtime dependencies only in the copy.
      await assert.rejects(access(path.join(installed, 'node_modules', 'typescript')));
      await rm(source, { recursive: true, force: true });
      const { stdout } = await run(path.join(prefix, 'bin', 'hmac-file-server'), ['--version'], { cwd: dir });
      assert.equal(stdout, `${version}\n`);
    });
  });
});
