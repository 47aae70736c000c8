// TLS on the public listener (EnableTLS): one certificate per entry of Hostnames, read from
// CertDir/<host>/fullchain.pem and CertDir/<host>/privkey.pem (certbot's live/ layout; ACME writes the same files),
// chosen by SNI. A client that sends no SNI, or a name that is not in Hostnames (or has no certificate yet), gets the
// certificate of the first hostname that has one.
//
// Reloads: the folders are watched (fs.watch; certbot swaps symlinks there), a poll re-reads the files as a fallback
// (a symlink target changed in place, a folder created later, a file system without inotify), and reload() does it
// on demand (SIGHUP, a new ACME certificate). Changes are debounced, since certbot replaces fullchain.pem and
// privkey.pem one after the other. A new context serves new handshakes only: open connections keep theirs. A file
// that is missing, unreadable or broken (not PEM, key not matching the certificate) is logged once and the
// previous certificate of that host stays in use.
//
// Until a host has its first certificate (ACMEEnabled, nothing issued yet) there is no placeholder: while no host has
// a certificate, every handshake is refused (a self-signed stand-in would fail verification just the same, and
// would teach clients to accept a wrong certificate); the plain-HTTP challenge listener of server/acme.ts does not
// depend on it. Start-up with no usable certificate at all and ACME off is an error that names the files.
import { createHash, X509Certificate } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import type { Config } from './config.js';
import { ConfigError } from './config.js';
import type { Logger } from './logger.js';

export interface TlsTuning {
  /** How often the files are re-read whatever the watchers saw; default 60 s. */
  pollMs?: number;
  /** How long a burst of file events is let settle before the files are read; default 500 ms. */
  debounceMs?: number;
  /** fs.watch on the folders (default true); the poll and reload() work without it. */
  watch?: boolean;
}

export interface CertificateFiles {
  dir: string;
  cert: string;
  key: string;
}

/** Where host's certificate lives below certDir. */
export function certificateFiles(certDir: string, host: string): CertificateFiles {
  const dir = path.join(certDir, host);
  return { dir, cert: path.join(dir, 'fullchain.pem'), key: path.join(dir, 'privkey.pem') };
}

export interface ServedCertificate {
  host: string;
  notAfter: Date;
  /** SHA-256 of the leaf certificate, as openssl x509 -fingerprint -sha256 prints it. */
  fingerprint: string;
  subject: string;
}

export interface TlsContext {
  /** For createHttpServer: the SNICallback and, once there is one, the default certificate. */
  readonly serverOptions: tls.TlsOptions;
  readonly hostnames: readonly string[];
  /** The server (an https.Server) whose default certificate, for clients without SNI, follows reloads. */
  attach(server: object): void;
  /** Re-reads the files of host (every host without one); resolves once the new contexts are in use. */
  reload(host?: string): Promise<void>;
  /** What is served for host now, if anything. */
  certificate(host: string): ServedCertificate | undefined;
  /** Stops watching and polling. */
  close(): void;
}

interface Loaded extends ServedCertificate {
  cert: Buffer;
  key: Buffer;
  context: tls.SecureContext;
}

function describe(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.code === 'string' && e.code.startsWith('E') && e.syscall !== undefined) return e.code;
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
}

export interface TlsContextOptions {
  /** ACMEEnabled: a missing certificate is expected (it is being obtained), not an error. */
  acme: boolean;
  tuning?: TlsTuning;
}

