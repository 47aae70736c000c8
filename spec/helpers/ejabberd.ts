// A real ejabberd (Debian's package) with mod_http_upload in external mode pointed at our server, run as a
// private Erlang node from a private config: no system service, nothing in /etc or /var/lib touched, loopback only.
// ejabberdctl is not used because it insists on the system config, spool directory and node name.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ensureDebianPackages } from './debian-packages.js';
import { acceptsConnections, freePort, startDaemon, type Daemon } from './local-daemon.js';

const run = promisify(execFile);

/** Where Debian installs ejabberd's and its dependencies' OTP applications (ejabberdctl uses the same). */
const ERL_LIBS = '/usr/lib/x86_64-linux-gnu';

/** What startEjabberd runs, mapped to the Debian package that provides it. */
export const EJABBERD_BINARIES: Record<string, string> = {
  erl: 'erlang-base',
  openssl: 'openssl',
  '/usr/sbin/ejabberdctl': 'ejabberd',
};

export interface EjabberdHost {
  /** The XMPP domain; ejabberd serves the upload component as `upload.<domain>`. */
  domain: string;
  /** mod_http_upload `put_url`: slot paths are appended after a '/', so no trailing slash. */
  putUrl: string;
  getUrl: string;
  /** mod_http_upload `external_secret`: ejabberd signs `?v=` and never stores files itself. */
  secret: string;
}

export interface EjabberdOptions {
  hosts: EjabberdHost[];
  /** mod_http_upload `max_size` in bytes (ejabberd's default is 100 MiB). */
  maxSize?: number;
}

