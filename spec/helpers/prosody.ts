// A real Prosody (Debian's package) whose upload component points at our server, run from a private config so
// tests need no system service, touch nothing in /etc and listen on loopback only. The component is either
// mod_http_upload_external (prosody-modules; Prosody signs ?v=/?v2= MACs) or Prosody's built-in
// mod_http_file_share with http_file_share_base_url (Prosody signs a JWT sent as "Authorization: Bearer").
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ensureDebianPackages } from './debian-packages.js';
import { acceptsConnections, freePort, startDaemon, type Daemon } from './local-daemon.js';
import { startTestServer, type TestServer } from './test-server.js';
import { E2E_PASSWORD } from './xmpp-clients.js';

const run = promisify(execFile);

export const UPLOAD_MODULE = '/usr/lib/prosody/modules/mod_http_upload_external/mod_http_upload_external.lua';

const PROSODY_ITSELF: Record<string, string> = { prosody: 'prosody', prosodyctl: 'prosody', openssl: 'openssl' };

/** What startProsody runs, mapped to the Debian package that provides it. */
export const PROSODY_BINARIES: Record<string, string> = { ...PROSODY_ITSELF, [UPLOAD_MODULE]: 'prosody-modules' };

export const FILE_SHARE_MODULE = '/usr/lib/prosody/modules/mod_http_file_share.lua';

/** The same for the http_file_share mode: the module ships with prosody itself, prosody-modules is not needed. */
export const PROSODY_FILE_SHARE_BINARIES: Record<string, string> = { ...PROSODY_ITSELF, [FILE_SHARE_MODULE]: 'prosody' };

/** `Component "upload.<domain>" "http_upload_external"` (the default when `upload` is left out). */
export interface UploadExternalOptions {
  upload?: 'http_upload_external';
  /** Where slots point: must end in '/' (docs/protocols.md, "URLs"). */
  uploadBaseUrl: string;
  secret: string;
  protocol: 'v1' | 'v2';
  fileSizeLimit: number;
}

/**
 * `Component "upload.<domain>" "http_file_share"` with an external base URL. Prosody 0.12.3 builds the slot URL
 * with LuaSocket's url.parse_path/build_path, so a trailing '/' on baseUrl makes no difference: both give
 * `<baseUrl without '/'>/<slot>/<percent-encoded filename>`. With a base URL set the module neither loads
 * mod_http nor serves or prunes files, so no HTTP listener is needed.
 */
export interface FileShareOptions {
  upload: 'http_file_share';
  baseUrl: string;
  secret: string;
  /** http_file_share_size_limit in bytes (Prosody's default is 10 MiB). */
  sizeLimit: number;
  /** http_file_share_expires_after in seconds, sent as the JWT `expires` claim; Prosody's default is 7 days. */
  expiresAfter?: number;
}

export type ProsodyOptions = UploadExternalOptions | FileShareOptions;

export interface RunningProsody {
  domain: string;
  /** The upload component's JID, `upload.<domain>`. */
  uploadJid: string;
  /** The loopback c2s port (STARTTLS with a self-signed certificate). */
  port: number;
  /** Prosody's log so far (info and above), for a failed test's report. */
  log(): Promise<string>;
  register(user: string, pass: string): Promise<void>;
  stop(): Promise<void>;
}

const DOMAIN = 'example.test';
const READY_TIMEOUT_MS = 15_000;

/** A Lua string literal; control characters, quotes and backslashes become decimal escapes. */
function lua(value: string): string {
  const escape = (c: string) => (c < ' ' || c === '\x7f' || c === '"' || c === '\\' ? `\\${c.charCodeAt(0).toString().padStart(3, '0')}` : c);
  return `"${Array.from(value, escape).join('')}"`;
}

function uploadComponent(options: ProsodyOptions): string {
  const host = lua(`upload.${DOMAIN}`);
  if (options.upload === 'http_file_share') {
    return `Component ${host} "http_file_share"
  http_file_share_base_url = ${lua(options.baseUrl)}
  http_file_share_secret = ${lua(options.secret)}
  http_file_share_size_limit = ${Math.trunc(options.sizeLimit)}
  -- Each user's daily quota defaults to ten times the size limit (counted per slot issued), which a test with a
  -- small limit can reach; keep it out of the way.
  http_file_share_daily_quota = ${Math.trunc(options.sizeLimit) * 100}
${options.expiresAfter === undefined ? '' : `  http_file_share_expires_after = ${Math.trunc(options.expiresAfter)}\n`}`;
  }
  return `Component ${host} "http_upload_external"
  http_upload_external_base_url = ${lua(options.uploadBaseUrl)}
  http_upload_external_secret = ${lua(options.secret)}
  http_upload_external_protocol = ${lua(options.protocol)}
  http_upload_external_file_size_limit = ${Math.trunc(options.fileSizeLimit)}
`;
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

${uploadComponent(options)}`;
}

export async function startProsody(options: ProsodyOptions): Promise<RunningProsody> {
  if (options.upload !== 'http_file_share' && !options.uploadBaseUrl.endsWith('/')) {
    throw new Error(`uploadBaseUrl must end in '/': ${options.uploadBaseUrl}`);
  }
  await ensureDebianPackages(options.upload === 'http_file_share' ? PROSODY_FILE_SHARE_BINARIES : PROSODY_BINARIES);

  const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-prosody-'));
  const configFile = path.join(dir, 'prosody.cfg.lua');
  const logFile = path.join(dir, 'prosody.log');
  let daemon: Daemon | undefined;

  const stop = async (): Promise<void> => {
    await daemon?.stop({ graceMs: 5000 });
    await rm(dir, { recursive: true, force: true });
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

    daemon = startDaemon('prosody', 'prosody', ['-F', '--config', configFile], { logFile });
    await daemon.waitUntilReady(() => acceptsConnections(port), {
      timeoutMs: READY_TIMEOUT_MS,
      pollMs: 100,
      notReady: `prosody did not listen on 127.0.0.1:${port} within ${READY_TIMEOUT_MS} ms`,
    });
    const log = () => readFile(logFile, 'utf8').catch(() => '');
    return { domain: DOMAIN, uploadJid: `upload.${DOMAIN}`, port, log, register, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** What prosodyRig starts for one describe block. */
export interface ProsodyRig {
  server: TestServer;
  prosody: RunningProsody;
  /** A private folder for the files the clients upload. */
  workDir: string;
}

/**
 * Mocha hooks for the calling describe block: before its tests, our server and a Prosody whose upload component
 * component(server) describes, with these users registered (password E2E_PASSWORD); after a failed test, the end
 * of both logs on stderr; after all, everything stopped and removed. Returns a getter for what is running.
 */
export function prosodyRig(component: (server: TestServer) => ProsodyOptions, users: readonly string[]): () => ProsodyRig {
  let server: TestServer | undefined;
  let prosody: RunningProsody | undefined;
  let workDir: string | undefined;

  before(async function () {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'hfs-e2e-'));
    server = await startTestServer({ MaxUploadSize: '50MiB' });
    prosody = await startProsody(component(server));
    for (const user of users) await prosody.register(user, E2E_PASSWORD);
  });

  afterEach(async function () {
    // The server's own account of a failed step is the fastest way to the cause.
    if (this.currentTest?.state === 'failed') {
      console.error(server?.logs.slice(-20).join('\n'));
      console.error((await prosody?.log())?.slice(-3000));
    }
  });

  after(async function () {
    await prosody?.stop();
    await server?.close();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  return () => {
    assert.ok(server && prosody && workDir, 'prosodyRig: its before hook has not run or failed');
    return { server, prosody, workDir };
  };
}
