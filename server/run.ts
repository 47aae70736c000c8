// Builds everything a running server needs from a Config and starts listening. The CLI and the tests
// both start servers through here, so they run the same wiring.
import { createApp, type TenantStore } from './app.js';
import type { TusDoor } from './tus.js';
import type { Config } from './config.js';
import { createHttpServer, listen, type Listener } from './listen.js';
import type { Logger } from './logger.js';
import { tenantsOf } from './tenants.js';
import { FileLayout } from '../stores/file-layout.js';
import { keyRingFrom } from '../stores/key-ring.js';

export interface RunningServer extends Listener {
  /** Per tenant, longest prefix first; the default tenant (UploadSubDir) is among them. */
  tenants: readonly TenantStore[];
  tus?: TusDoor;
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
  const { app, tus } = createApp({ config, logger, tenants, keys });
  const listener = await listen(createHttpServer(app, config), config);
  logger.info('server.listening', {
    address: listener.address,
    store: config.StoreDir,
    prefixes: tenants.map((t) => `/${t.tenant.prefix}/`).join(','),
    ...(tus ? { tus: config.TusPath } : {}),
    encryption: keys.current?.id ?? 'off',
  });
  if (keys.current?.method === 'xor') logger.warn('encryption.weak', { method: 'xor', note: 'XOR is obfuscation for compatibility, not encryption: use AESEnabled' });
  return {
    ...listener,
    tenants,
    ...(tus ? { tus } : {}),
    close: async (graceMs) => {
      tus?.stop();
      await listener.close(graceMs);
    },
  };
}
