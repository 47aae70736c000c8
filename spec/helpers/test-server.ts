// Starts a real server (same wiring as the CLI) on a random loopback port with a private StoreDir, and
// captures its log lines so tests can assert on what an operator would read.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buildConfig, type Config } from '../../server/config.js';
import type { ConfigInput } from '../../server/config-schema.js';
import { memoryLogger } from './memory-logger.js';
import { startServer, type RunningServer, type StartOptions } from '../../server/run.js';

export const TEST_SECRET = 'test-secret';

export interface TestServer {
  /** http://127.0.0.1:PORT */
  url: string;
  /** http://127.0.0.1:PORT/<UploadSubDir> */
  uploadUrl: string;
  config: Config;
  storeDir: string;
  running: RunningServer;
  logs: string[];
  /** The first log line that matches, waiting up to timeoutMs for the server to write it. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string | undefined>;
  close(): Promise<void>;
}

/** What the CLI passes too (configFile), and the faster timings of the TLS and ACME tests. */
export type TestServerOptions = StartOptions;

/** A StoreDir given in overrides is the caller's (a restart on the same files) and is kept on close. */
export async function startTestServer(overrides: Partial<ConfigInput> = {}, options: TestServerOptions = {}): Promise<TestServer> {
  const ownStore = overrides.StoreDir === undefined;
  const storeDir = overrides.StoreDir ?? (await mkdtemp(path.join(os.tmpdir(), 'hfs-store-')));
  let config: Config;
  try {
    ({ config } = buildConfig({ Secret: TEST_SECRET, ListenIP: '127.0.0.1', ListenPort: 0, LogLevel: 'debug', ...overrides, StoreDir: storeDir }, storeDir));
  } catch (err) {
    // A test of a refused configuration must not leave its store folder behind.
    if (ownStore) await rm(storeDir, { recursive: true, force: true });
    throw err;
  }
  const memory = memoryLogger(config.LogLevel);
  const { logger } = memory;
  let running: RunningServer;
  try {
    running = await startServer(config, logger, options);
  } catch (err) {
    logger.close();
    if (ownStore) await rm(storeDir, { recursive: true, force: true });
    throw err;
  }
  return {
    url: running.address,
    uploadUrl: `${running.address}/${config.UploadSubDir}`,
    config,
    storeDir,
    running,
    logs: memory.lines,
    waitForLog: (pattern, timeoutMs) => memory.waitFor(pattern, timeoutMs),
    close: async () => {
      await running.close(0);
      logger.close();
      if (ownStore) await rm(storeDir, { recursive: true, force: true });
    },
  };
}