export interface RunningEjabberd {
  /** The loopback c2s port (STARTTLS required, self-signed certificate). */
  port: number;
  register(user: string, domain: string, pass: string): Promise<void>;
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;

/** A YAML scalar: JSON strings are valid YAML and escape everything that matters. */
const yaml = (value: string) => JSON.stringify(value);

/** An Erlang binary literal built from UTF-8 bytes, so no user-supplied text is ever parsed as Erlang. */
const erlBinary = (value: string) => `<<${[...Buffer.from(value, 'utf8')].join(',')}>>`;

function configText(dir: string, port: number, options: EjabberdOptions): string {
  // A host_config `modules` list replaces the global one (checked on 23.01), so each host lists all its modules:
  // disco lets go-sendxmpp find upload.<domain>; offline keeps a message for bob until his client is online.
  const modules = (host: EjabberdHost) => `  ${yaml(host.domain)}:
    modules:
      mod_disco: {}
      mod_roster: {}
      mod_offline: {}
      mod_http_upload:
        put_url: ${yaml(host.putUrl)}
        get_url: ${yaml(host.getUrl)}
        external_secret: ${yaml(host.secret)}
        max_size: ${Math.trunc(options.maxSize ?? 100 * 1024 * 1024)}
        # Unused in external mode; should anything be written, it stays in the temporary directory.
        docroot: ${yaml(path.join(dir, 'upload'))}
`;
  return `# Written by spec/helpers/ejabberd.ts for one test run.
hosts:
${options.hosts.map((h) => `  - ${yaml(h.domain)}`).join('\n')}
loglevel: info
log_rotate_count: 0
certfiles:
  - ${yaml(path.join(dir, 'cert.pem'))}
# Never reach out for certificates: there is no network, and the self-signed one covers every host.
acme:
  auto: false

# Only the c2s port, only on loopback. STARTTLS is required, so SASL PLAIN only ever runs inside TLS.
listen:
  - port: ${port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
    access: c2s

auth_method: internal
auth_password_format: plain
# Nothing leaves this machine: no server-to-server connections in either direction.
s2s_access: none

acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all

# One mod_http_upload per virtual host: each host signs with its own secret and hands out its own prefix.
host_config:
${options.hosts.map(modules).join('')}`;
}

export async function startEjabberd(options: EjabberdOptions): Promise<RunningEjabberd> {
  if (options.hosts.length === 0) throw new Error('startEjabberd needs at least one host');
  for (const host of options.hosts) {
    // mod_http_upload joins put_url and the slot path with '/': a trailing slash would make '//' in every URL.
    if (host.putUrl.endsWith('/') || host.getUrl.endsWith('/')) throw new Error(`put_url and get_url must not end in '/': ${host.putUrl} ${host.getUrl}`);
  }
  await ensureDebianPackages(EJABBERD_BINARIES);

  const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-ejabberd-'));
  const logFile = path.join(dir, 'ejabberd.log');
  const id = randomBytes(6).toString('hex');
  const node = `hfs-ejabberd-${id}@localhost`;
  const cookie = randomBytes(16).toString('hex');
  // Both our node and the short-lived control nodes: the distribution port on loopback only, and if no epmd
  // runs yet, the one erl starts listens on loopback only too. An epmd that is already running is shared
  // with other Erlang software on this machine and is left alone (it outlives us either way).
  const erlEnv = { ...process.env, HOME: dir, ERL_LIBS, ERL_EPMD_ADDRESS: '127.0.0.1' };
  const loopbackDist = ['-kernel', 'inet_dist_use_interface', '{127,0,0,1}'];
  let daemon: Daemon | undefined;
  let controlCalls = 0;

  /** Runs `M:F(Args)` on the node from a hidden, short-lived node and returns what it printed (`~p`). */
  const rpc = async (module: string, fn: string, args: string): Promise<string> => {
    const control = `hfs-ctl-${id}-${++controlCalls}@localhost`;
    const expr = `try R = rpc:call('${node}', ${module}, ${fn}, ${args}, 15000), io:format("~p~n", [R]), halt(0) ` +
      `catch C:E -> io:format(standard_error, "~p:~p~n", [C, E]), halt(1) end.`;
    const { stdout } = await run('erl', ['-sname', control, '-setcookie', cookie, '-hidden', '-noinput', ...loopbackDist, '-eval', expr], {
      env: erlEnv,
      timeout: 30_000,
    });
    return stdout.trim();
  };

  const stop = async (): Promise<void> => {
    // init:stop lets mnesia close its files; the node exits by itself. A node that does not answer is killed.
    await daemon?.stop({ graceMs: STOP_TIMEOUT_MS, ask: () => rpc('init', 'stop', '[]').catch(() => undefined) });
    await rm(dir, { recursive: true, force: true });
  };

  try {
    const port = await freePort();
    await mkdir(path.join(dir, 'db'));
    // ejabberd reads key and certificate from one PEM; the names cover every host and its upload component.
    const names = options.hosts.flatMap((h) => [`DNS:${h.domain}`, `DNS:upload.${h.domain}`]).join(',');
    const key = path.join(dir, 'key.pem');
    const cert = path.join(dir, 'crt.pem');
    await run('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '30',
      '-subj', `/CN=${options.hosts[0]!.domain}`, '-addext', `subjectAltName=${names}`, '-keyout', key, '-out', cert,
    ]);
    await writeFile(path.join(dir, 'cert.pem'), (await readFile(cert, 'utf8')) + (await readFile(key, 'utf8')));
    await writeFile(path.join(dir, 'ejabberd.yml'), configText(dir, port, options));

    const erlArgs = ['-sname', node, '-setcookie', cookie, '-noinput', ...loopbackDist, '-mnesia', 'dir', JSON.stringify(path.join(dir, 'db')), '-s', 'ejabberd'];
    daemon = startDaemon('ejabberd', 'erl', erlArgs, {
      env: { ...erlEnv, EJABBERD_CONFIG_PATH: path.join(dir, 'ejabberd.yml'), EJABBERD_LOG_PATH: logFile },
      logFile,
    });

    // The listener opens while ejabberd is still starting; registration needs the application fully started.
    const ready = async () =>
      (await acceptsConnections(port)) && (await rpc('application', 'which_applications', '[]').catch(() => '')).includes('{ejabberd,');
    await daemon.waitUntilReady(ready, {
      timeoutMs: READY_TIMEOUT_MS,
      pollMs: 200,
      notReady: `ejabberd was not ready on 127.0.0.1:${port} within ${READY_TIMEOUT_MS} ms`,
    });

    const register = async (user: string, domain: string, pass: string): Promise<void> => {
      const result = await rpc('ejabberd_auth', 'try_register', `[${erlBinary(user)}, ${erlBinary(domain)}, ${erlBinary(pass)}]`);
      if (result !== 'ok') throw new Error(`ejabberd could not register ${user}@${domain}: ${result}`);
    };
    return { port, register, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