export async function createTlsContext(config: Pick<Config, 'CertDir' | 'Hostnames'>, logger: Logger, options: TlsContextOptions): Promise<TlsContext> {
  if (config.Hostnames.length === 0) throw new ConfigError(['Hostnames = []: expected at least one host name when EnableTLS = true (one certificate per name, chosen by SNI)']);
  const hostnames = [...new Set(config.Hostnames)];
  // SNI names are compared without case, as DNS does.
  const byName = new Map(hostnames.map((h) => [h.toLowerCase(), h]));
  const certDir = path.resolve(config.CertDir);
  const tuning = { pollMs: 60_000, debounceMs: 500, watch: true, ...options.tuning };
  const loaded = new Map<string, Loaded>();
  /** The last problem logged per host, so that a poll does not log the same broken file every minute. */
  const problems = new Map<string, { seen: string; cause: string }>();
  let server: tls.Server | undefined;
  let servedDefault: Loaded | undefined;
  let closed = false;

  const defaultEntry = (): Loaded | undefined => {
    for (const host of hostnames) {
      const entry = loaded.get(host);
      if (entry) return entry;
    }
    return undefined;
  };

  const applyDefault = () => {
    const entry = defaultEntry();
    if (!server || !entry || entry === servedDefault) return;
    server.setSecureContext({ cert: entry.cert, key: entry.key });
    servedDefault = entry;
  };

  /** seen tells one broken content from another with the same cause: each is logged once. */
  const report = (host: string, files: CertificateFiles, cause: string, seen = cause) => {
    if (problems.get(host)?.seen === seen) return;
    problems.set(host, { seen, cause });
    const previous = loaded.get(host);
    const fields = { host, cert: files.cert, key: files.key, cause };
    if (previous) logger.error('tls.certificate_failed', { ...fields, keeping: previous.fingerprint, notAfter: previous.notAfter.toISOString() });
    else if (options.acme && cause === 'ENOENT') logger.info('tls.certificate_missing', { ...fields, note: 'ACME obtains it' });
    else logger.error('tls.certificate_failed', { ...fields, note: 'no certificate for this name' });
  };

  const readHost = async (host: string): Promise<void> => {
    const files = certificateFiles(certDir, host);
    let cert: Buffer;
    let key: Buffer;
    try {
      [cert, key] = await Promise.all([readFile(files.cert), readFile(files.key)]);
    } catch (err) {
      return report(host, files, describe(err));
    }
    const current = loaded.get(host);
    if (current && current.cert.equals(cert) && current.key.equals(key)) {
      problems.delete(host);
      return;
    }
    const digest = createHash('sha256').update(cert).update(key).digest('hex');
    if (problems.get(host)?.seen.endsWith(` ${digest}`)) return;
    let entry: Loaded;
    try {
      const context = tls.createSecureContext({ cert, key });
      const leaf = new X509Certificate(cert);
      entry = { host, cert, key, context, notAfter: new Date(leaf.validTo), fingerprint: leaf.fingerprint256, subject: leaf.subject.replace(/\n/g, ', ') };
      if (leaf.checkHost(host) === undefined) logger.warn('tls.certificate_mismatch', { host, cert: files.cert, subject: entry.subject, note: 'the certificate does not name this host' });
    } catch (err) {
      return report(host, files, describe(err), `${describe(err)} ${digest}`);
    }
    loaded.set(host, entry);
    problems.delete(host);
    logger.info('tls.certificate_loaded', { host, notAfter: entry.notAfter.toISOString(), fingerprint: entry.fingerprint, replaced: current ? current.fingerprint : 'none' });
    if (entry.notAfter.getTime() < Date.now()) logger.warn('tls.certificate_expired', { host, cert: files.cert, notAfter: entry.notAfter.toISOString() });
  };

  // Reloads never overlap: each waits for the one before.
  let queue = Promise.resolve();
  const reload = (host?: string): Promise<void> => {
    const run = queue.then(async () => {
      if (closed) return;
      await Promise.all((host === undefined ? hostnames : hostnames.filter((h) => h === host)).map(readHost));
      applyDefault();
    });
    queue = run.catch(() => undefined);
    return run;
  };

  // Watchers: CertDir itself (a host folder created later) and every host folder that exists; a watcher that
  // fails (its folder removed) is dropped and set up again by the next poll.
  const watchers = new Map<string, FSWatcher>();
  let debounce: NodeJS.Timeout | undefined;
  const changed = () => {
    if (closed) return;
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      ensureWatchers();
      void reload();
    }, tuning.debounceMs).unref();
  };
  const ensureWatchers = () => {
    if (!tuning.watch || closed) return;
    for (const dir of [certDir, ...hostnames.map((h) => certificateFiles(certDir, h).dir)]) {
      if (watchers.has(dir)) continue;
      try {
        const watcher = watch(dir, { persistent: false }, changed);
        watcher.on('error', () => {
          watcher.close();
          watchers.delete(dir);
        });
        watchers.set(dir, watcher);
      } catch {
        // Not there (yet): the poll looks again.
      }
    }
  };

  const sni = (servername: string, callback: (err: Error | null, ctx?: tls.SecureContext) => void) => {
    const host = byName.get(servername.toLowerCase().replace(/\.$/, ''));
    const entry = (host === undefined ? undefined : loaded.get(host)) ?? defaultEntry();
    if (entry) callback(null, entry.context);
    else callback(new Error(`no certificate yet for ${servername}`));
  };

  await reload();
  if (loaded.size === 0 && !options.acme) {
    const list = hostnames.map((h) => {
      const files = certificateFiles(certDir, h);
      return `${files.cert} + ${files.key} (${problems.get(h)?.cause ?? 'unusable'})`;
    });
    throw new Error(`EnableTLS = true but no usable certificate, and ACMEEnabled = false: ${list.join('; ')}`);
  }
  ensureWatchers();
  const poller = setInterval(() => {
    ensureWatchers();
    void reload();
  }, tuning.pollMs).unref();

  const first = defaultEntry();
  return {
    serverOptions: { SNICallback: sni, ...(first ? { cert: first.cert, key: first.key } : {}) },
    hostnames,
    attach(target) {
      if (!(target instanceof tls.Server)) throw new TypeError('attach() needs the TLS server created with serverOptions');
      server = target;
      servedDefault = first;
      applyDefault();
    },
    reload,
    certificate(host) {
      const entry = loaded.get(host);
      return entry && { host: entry.host, notAfter: entry.notAfter, fingerprint: entry.fingerprint, subject: entry.subject };
    },
    close() {
      closed = true;
      clearInterval(poller);
      clearTimeout(debounce);
      for (const watcher of watchers.values()) watcher.close();
      watchers.clear();
    },
  };
}
