// Automatic certificates (EnableTLS with ACMEEnabled) through acme-client: for every entry of Hostnames without a
// certificate, or with one that expires within 30 days, a new one is ordered from ACMEDirectoryURL (Let's Encrypt,
// or its staging directory with UseStaging), proved with HTTP-01 on a plain-HTTP listener at ListenIP:ACMEHTTPPort
// (it answers /.well-known/acme-challenge/<token> and nothing else), and stored where server/tls.ts reads it:
// CertDir/<host>/fullchain.pem and privkey.pem (0600), with a fresh key per certificate. The account key is kept in
// CertDir/.acme/account.pem. Registering agrees to the CA's terms of service, as certbot --agree-tos does.
//
// Certificates are checked at start and every 12 hours; the CA is asked only when one is due, so a restart with
// valid certificates in CertDir does not contact it. A failed order is logged with the CA's reason
// (acme.failed host=… cause=…) and retried after 1 min, doubling up to 12 h, while the server keeps serving what
// it has. Until a host has its first certificate, handshakes for it are handled as server/tls.ts says.
//
// acme-client (axios and its crypto back ends, several MiB) is imported by startAcme rather than here, so that a
// server without ACME never loads it.
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import type { Client as AcmeClient } from 'acme-client';
import type { Config } from './config.js';
import type { Logger } from './logger.js';
import { certificateFiles, type TlsContext } from './tls.js';

const DAY = 86_400_000;

export interface AcmeTuning {
  /** Renew a certificate that expires within this; default 30 days. */
  renewBeforeMs?: number;
  /** How often every certificate's expiry is checked; default 12 h. */
  checkEveryMs?: number;
  /** First retry after a failed order; it doubles with every further failure, up to maxBackoffMs. Default 1 min. */
  backoffMs?: number;
  /** Default 12 h. */
  maxBackoffMs?: number;
  /** How acme-client polls an order or challenge that is still pending: first wait, longest wait (default 5 s, 30 s). */
  pollMinMs?: number;
  pollMaxMs?: number;
  /**
   * acme-client's own retries of a request that got no answer, a 5xx or a 429 (default 5, waiting 5 s more each
   * time). This setting is acme-client's and so holds for the whole process.
   */
  requestRetries?: number;
}

export interface AcmeManager {
  /** http://ListenIP:port of the HTTP-01 challenge listener. */
  challengeAddress: string;
  /** Orders host's certificate now (every host's without host), due or not; resolves to whether all succeeded. */
  renewNow(host?: string): Promise<boolean>;
  close(): Promise<void>;
}

type Acme = typeof import('acme-client');

type AcmeConfig = Pick<Config, 'CertDir' | 'Hostnames' | 'ListenIP' | 'ACMEDirectoryURL' | 'UseStaging' | 'ACMEEmail' | 'ACMEHTTPPort' | 'ACMECAFile'>;

export function directoryUrl(acme: Acme, config: Pick<Config, 'ACMEDirectoryURL' | 'UseStaging'>): string {
  if (config.ACMEDirectoryURL !== '') return config.ACMEDirectoryURL;
  return config.UseStaging ? acme.directory.letsencrypt.staging : acme.directory.letsencrypt.production;
}

/**
 * The HTTPS agent of one manager's requests: it trusts ACMECAFile besides the usual roots, and remembers the
 * last socket error. acme-client turns a request that got no answer into "Cannot read properties of undefined
 * (reading 'config')" (publishlab/node-acme-client#101); the socket error is the reason an operator needs.
 */
class CaAgent extends https.Agent {
  lastError: string | undefined;
  override createConnection(...args: Parameters<https.Agent['createConnection']>): ReturnType<https.Agent['createConnection']> {
    const socket = super.createConnection(...args);
    socket?.once('error', (err: NodeJS.ErrnoException) => {
      this.lastError = err.message.includes(err.code ?? ' ') ? err.message : `${err.code ?? 'error'}: ${err.message}`;
    });
    return socket;
  }
}

// acme-client has one axios instance for the whole process, so each manager's agent is attached per request, by
// the origin of the directory it was configured for; nothing else is affected.
const agents = new Map<string, CaAgent>();
let intercepting = false;
function routeThrough(acme: Acme, origin: string, agent: CaAgent): void {
  agents.set(origin, agent);
  if (intercepting) return;
  intercepting = true;
  acme.axios.interceptors.request.use((request) => {
    const agent = request.url === undefined ? undefined : agents.get(originOf(request.url));
    if (agent) request.httpsAgent = agent;
    // A CA that accepts the connection and never answers must not hold the orders forever.
    if (!request.timeout) request.timeout = 60_000;
    return request;
  });
}

