// A real Prosody (Debian's package) with mod_http_upload_external pointed at our server, run from a private
// config so tests need no system service, touch nothing in /etc and listen on loopback only.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { ensureDebianPackages } from './debian-packages.js';

const run = promisify(execFile);

export const UPLOAD_MODULE = '/usr/lib/prosody/modules/mod_http_upload_external/mod_http_upload_external.lua';

/** What startProsody runs, mapped to the Debian package that provides it. */
export const PROSODY_BINARIES: Record<string, string> = {
  prosody: 'prosody',
  prosodyctl: 'prosody',
  openssl: 'openssl',
  [UPLOAD_MODULE]: 'prosody-modules',
};

export interface ProsodyOptions {
  /** Where slots point: must end in '/' (PROTOCOL.md, "URLs"). */
  uploadBaseUrl: string;
  secret: string;
  protocol: 'v1' | 'v2';
  fileSizeLimit: number;
}

export interface RunningProsody {
  domain: string;
  /** The loopback c2s port (STARTTLS with a self-signed certificate). */
  port: number;
  register(user: string, pass: string): Promise<void>;
  stop(): Promise<void>;
}

const DOMAIN = 'example.test';
const READY_TIMEOUT_MS = 15_000;

/** Asks the kernel for a free loopback port. Another process could take it before Prosody binds; unlikely. */
export async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', resolve);
  });
  const { port } = probe.address() as net.AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** A Lua string literal; control characters, quotes and backslashes become decimal escapes. */
function lua(value: string): string {
  const escape = (c: string) => (c < ' ' || c === '\x7f' || c === '"' || c === '\\' ? `\\${c.charCodeAt(0).toString().padStart(3, '0')}` : c);
  return `"${Array.from(value, escape).join('')}"`;
}

function configText(dir: string, port: number, options: ProsodyOptions): string {
  return `-- Written by spec/helpers/prosody.ts for one test run.
${process.getuid?.() === 0 ? 'run_as_root = true' : ''}
pidfile = ${lua(path.join(dir, 'prosody.pid'))}
data_path = ${lua(path.join(dir, 'data'))}
certificates = ${lua(path.join(dir, 'certs'))}
log = { info = ${lua(path.join(dir, 'prosody.log'))} }

-- Only the c2s port, only on loopback; every other listener off.
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_interfaces = { "127.0.0.1" }
c2s_ports = { ${port} }
c2s_direct_tls_ports = {}
legacy_ssl_ports = {}
s2s_ports = {}
s2s_direct_tls_ports = {}
component_ports = {}
http_ports = {}
https_ports = {}

-- saslauth + tls: PLAIN only after STARTTLS; disco lets clients find the upload component; offline keeps a
-- message for a recipient whose client has not sent its presence yet.
modules_enabled = { "saslauth", "tls", "disco", "roster", "offline" }
modules_disabled = { "s2s" }
authentication = "internal_plain"
c2s_require_encryption = true
allow_unencrypted_plain_auth = false
allow_registration = false

VirtualHost ${lua(DOMAIN)}

Component ${lua(`upload.${DOMAIN}`)} "http_upload_external"
  http_upload_external_base_url = ${lua(options.uploadBaseUrl)}
  http_upload_external_secret = ${lua(options.secret)}
  http_upload_external_protocol = ${lua(options.protocol)}
  http_upload_external_file_size_limit = ${Math.trunc(options.fileSizeLimit)}
`;
}

async function acceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export async function startProsody(options: ProsodyOptions): Promise<RunningProsody> {
  if (!options.uploadBaseUrl.endsWith('/')) throw new Error(`uploadBaseUrl must end in '/': ${options.uploadBaseUrl}`);
  await ensureDebianPackages(PROSODY_BINARIES);

  const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-prosody-'));
  const configFile = path.join(dir, 'prosody.cfg.lua');
  const logFile = path.join(dir, 'prosody.log');
  let output = '';
  let child: ChildProcess | undefined;
  let exited: Promise<void> | undefined;
  let hasExited = false;

  const stop = async (): Promise<void> => {
    if (child?.pid !== undefined && exited && !hasExited) {
      child.kill('SIGTERM');
      if (!(await Promise.race([exited.then(() => true), sleep(5000, false)]))) {
        child.kill('SIGKILL');
        await exited;
      }
    }
    await rm(dir, { recursive: true, force: true });
  };
  const failure = async (why: string): Promise<Error> => {
    const log = await readFile(logFile, 'utf8').catch(() => '');
    return new Error(`${why}\n--- prosody output ---\n${output}\n--- ${logFile} ---\n${log.slice(-4000)}`);
  };

  try {
    const port = await freePort();
    // Prosody indexes this folder and picks the certificate whose names cover each host.
    const certs = path.join(dir, 'certs');
    await mkdir(path.join(dir, 'data'), { recursive: true });
    await mkdir(certs);
    await run('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-subj', `/CN=${DOMAIN}`, '-addext', `subjectAltName=DNS:${DOMAIN},DNS:upload.${DOMAIN}`,
      '-keyout', path.join(certs, `${DOMAIN}.key`), '-out', path.join(certs, `${DOMAIN}.crt`),
    ]);
    await writeFile(configFile, configText(dir, port, options));

    const register = async (user: string, pass: string): Promise<void> => {
      await run('prosodyctl', ['--config', configFile, 'register', user, DOMAIN, pass]);
    };

    child = spawn('prosody', ['-F', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    const collect = (chunk: Buffer) => {
      output = (output + chunk.toString('utf8')).slice(-8000);
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    const started = child;
    exited = new Promise<void>((resolve) => started.once('exit', () => resolve())).then(() => {
      hasExited = true;
    });
    const spawnError = new Promise<Error>((resolve) => started.once('error', resolve));

    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!(await acceptsConnections(port))) {
      const err = await Promise.race([spawnError, sleep(100, undefined)]);
      if (err) throw await failure(`prosody could not be started: ${err.message}`);
      if (hasExited) throw await failure('prosody exited during startup');
      if (Date.now() > deadline) throw await failure(`prosody did not listen on 127.0.0.1:${port} within ${READY_TIMEOUT_MS} ms`);
    }
    return { domain: DOMAIN, port, register, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
