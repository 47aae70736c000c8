// Builds everything a running server needs from a Config and starts listening. The CLI and the tests
// both start servers through here, so they run the same wiring.
import { createApp, type TenantStore } from './app.js';
import type { TusDoor } from './tus.js';
import type { Config } from './config.js';
import { createHttpServer, listen, type Listener } from './listen.js';
import type { Logger } from './logger.js';
import { tenantsOf } from './tenants.js';
import type { FileMetadata } from '../stores/file-metadata.js';
import { FileLayout } from '../stores/file-layout.js';
import { sweepStaging } from '../stores/staging.js';
import { fsStorage } from '../stores/fs-storage.js';
import type { Storage } from '../stores/storage.js';
import { S3Objects, type S3Tuning } from '../stores/s3-objects.js';
import { s3Storage } from '../stores/s3-storage.js';
import { MetadataCache } from '../stores/metadata-cache.js';
import { sweepExpired, sweepInterval, type ExpiryCounters } from '../stores/expiry-sweep.js';
import { keyRingFrom } from '../stores/key-ring.js';
import { createScanGate, type ScanGate } from '../hooks/scan.js';
import { ClamdScanner, clamdAddress } from '../hooks/scanner-clamd.js';
import { createDedup, type Dedup } from '../hooks/dedup.js';
import { EmbeddedDedupIndex } from '../stores/dedup-index-embedded.js';
import { RedisDedupIndex } from '../stores/dedup-index-redis.js';
import { createRedis } from './redis.js';
import { memoryLocks, redisLocks, type Locks } from './locks.js';
import { RedisLeases } from './redis-locks.js';
import type { Redis } from 'ioredis';
import { createGuards, type Guards } from './guards.js';
import { openAuditLog, type AuditLog } from './audit-log.js';
import { createQuotas, hasQuota, type Quotas } from './quotas.js';
import { MemoryQuotaLedger } from './quota-ledger-memory.js';
import { RedisQuotaLedger } from './quota-ledger-redis.js';
import { pendingCharges } from '../hooks/tus-quota.js';
import { createMetrics, type Metrics } from './metrics.js';
import { readiness, startMetricsListener, storeWritable } from './metrics-listener.js';
import { adminApi } from './admin-api.js';
import { addressMatcher } from './address-list.js';
import { createConnectionCap } from './connection-cap.js';
import { createTlsContext, type TlsContext, type TlsTuning } from './tls.js';
import { startAcme, type AcmeManager, type AcmeTuning } from './acme.js';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface RunningServer extends Listener {
  /** Per tenant, longest prefix first; the default tenant (UploadSubDir) is among them. */
  tenants: readonly TenantStore[];
  tus?: TusDoor;
  scan?: ScanGate;
  dedup?: Dedup;
  expiry: { sweep(now?: number): Promise<number>; counters: ExpiryCounters };
  /** IP lists (reloadLists), rate limits, bans, admission, and their counters. */
  guards: Guards;
  /** EnableTLS: the certificates by SNI; reload() re-reads them (SIGHUP). */
  tls?: TlsContext;
  /** EnableTLS with ACMEEnabled: renewNow() orders certificates now. */
  acme?: AcmeManager;
  /** MetricsEnabled: http://ListenIPMetrics:MetricsPort, serving /metrics, /healthz and /readyz. */
  metricsAddress?: string;
  /** AuditLogFile: reopen() after logrotate renamed it (SIGHUP). */
  audit?: AuditLog;
  /** When a tenant has a quota: usage and recounts. */
  quotas?: Quotas;
  metrics?: Metrics;
}