function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return '';
  }
}

interface AcmeSettings {
  retryMaxAttempts: number;
}
const settingsOf = (acme: Acme) => (acme.axios.defaults as unknown as { acmeSettings: AcmeSettings }).acmeSettings;

function describe(err: unknown, agent: CaAgent, origin: string): string {
  const message = (err instanceof Error ? err.message : String(err)).replace(/\s+/g, ' ').trim() || 'unknown error';
  if (err instanceof TypeError && /reading 'config'/.test(message)) return `no answer from ${origin}: ${agent.lastError ?? 'the request failed or timed out'}`;
  return message;
}

function duration(ms: number): string {
  return ms < 1000 ? `${ms}ms` : ms < 120_000 ? `${Math.round(ms / 1000)}s` : ms < 7_200_000 ? `${Math.round(ms / 60_000)}m` : `${Math.round(ms / 3_600_000)}h`;
}

async function writeAtomically(file: string, data: string | Buffer, mode: number): Promise<void> {
  const temp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(temp, data, { mode, flag: 'wx' });
    await rename(temp, file);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
}

async function readOrCreateAccountKey(acme: Acme, file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const key = await acme.crypto.createPrivateKey();
  try {
    await writeFile(file, key, { mode: 0o600, flag: 'wx' });
    return key;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return readFile(file);
    throw err;
  }
}

/** The HTTP-01 listener: the key authorization for a known token, 404 for everything else. */
async function listenForChallenges(config: AcmeConfig, tokens: ReadonlyMap<string, string>, logger: Logger): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const token = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]+)$/.exec((req.url ?? '').split('?')[0]!)?.[1];
    const answer = token === undefined ? undefined : tokens.get(token);
    if ((req.method === 'GET' || req.method === 'HEAD') && answer !== undefined) {
      logger.debug('acme.challenge_answered', { client: req.socket.remoteAddress ?? '', token });
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(answer) });
      res.end(req.method === 'HEAD' ? undefined : answer);
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': 10, 'X-Content-Type-Options': 'nosniff' });
    res.end(req.method === 'HEAD' ? undefined : 'not found\n');
  });
  // Nothing here takes long: a validation is one small GET.
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  server.keepAliveTimeout = 5_000;
  server.timeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const hint = err.code === 'EACCES' ? ' (ports below 1024 need root or CAP_NET_BIND_SERVICE)' : '';
      reject(new Error(`cannot listen for ACME HTTP-01 challenges on ${config.ListenIP} port ${config.ACMEHTTPPort}: ${err.code ?? err.message}${hint}`, { cause: err }));
    });
    server.listen({ host: config.ListenIP, port: config.ACMEHTTPPort }, () => resolve());
  });
  server.on('error', (err: NodeJS.ErrnoException) => logger.error('acme.accept_failed', { cause: err.code ?? err.message }));
  return server;
}

interface HostState {
  /** The wait before the next retry after a failure. */
  backoff: number;
  retry?: NodeJS.Timeout;
  queued: boolean;
}

