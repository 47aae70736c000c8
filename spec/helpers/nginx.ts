// Debian's nginx running the shipped nginx/hmac-file-server.conf, with only the upstream port, the listen port
// and the certificate paths replaced, from a private prefix on loopback.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ensureDebianPackages } from './debian-packages.js';
import { acceptsConnections, freePort, startDaemon } from './local-daemon.js';

const run = promisify(execFile);
const SHIPPED = path.resolve(import.meta.dirname, '../../nginx/hmac-file-server.conf');

export interface RunningNginx {
  port: number;
  stop(): Promise<void>;
}

export async function startNginx(upstreamPort: number): Promise<RunningNginx> {
  await ensureDebianPackages({ nginx: 'nginx-light', openssl: 'openssl' });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-nginx-'));
  await mkdir(path.join(dir, 'tmp'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=files.example.org', '-keyout', key, '-out', cert]);
  const port = await freePort();
  const site = (await readFile(SHIPPED, 'utf8'))
    .replace('server 127.0.0.1:8080;', `server 127.0.0.1:${upstreamPort};`)
    .replace('listen 443 ssl;', `listen 127.0.0.1:${port} ssl;`)
    .replace('listen [::]:443 ssl;', '')
    .replace(/ssl_certificate\s+\S+;/, `ssl_certificate ${cert};`)
    .replace(/ssl_certificate_key\s+\S+;/, `ssl_certificate_key ${key};`);
  await writeFile(path.join(dir, 'site.conf'), site);
  const logFile = path.join(dir, 'error.log');
  await writeFile(
    path.join(dir, 'nginx.conf'),
    [
      ...(process.getuid?.() === 0 ? ['user root;'] : []),
      'daemon off;',
      'worker_processes 1;',
      `pid ${path.join(dir, 'nginx.pid')};`,
      `error_log ${logFile};`,
      'events {}',
      'http {',
      `  access_log ${path.join(dir, 'access.log')};`,
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${path.join(dir, 'tmp', t)};`),
      `  include ${path.join(dir, 'site.conf')};`,
      '}',
      '',
    ].join('\n'),
  );
  const daemon = startDaemon('nginx', 'nginx', ['-c', path.join(dir, 'nginx.conf'), '-p', dir], { logFile });
  await daemon.waitUntilReady(() => acceptsConnections(port), { timeoutMs: 15_000, pollMs: 50, notReady: 'nginx did not listen within 15 s' });
  return {
    port,
    stop: async () => {
      await daemon.stop({ graceMs: 5000 });
      await rm(dir, { recursive: true, force: true });
    },
  };
}
