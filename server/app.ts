// Assembles the Express application from explicit dependencies. Middleware order, top to bottom:
// request log (fixes the client IP, trusted proxies) → abuse accounting → security headers → IP lists → rate
// limit → per-client cap behind proxies →
// body gate → tus door at TusPath (grants) → legacy door, routed on the decoded path to the most specific
// tenant prefix (slot signatures) → 404 → error handler.
import express, { type Express } from 'express';
import type { Config } from './config.js';
import type { Logger } from './logger.js';
import type { Tenant } from './tenants.js';
import { createTusDoor, type TusDoor } from './tus.js';
import type { Locks } from './locks.js';
import { publicUrl } from './public-url.js';
import { createCommitUpload, type CommitCounters } from '../hooks/commit-upload.js';
import { errorHandler, notFound } from '../middleware/error-handler.js';
import { legacyRouter } from '../middleware/legacy-router.js';
import { legacyDoor } from '../middleware/legacy-door.js';
import { securityHeaders } from '../middleware/security-headers.js';
import { bodyGate } from '../middleware/body-gate.js';
import { webUploadPage } from '../middleware/web-upload.js';
import type { ConnectionCap } from './connection-cap.js';
import type { Guards } from './guards.js';
import type { Metrics } from './metrics.js';
import { attachAbuseEvents } from '../middleware/request-info.js';
import { requestLog } from '../middleware/request-log.js';
import type { CommittedFiles } from '../stores/storage.js';
import type { FileLayout } from '../stores/file-layout.js';
import type { KeyRing } from '../stores/key-ring.js';
import type { ScanGate } from '../hooks/scan.js';
import type { Dedup } from '../hooks/dedup.js';
import type { AuditLog } from './audit-log.js';
import type { Quotas } from './quotas.js';

export interface TenantStore {
  tenant: Tenant;
  layout: FileLayout;
}

export interface AppDeps {
  config: Config;
  logger: Logger;
  /** Longest prefix first (tenantsOf's order). */
  tenants: readonly TenantStore[];
  /** Encryption at rest: the current key (if on) and every key old files may need. */
  keys: KeyRing;
  /** Committed files of each tenant prefix, in the storage backend. */
  files: ReadonlyMap<string, CommittedFiles>;
  /** Virus scanning inside commitUpload(); absent when ClamAVEnabled is off. */
  scan?: ScanGate;
  /** Deduplication inside commitUpload(); absent when DeduplicationEnabled is off. */
  dedup?: Dedup;
  /** MaxConnectionsPerIP for requests that came through a trusted proxy. */
  cap?: ConnectionCap;
  /** IP lists, rate limits, bans and upload admission. */
  guards: Guards;
  /** MetricsEnabled: told of every request when it ends. */
  metrics?: Metrics;
  /** Where the built upload page is (dist/web), for WebUploadEnabled. */
  webDir: string;
  /** The tus locker and the commit path's locks: in memory, or over Redis for several instances. */
  locks: Locks;
  /** AuditLogFile: commits, deletions and infected uploads. */
  audit?: AuditLog;
  /** When a tenant has a quota: every upload is charged before its body is read. */
  quotas?: Quotas;
}

export interface App {
  app: Express;
  /** What the commit path counts (versions pruned), for the metrics. */
  commits: CommitCounters;
  /** Present when ResumableUploadsEnabled or ChunkedUploadsEnabled. */
  tus?: TusDoor;
}

export function createApp({ config, logger, tenants, keys, files, scan, dedup, cap, guards, metrics, webDir, locks, audit, quotas }: AppDeps): App {
  const app = express();
  app.disable('x-powered-by');
  app.set('case sensitive routing', true);
  app.set('strict routing', true);
  // X-Forwarded-For is believed only from these peers (Express walks the chain from the socket outwards).
  app.set('trust proxy', [...config.TrustedProxies]);
  if (config.UnixSocket) {
    // A unix socket has no peer address, and only what runs on this host can open it (nginx): its first hop
    // is believed like a trusted proxy, the rest of the chain by TrustedProxies as over TCP.
    const overTcp = app.get('trust proxy fn') as (address: string | undefined, hop: number) => boolean;
    app.set('trust proxy', (address: string | undefined, hop: number) => (hop === 0 && address === undefined) || overTcp(address, hop));
  }
  app.set('etag', false);

  const commits: CommitCounters = { versionsPruned: 0 };
  const commitUpload = createCommitUpload({
    logger,
    counters: commits,
    allowedExtensions: config.AllowedExtensions,
    ...(scan ? { scan: scan.stage } : {}),
    ...(config.EnableVersioning ? { maxVersions: config.MaxVersions } : {}),
    ...(dedup ? { dedup } : {}),
    pathLock: locks.paths,
    ...(audit ? { audit } : {}),
  });

  app.use(requestLog(logger, metrics));
  // For load balancers: says the process serves, and nothing else (the full checks are on the metrics port).
  app.get('/healthz', (_req, res) => {
    res.setHeader('Content-Type', 'text/plain; charset=utf-8');
    res.setHeader('Cache-Control', 'no-store');
    res.end('ok\n');
  });
  app.use((req, _res, next) => {
    attachAbuseEvents(req, guards.events);
    next();
  });
  app.use(securityHeaders());
  // IP lists first (refused before any other work), then the rate limit.
  for (const guard of guards.middlewares) app.use(guard);
  if (cap) app.use(cap.perClient);
  app.use(bodyGate());
  if (config.WebUploadEnabled) app.use(webUploadPage({ dir: webDir, path: config.WebUploadPath, tusPath: config.TusPath }));
  let tus: TusDoor | undefined;
  const defaultTenant = tenants.find((t) => t.tenant.prefix === config.UploadSubDir);
  if ((config.ResumableUploadsEnabled || config.ChunkedUploadsEnabled) && defaultTenant) {
    tus = createTusDoor({
      config,
      logger,
      keys,
      layout: defaultTenant.layout,
      files: files.get(defaultTenant.tenant.prefix)!,
      commitUpload,
      admission: guards.admission,
      publicUrl: publicUrl(config.PublicURL),
      locks,
      ...(audit ? { audit } : {}),
      ...(quotas ? { quotas } : {}),
    });
    app.use(config.TusPath.slice(0, -1), tus.router);
  }
  app.use(
    legacyDoor(
      tenants.map(({ tenant, layout }) => ({
        layout,
        router: legacyRouter({
          tenant,
          layout,
          files: files.get(tenant.prefix)!,
          keys,
          commitUpload,
          logger,
          deleteSecret: config.DeleteSecret,
          maxUploadSize: config.MaxUploadSize,
          allowedExtensions: config.AllowedExtensions,
          resumableDownloads: config.ResumableDownloadsEnabled,
          chunkSize: config.ChunkSize,
          stallMs: config.UploadStallTimeout,
          admission: guards.admission,
          versioning: config.EnableVersioning,
          ...(audit ? { audit } : {}),
          ...(quotas ? { quotas } : {}),
        }),
      })),
    ),
  );
  app.use(notFound());
  app.use(errorHandler(logger));
  return tus ? { app, commits, tus } : { app, commits };
}