export async function startAcme(config: AcmeConfig, logger: Logger, store: TlsContext, tuning: AcmeTuning = {}): Promise<AcmeManager> {
  const t = { renewBeforeMs: 30 * DAY, checkEveryMs: 12 * 3_600_000, backoffMs: 60_000, maxBackoffMs: 12 * 3_600_000, pollMinMs: 5_000, pollMaxMs: 30_000, ...tuning };
  const { default: acme } = await import('acme-client');
  const acmeSettings = settingsOf(acme);
  const certDir = path.resolve(config.CertDir);
  const directory = directoryUrl(acme, config);
  const origin = originOf(directory);
  const extraCa = config.ACMECAFile === '' ? undefined : await readFile(config.ACMECAFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new Error(`cannot read ACMECAFile ${path.resolve(config.ACMECAFile)}: ${err.code ?? err.message}`, { cause: err });
  });
  const tokens = new Map<string, string>();
  const challenges = await listenForChallenges(config, tokens, logger);
  const agent = new CaAgent({ keepAlive: true, ...(extraCa !== undefined ? { ca: [...tls.rootCertificates, extraCa] } : {}) });
  routeThrough(acme, origin, agent);
  const previousRetries = acmeSettings.retryMaxAttempts;
  if (t.requestRetries !== undefined) acmeSettings.retryMaxAttempts = t.requestRetries;
  const { port } = challenges.address() as AddressInfo;
  const challengeAddress = `http://${config.ListenIP.includes(':') ? `[${config.ListenIP}]` : config.ListenIP}:${port}`;

  // One client per manager; dropped after a failure, since the CA may have forgotten the account (a restart).
  let client: AcmeClient | undefined;
  const clientFor = async (): Promise<AcmeClient> => {
    client ??= new acme.Client({
      directoryUrl: directory,
      accountKey: await readOrCreateAccountKey(acme, path.join(certDir, '.acme', 'account.pem')),
      backoffMin: t.pollMinMs,
      backoffMax: t.pollMaxMs,
    });
    return client;
  };

  let closed = false;
  const states = new Map<string, HostState>(store.hostnames.map((host) => [host, { backoff: t.backoffMs, queued: false }]));
  const due = (host: string) => {
    const served = store.certificate(host);
    return served === undefined || served.notAfter.getTime() - Date.now() < t.renewBeforeMs;
  };

  const issue = async (host: string): Promise<void> => {
    const [key, csr] = await acme.crypto.createCsr({ commonName: host, altNames: [host] });
    const acmeClient = await clientFor();
    const chain = await acmeClient.auto({
      csr,
      ...(config.ACMEEmail !== '' ? { email: config.ACMEEmail } : {}),
      termsOfServiceAgreed: true,
      challengePriority: ['http-01'],
      // acme-client would first fetch the token itself through public DNS: the CA's own check is the one that counts.
      skipChallengeVerification: true,
      challengeCreateFn: (_authz, challenge, keyAuthorization) => {
        tokens.set(challenge.token, keyAuthorization);
        return Promise.resolve();
      },
      challengeRemoveFn: (_authz, challenge) => {
        tokens.delete(challenge.token);
        return Promise.resolve();
      },
    });
    if (closed) throw new Error('stopped before the certificate was stored');
    const files = certificateFiles(certDir, host);
    await mkdir(files.dir, { recursive: true, mode: 0o755 });
    await writeAtomically(files.key, key, 0o600);
    await writeAtomically(files.cert, chain, 0o644);
    await store.reload(host);
    const leaf = new X509Certificate(chain);
    const served = store.certificate(host);
    if (served?.fingerprint !== leaf.fingerprint256) throw new Error(`the issued certificate was stored in ${files.cert} but did not load (see tls.certificate_failed)`);
    logger.info('acme.issued', { host, notAfter: served.notAfter.toISOString() });
  };

  // Orders run one at a time, in the order they were asked for.
  let queue: Promise<unknown> = Promise.resolve();
  const attempt = async (host: string, force: boolean): Promise<boolean> => {
    const state = states.get(host)!;
    state.queued = false;
    clearTimeout(state.retry);
    state.retry = undefined;
    if (closed) return false;
    if (!force && !due(host)) return true;
    agent.lastError = undefined;
    try {
      await issue(host);
      state.backoff = t.backoffMs;
      return true;
    } catch (err) {
      client = undefined;
      if (closed) return false;
      const wait = state.backoff;
      state.backoff = Math.min(wait * 2, t.maxBackoffMs);
      logger.error('acme.failed', { host, cause: describe(err, agent, origin), retryIn: duration(wait) });
      state.retry = setTimeout(() => void enqueue(host, false), wait).unref();
      return false;
    }
  };
  const enqueue = (host: string, force: boolean): Promise<boolean> => {
    states.get(host)!.queued = true;
    const run = queue.then(() => attempt(host, force));
    queue = run.catch(() => undefined);
    return run;
  };
  const check = () => {
    for (const [host, state] of states) {
      if (!state.queued && state.retry === undefined && due(host)) void enqueue(host, false);
    }
  };

  logger.info('acme.started', { directory, challenges: challengeAddress, hosts: store.hostnames.join(',') });
  check();
  const checker = setInterval(check, t.checkEveryMs).unref();

  return {
    challengeAddress,
    renewNow: async (host) => {
      const hosts = host === undefined ? store.hostnames : [host];
      for (const h of hosts) if (!states.has(h)) throw new Error(`${h} is not one of Hostnames`);
      const results = await Promise.all(hosts.map((h) => enqueue(h, true)));
      return results.every(Boolean);
    },
    close: async () => {
      closed = true;
      clearInterval(checker);
      for (const state of states.values()) clearTimeout(state.retry);
      const stopped = new Promise<void>((resolve) => challenges.close(() => resolve()));
      challenges.closeAllConnections();
      await stopped;
      // An order in flight ends at its next step (or when acme-client gives up); waiting for it is bounded.
      await Promise.race([queue, new Promise((resolve) => setTimeout(resolve, 5_000).unref())]);
      if (agents.get(origin) === agent) agents.delete(origin);
      agent.destroy();
      if (t.requestRetries !== undefined) acmeSettings.retryMaxAttempts = previousRetries;
    },
  };
}
