// Builds everything a running server needs from a Config and starts listening. The CLI and the tests
// both start servers through here, so they run the same wiring.
import { createApp } from './app.js';
import type { Config } from './config.js';
import { createHttpServer, listen, type Listener } from './listen.js';
import type { Logger } from './logger.js';
import { FileLayout } from '../stores/file-layout.js';

export interface RunningServer extends Listener {
  layout: FileLayout;
}

export async function startServer(config: Config, logger: Logger): Promise<RunningServer> {
  const layout = new FileLayout(config.StoreDir, config.UploadSubDir);
  await layout.init();
  const app = createApp({ config, logger, layout });
  const listener = await listen(createHttpServer(app, config), config);
  logger.info('server.listening', { address: listener.address, store: config.StoreDir });
  return { ...listener, layout };
}
