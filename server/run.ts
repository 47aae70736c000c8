// Builds everything a running server needs from a Config and starts listening. The CLI and the tests
// both start servers through here, so they run the same wiring.
import { createApp, type TenantStore } from './app.js';
import type { TusDoor } from './tus.js';
import type { Config } from './config.js';
import { createHttpServer, listen, type Listener } from './listen.js';
import type { Logger } from './logger.js';
import { tenantsOf } from './tenants.js';
import { FileLayout } from '../stores/file-layout.js';
import { sweepStaging } from '../stores/staging.js';
import { CommittedFiles } from '../stores/committed-files.js';
import { sweepExpired, sweepInterval, type ExpiryCounters } from '../stores/expiry-sweep.js';
import { keyRingFrom } from '../stores/key-ring.js';
import { createScanGate, type ScanGate } from '../hooks/scan.js';
import { ClamdScanner, clamdAddress } from '../hooks/scanner-clamd.js';

export interface RunningServer extends Listener {
  /** Per tenant, longest prefix first; the default tenant (UploadSubDir) is among them. */
  tenants: readonly TenantStore[];
  tus?: TusDoor;
  scan?: ScanGate;
  expiry: { sweep(now?: number): Promise<number>; counters: ExpiryCounters };
}

export async function startServer(config: Config, logger: Logger): Promise<RunningServer> {
  const tenants = await Promise.all(
    tenantsOf(config).map(async (tenant) => {
      const layout = new FileLayout(config.StoreDir, tenant.prefix);
      await layout.init();
      return { tenant, layout };
    }),
  );
  const keys = keyRingFrom(config);
  const scan = config.ClamAVEnabled
    ? createScanGate({
        scanner: new ClamdScanner(clamdAddress(config.ClamAVSocket), config.ClamAVTimeout),
        workers: config.NumScanWorkers,
        queueLimit: config.UploadQueueSize,
        failOpen: config.ClamAVFailOpen,
        healthIntervalMs: config.ClamAVHealthCheckInterval,
        keys,
        logger,
      })
    : undefined;
  const { app, tus } = createApp({ config, logger, tenants, keys, ...(scan ? { scan } : {}) });
  // Staging files that outlived ReadTimeout belong to no request any more (a crash, a kill): sweep them now
  // and then every hour.
  const stagingAge = config.ReadTimeout > 0 ? config.ReadTimeout : 24 * 3_600_000;
  const stagingDir = tenants[0]!.layout.stagingDir;
  const sweep = () => void sweepStaging(stagingDir, stagingAge).then((removed) => removed > 0 && logger.info('staging.swept', { removed }));
  sweep();
  const sweeper = setInterval(sweep, 3_600_000).unref();
  const expiryCounters: ExpiryCounters = { deletions: 0 };
  const expiryDeps = {
    metaDir: tenants[0]!.layout.metaDir,
    versionsDir: tenants[0]!.layout.versionsDir,
    files: new Map(tenants.map(({ tenant, layout }) => [tenant.prefix, new CommittedFiles(layout, keys)])),
    defaultPrefix: config.UploadSubDir,
    fileTtlMs: config.FileTTL,
    logger,
    counters: expiryCounters,
  };
  const expire = (now?: number) => sweepExpired(expiryDeps, now);
  void expire();
  const expirer = setInterval(() => void expire(), sweepInterval(config.FileTTL)).unref();
  const listener = await listen(createHttpServer(app, config), config);
  logger.info('server.listening', {
    address: listener.address,
    store: config.StoreDir,
    prefixes: tenants.map((t) => `/${t.tenant.prefix}/`).join(','),
    ...(tus ? { tus: config.TusPath } : {}),
    encryption: keys.current?.id ?? 'off',
    scanning: config.ClamAVEnabled ? config.ClamAVSocket : 'off',
  });
  if (keys.current?.method === 'xor') logger.warn('encryption.weak', { method: 'xor', note: 'XOR is obfuscation for compatibility, not encryption: use AESEnabled' });
  return {
    ...listener,
    tenants,
    ...(tus ? { tus } : {}),
    ...(scan ? { scan } : {}),
    expiry: { sweep: expire, counters: expiryCounters },
    close: async (graceMs) => {
      tus?.stop();
      scan?.stop();
      clearInterval(sweeper);
      clearInterval(expirer);
      await listener.close(graceMs);
    },
  };
}
