// Debian's nginx running the shipped nginx/hmac-file-server.conf (or another shipped file, such as the unix
// socket variant nginx/hmac-file-server-unix.conf) from a private prefix on loopback, with only the upstream
// (port or socket path), the listen port, the certificate paths and the access_log path (format
// hmac_file_server) replaced, so that a test can also follow that log, rotate it and have nginx reopen it.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ensureDebianPackages } from './debian-packages.js';
import { acceptsConnections, freePort, startDaemon, type Daemon } from './local-daemon.js';

const run = promisify(execFile);
const NGINX_DIR = path.resolve(import.meta.dirname, '../../nginx');
/** The upstream lines of the shipped files, as the test replaces them. */
const TCP_UPSTREAM = 'server 127.0.0.1:8080;';
const UNIX_UPSTREAM = 'server unix:/run/hmac-file-server/hmac-file-server.sock;';
const ACCESS_LOG = /access_log\s+\S+\s+hmac_file_server;/;

export interface RunningNginx {
  port: number;
  dir: string;
  /** Where the shipped access_log line writes. */
  accessLog: string;
  /** The site as nginx runs it. */
  site: string;
  /** `nginx -s reopen` (what logrotate's postrotate does): the log files are opened again by name. */
  reopen(): Promise<void>;
  stop(): Promise<void>;
}

export interface NginxOptions {
  /** Changes to this test's copy of the site (after the replacements), e.g. a smaller client_max_body_size. */
  edit?: (site: string) => string;
  /** A file of nginx/ other than hmac-file-server.conf, e.g. 'hmac-file-server-unix.conf'. */
  shipped?: string;
}

/**
 * The upstream the shipped site's `server …;` line is pointed at: a loopback port, several (one `server` line
 * each, as the README's "Several instances" shows), or a unix socket path.
 */
export type Upstream = number | number[] | { socket: string };

function replaceUpstream(shipped: string, file: string, upstream: Upstream): string {
  const ports = typeof upstream === 'number' ? [upstream] : Array.isArray(upstream) ? upstream : undefined;
  const [line, replacement] = ports ? [TCP_UPSTREAM, ports.map((port) => `server 127.0.0.1:${port};`).join('\n    ')] : [UNIX_UPSTREAM, `server unix:${(upstream as { socket: string }).socket};`];
  if (!shipped.includes(line)) throw new Error(`nginx/${file} has no "${line}" line to point at the test's upstream`);
  return shipped.replace(line, replacement);
}

export async function startNginx(upstream: Upstream, options: NginxOptions = {}): Promise<RunningNginx> {
  await ensureDebianPackages({ nginx: 'nginx-light', openssl: 'openssl' });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-nginx-'));
  let daemon: Daemon | undefined;
  try {
    await mkdir(path.join(dir, 'tmp'));
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=files.example.org', '-keyout', key, '-out', cert]);
    const port = await freePort();
    const accessLog = path.join(dir, 'hmac-file-server.access.log');
    const file = options.shipped ?? 'hmac-file-server.conf';
    const shipped = await readFile(path.join(NGINX_DIR, file), 'utf8');
    if (!ACCESS_LOG.test(shipped)) throw new Error(`nginx/${file} has no "access_log … hmac_file_server;" line`);
    const replaced = replaceUpstream(shipped, file, upstream)
      .replace('listen 443 ssl;', `listen 127.0.0.1:${port} ssl;`)
      .replace('listen [::]:443 ssl;', '')
      .replace(/ssl_certificate\s+\S+;/, `ssl_certificate ${cert};`)
      .replace(/ssl_certificate_key\s+\S+;/, `ssl_certificate_key ${key};`)
      .replace(ACCESS_LOG, `access_log ${accessLog} hmac_file_server;`);
    const site = options.edit ? options.edit(replaced) : replaced;
    await writeFile(path.join(dir, 'site.conf'), site);
    const errorLog = path.join(dir, 'error.log');
    const conf = path.join(dir, 'nginx.conf');
    await writeFile(
      conf,
      [
        ...(process.getuid?.() === 0 ? ['user root;'] : []),
        'daemon off;',
        'worker_processes 1;',
        `pid ${path.join(dir, 'nginx.pid')};`,
        `error_log ${errorLog};`,
        'events {}',
        'http {',
        `  access_log ${path.join(dir, 'other.access.log')};`,
        ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${path.join(dir, 'tmp', t)};`),
        `  include ${path.join(dir, 'site.conf')};`,
        '}',
        '',
      ].join('\n'),
    );
    daemon = startDaemon('nginx', 'nginx', ['-c', conf, '-p', dir], { logFile: errorLog });
    await daemon.waitUntilReady(() => acceptsConnections(port), { timeoutMs: 15_000, pollMs: 50, notReady: 'nginx did not listen within 15 s' });
    const running = daemon;
    return {
      port,
      dir,
      accessLog,
      site,
      reopen: async () => {
        await run('nginx', ['-c', conf, '-p', dir, '-s', 'reopen'], { timeout: 10_000 });
      },
      stop: async () => {
        await running.stop({ graceMs: 5000 });
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await daemon?.stop({ graceMs: 2000 });
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