/** One Redis client for everything that shares state through it (locks, the dedup index, the rate limits). */
async function connectRedis(config: Config, logger: Logger): Promise<Redis | undefined> {
  if (!config.RedisEnabled) return undefined;
  const redis = await createRedis(config);
  redis.on('error', (err: Error) => logger.debug('redis.error', { cause: err.message }));
  // Give the first connection a moment, so a healthy Redis serves from the first request; a Redis that is
  // down does not hold the start (uploads are stored without dedup, limits kept in memory, until it answers).
  await Promise.race([new Promise((resolve) => redis.once('ready', resolve)), new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
  return redis;
}

/** Blobs in the storage backend, indexed in Redis (RedisEnabled) or in StoreDir/.hmac/refs. */
async function startDedup(config: Config, logger: Logger, layout: FileLayout, storage: Storage, redis: Redis | undefined, locks: Locks): Promise<{ dedup: Dedup; close: () => Promise<void> }> {
  const hmacDir = path.dirname(layout.metaDir);
  let index;
  if (redis) {
    index = new RedisDedupIndex(redis);
  } else {
    index = new EmbeddedDedupIndex(path.join(hmacDir, 'refs'));
  }
  const dedup = createDedup({
    blobs: storage.blobs(locks.blobs),
    index,
    records: () => storage.records(),
    healthIntervalMs: config.RedisHealthCheckInterval,
    logger,
    startHealthy: !config.RedisEnabled,
  });
  await dedup.check();
  return {
    dedup,
    close: async () => {
      dedup.stop();
      await index.close();
    },
  };
}

/**
 * Quotas, when a tenant has one: counted in Redis (RedisEnabled) or in this process. The counts are made from
 * the stored metadata at start (in Redis: when they are not there, e.g. after Redis restarted empty) and
 * again whenever a check finds them missing or a refund could not be written.
 */
async function startQuotas(config: Config, logger: Logger, tenants: readonly TenantStore[], storage: Storage, redis: Redis | undefined, locks: Locks, audit: AuditLog | undefined, now?: () => Date): Promise<{ quotas: Quotas; close: () => void } | undefined> {
  const limits = new Map(tenants.map(({ tenant }) => [tenant.prefix, tenant.quotas]));
  if (![...limits.values()].some(hasQuota)) return undefined;
  const ledger = redis ? new RedisQuotaLedger(redis) : new MemoryQuotaLedger();
  const quotas = createQuotas({ ledger, limits, defaultPrefix: config.UploadSubDir, logger, ...(audit ? { audit } : {}), ...(now ? { now } : {}) });
  const check = async () => {
    try {
      if (!quotas.stale() && (!(ledger instanceof RedisQuotaLedger) || (await ledger.ready()))) return;
      await locks.once('quota-recount', recount);
    } catch (err) {
      logger.warn('quota.recount_failed', { cause: err instanceof Error ? err.message : String(err) });
    }
  };
  // Uploads in progress that hold a charge count too (the tus uploads charged at creation).
  const recount = async () => quotas.recount(storage.records(), await pendingCharges(tenants[0]!.layout.tusDir, config.UploadSubDir));
  if (ledger instanceof MemoryQuotaLedger) await recount();
  else await check();
  const timer = redis && config.RedisHealthCheckInterval > 0 ? setInterval(() => void check(), config.RedisHealthCheckInterval).unref() : undefined;
  return { quotas, close: () => clearInterval(timer) };
}

/** StorageBackend: the file system under StoreDir, or an S3 bucket. */
async function openStorage(config: Config, logger: Logger, layout: FileLayout, locks: Locks, tuning?: S3Tuning): Promise<Storage> {
  if (config.StorageBackend !== 's3') return fsStorage(layout);
  const objects = await S3Objects.open(
    {
      endpoint: config.S3Endpoint,
      region: config.S3Region,
      bucket: config.S3Bucket,
      accessKeyId: config.S3AccessKeyID,
      secretAccessKey: config.S3SecretAccessKey,
      forcePathStyle: config.S3ForcePathStyle,
    },
    logger,
    tuning,
  );
  // A store that does not answer does not hold the start: uploads get 503 until it does, and /readyz says so.
  await objects.ping().catch((err: unknown) => logger.warn('storage.unavailable', { backend: 's3', bucket: config.S3Bucket, cause: causeOf(err) }));
  return s3Storage(objects, locks.paths);
}

function causeOf(err: unknown): string {
  const cause = err instanceof Error && err.cause !== undefined ? err.cause : err;
  return cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
}

/** InstanceID, or the host name. */
function instanceIdOf(config: Config): string {
  return config.InstanceID || os.hostname();
}

/** The prefixes of the tenants nested below prefix, relative to it. */
function nestedBelow(prefix: string, all: readonly string[]): string[] {
  return all.filter((other) => other.startsWith(`${prefix}/`)).map((other) => other.slice(prefix.length + 1));
}

export interface StartOptions {
  /** The config file the Config came from: the IP lists are re-read from it (IPCheckInterval, SIGHUP). */
  configFile?: string;
  /** Tests: faster polls, back-offs and retries than an operator needs (server/tls.ts, server/acme.ts). */
  tls?: TlsTuning;
  acme?: AcmeTuning;
  s3?: S3Tuning;
  /** Tests: the clock the daily quotas count by. */
  now?: () => Date;
}

export async function startServer(config: Config, logger: Logger, options: StartOptions = {}): Promise<RunningServer> {
  // TLS first: a start-up without a usable certificate fails before anything else is opened.
  const tls = config.EnableTLS ? await createTlsContext(config, logger, { acme: config.ACMEEnabled, ...(options.tls ? { tuning: options.tls } : {}) }) : undefined;
  const prefixes = tenantsOf(config).map((t) => t.prefix);
  const tenants = await Promise.all(
    tenantsOf(config).map(async (tenant) => {
      const layout = new FileLayout(config.StoreDir, tenant.prefix, nestedBelow(tenant.prefix, prefixes));
      await layout.init();
      return { tenant, layout };
    }),
  );
  const keys = keyRingFrom(config);
  // Opened early: a file that cannot be opened stops the start with its reason, as a wrong LogFile does.
  const audit = config.AuditLogFile ? openAuditLog(config.AuditLogFile, logger) : undefined;
  // prom-client (and the OpenTelemetry API it pulls in) only with MetricsEnabled: an unscraped server has no use for it.
  const prom = config.MetricsEnabled ? await import('prom-client') : undefined;
  const metrics = prom ? createMetrics(prom, new prom.Registry(), { defaultTenant: config.UploadSubDir, instanceId: instanceIdOf(config) }) : undefined;
  const scan = config.ClamAVEnabled
    ? createScanGate({
        scanner: new ClamdScanner(clamdAddress(config.ClamAVSocket), config.ClamAVTimeout),
        workers: config.NumScanWorkers,
        queueLimit: config.UploadQueueSize,
        failOpen: config.ClamAVFailOpen,
        healthIntervalMs: config.ClamAVHealthCheckInterval,
        keys,
        logger,
        ...(metrics ? { observeScan: (seconds: number, verdict: 'clean' | 'infected' | 'none') => metrics.scanned(seconds, verdict) } : {}),
      })
    : undefined;
  const redis = await connectRedis(config, logger);
  const locks = redis ? redisLocks(RedisLeases.open(redis, logger)) : memoryLocks();
  const storage = await openStorage(config, logger, tenants[0]!.layout, locks, options.s3);
  const deduplication = config.DeduplicationEnabled ? await startDedup(config, logger, tenants[0]!.layout, storage, redis, locks) : undefined;
  const dedup = deduplication?.dedup;
  const quota = await startQuotas(config, logger, tenants, storage, redis, locks, audit, options.now);
  const quotas = quota?.quotas;
  const removed =
    dedup || quotas
      ? async (meta: FileMetadata) => {
          if (meta.blob && dedup) await dedup.release(meta.blob);
          await quotas?.removed(meta);
        }
      : undefined;
  const cap = createConnectionCap(config.MaxConnectionsPerIP, addressMatcher(config.TrustedProxies));
  const guards = createGuards({ config, logger, ...(redis ? { redis } : {}), ...(options.configFile !== undefined ? { configFile: options.configFile } : {}) });
  // One reader per tenant and one metadata cache for the process, shared by downloads, the doors' removals and
  // the expiry sweep, so whatever removes a file drops it where downloads look.
  const metadataCache = new MetadataCache();
  const readPolicy = { keys, verifyPlaintext: config.VerifyPlaintextDownloads };
  const files = new Map(tenants.map(({ tenant, layout }) => [tenant.prefix, storage.files(layout, readPolicy, { ...(removed ? { removed } : {}), cache: metadataCache })]));
  // dist/web beside dist/server when compiled; the same dist/web when run from the sources (tests, tsx).
  const webDir = fileURLToPath(new URL(import.meta.url.includes('/dist/') ? '../web/' : '../dist/web/', import.meta.url));
  const { app, tus, commits } = createApp({ config, logger, tenants, keys, files, cap, ...(audit ? { audit } : {}), ...(quotas ? { quotas } : {}), guards, webDir, locks, ...(scan ? { scan } : {}), ...(dedup ? { dedup } : {}), ...(metrics ? { metrics } : {}) });
  // Staging files that outlived ReadTimeout belong to no request any more (a crash, a kill): sweep them now
  // and then every hour.
  const stagingAge = config.ReadTimeout > 0 ? config.ReadTimeout : 24 * 3_600_000;
  const stagingDir = tenants[0]!.layout.stagingDir;
  const sweep = () => void sweepStaging(stagingDir, stagingAge).then((removed) => removed > 0 && logger.info('staging.swept', { removed }));
  sweep();
  const sweeper = setInterval(sweep, 3_600_000).unref();
  const expiryCounters: ExpiryCounters = { deletions: 0 };
  const expiryDeps = {
    records: () => storage.records(),
    files,
    removed,
    defaultPrefix: config.UploadSubDir,
    fileTtlMs: config.FileTTL,
    logger,
    counters: expiryCounters,
    ...(audit ? { audit } : {}),
  };
  // Several instances on one StoreDir: one of them sweeps at a time.
  const expire = async (now?: number) => {
    let removed = 0;
    await locks.once('expiry-sweep', async () => {
      removed = await sweepExpired(expiryDeps, now);
    });
    return removed;
  };
  void expire();
  const expirer = setInterval(() => void expire(), sweepInterval(config.FileTTL)).unref();
  const checks = {
    store: storeWritable(stagingDir),
    ...(redis ? { redis: async () => (await redis.ping()) === 'PONG' } : {}),
    ...(scan ? { clamd: () => scan.check() } : {}),
    ...(storage.check ? { [storage.kind]: () => storage.check!() } : {}),
  };
  const admin = config.AdminToken
    ? adminApi({
        token: config.AdminToken,
        files,
        records: () => storage.records(),
        ...(removed ? { removed } : {}),
        ...(quotas ? { quotas } : {}),
        ...(audit ? { audit } : {}),
        health: () => readiness(checks),
        defaultPrefix: config.UploadSubDir,
        logger,
      })
    : undefined;
  // The operators' port: metrics, the admin API, or both.
  const operators =
    metrics || admin
      ? await startMetricsListener({
          ...(metrics ? { registry: metrics.registry } : {}),
          ...(admin ? { admin } : {}),
          host: config.ListenIPMetrics,
          port: config.MetricsPort,
          checks,
          logger,
        })
      : undefined;
  if (metrics) {
    metrics.attach({
      ...(tus ? { tus: tus.counters } : {}),
      ...(scan ? { scan } : {}),
      ...(dedup ? { dedup } : {}),
      ...(redis ? { redisUp: () => redis.status === 'ready' } : {}),
      expiry: expiryCounters,
      commits,
      uploadsInProgress: () => guards.admission.state().active,
      guards: guards.counters,
      connections: cap.counters,
      ...(quotas ? { quotas: { counters: quotas.counters, tenants: tenants.map((t) => t.tenant.prefix).filter((prefix) => quotas.applies(prefix)), usage: (tenant: string) => quotas.usage(tenant) } } : {}),
    });
  }
  const server = createHttpServer(app, config, { onConnection: (socket) => cap.onConnection(socket) }, tls?.serverOptions);
  tls?.attach(server);
  const listener = await listen(server, config);
  let acme: AcmeManager | undefined;
  try {
    acme = tls && config.ACMEEnabled ? await startAcme(config, logger, tls, options.acme) : undefined;
  } catch (err) {
    // The challenge port is taken or privileged: stop what this start opened for TLS, then fail.
    await listener.close(0);
    tls?.close();
    throw err;
  }
  // An accept that fails (no descriptors left) is reported on the server; unheard, it would end the process.
  listener.server.on('error', (err: NodeJS.ErrnoException) => logger.error('server.accept_failed', { cause: err.code ?? err.message }));
  logger.info('server.listening', {
    instance: instanceIdOf(config),
    address: listener.address,
    store: config.StoreDir,
    storage: storage.kind === 's3' ? `s3:${config.S3Bucket}` : 'fs',
    prefixes: tenants.map((t) => `/${t.tenant.prefix}/`).join(','),
    ...(tus ? { tus: config.TusPath } : {}),
    encryption: keys.current?.id ?? 'off',
    scanning: config.ClamAVEnabled ? config.ClamAVSocket : 'off',
    metrics: operators?.address ?? 'off',
  });
  if (keys.current?.method === 'xor') logger.warn('encryption.weak', { method: 'xor', note: 'XOR is obfuscation for compatibility, not encryption: use AESEnabled' });
  return {
    ...listener,
    tenants,
    ...(tus ? { tus } : {}),
    ...(scan ? { scan } : {}),
    ...(dedup ? { dedup } : {}),
    expiry: { sweep: expire, counters: expiryCounters },
    guards,
    ...(operators ? { metricsAddress: operators.address } : {}),
    ...(audit ? { audit } : {}),
    ...(quotas ? { quotas } : {}),
    ...(metrics ? { metrics } : {}),
    ...(tls ? { tls } : {}),
    ...(acme ? { acme } : {}),
    close: async (graceMs) => {
      await acme?.close();
      tls?.close();
      tus?.stop();
      scan?.stop();
      clearInterval(sweeper);
      clearInterval(expirer);
      await listener.close(graceMs);
      await operators?.close();
      await guards.close();
      await deduplication?.close();
      quota?.close();
      locks.close();
      storage.close();
      await audit?.close();
      redis?.disconnect();
    },
  };
}
