// Assembles the tus door: the counting file store, the locker shared by the library and our finish hook,
// the hooks, @tus/server itself, our gates in front of it, and the sweep of expired staging uploads.
import { AsyncLocalStorage } from 'node:async_hooks';
import type { IncomingMessage } from 'node:http';
import type { Router } from 'express';
import { MemoryLocker, Server as TusServer, EVENTS } from '@tus/server';
import type { Config } from './config.js';
import type { Logger } from './logger.js';
import type { CommitUpload } from '../hooks/commit-upload.js';
import { concatenateFinal } from '../hooks/tus-concat.js';
import { createTusHooks, type TusRequest } from '../hooks/tus-hooks.js';
import { tusRouter } from '../middleware/tus-router.js';
import { grantKey, type Grant } from '../middleware/upload-grant.js';
import type { CommittedFiles } from '../stores/committed-files.js';
import type { FileLayout } from '../stores/file-layout.js';
import type { KeyRing } from '../stores/key-ring.js';
import { CountingFileStore, newTusCounters, sweepTusUploads, type ExpectedChecksum, type TusCounters } from '../stores/tus-store.js';

export interface TusDoor {
  router: Router;
  counters: TusCounters;
  /** Removes expired staging uploads now; also runs on a timer until stop(). */
  sweep(now?: number): Promise<number>;
  stop(): void;
}

export interface TusDoorDeps {
  config: Config;
  logger: Logger;
  keys: KeyRing;
  layout: FileLayout;
  files: CommittedFiles;
  commitUpload: CommitUpload;
}

export function createTusDoor({ config, logger, keys, layout, files, commitUpload }: TusDoorDeps): TusDoor {
  const counters = newTusCounters();
  const checksums = new AsyncLocalStorage<ExpectedChecksum>();
  const store = new CountingFileStore(config.StoreDir, { expirationMs: config.TusUploadExpiry, chunkSize: config.ChunkSize, counters, checksums, keys });
  const locker = new MemoryLocker();
  const grants = new WeakMap<IncomingMessage, Grant>();
  const partials = new WeakSet<IncomingMessage>();
  const hooks = createTusHooks({
    grants,
    partials,
    keys,
    layout,
    store,
    locker,
    commitUpload,
    logger,
    allowedExtensions: config.AllowedExtensions,
    maxUploadSize: config.MaxUploadSize,
    uploadSubDir: config.UploadSubDir,
  });
  const tus = new TusServer({
    path: config.TusPath.slice(0, -1),
    datastore: store,
    locker,
    relativeLocation: true,
    disableTerminationForFinishedUploads: true,
    allowedHeaders: ['Authorization', 'X-HTTP-Method-Override'],
    exposedHeaders: ['X-Download-URL'],
    maxSize: (req) => hooks.maxSize(req as TusRequest),
    onUploadCreate: (req, upload) => hooks.onUploadCreate(req as TusRequest, upload),
    onUploadFinish: (req, upload) => hooks.onUploadFinish(req as TusRequest, upload),
  });
  tus.on(EVENTS.POST_CREATE, () => (counters.created += 1));
  tus.on(EVENTS.POST_FINISH, () => (counters.finished += 1));
  tus.on(EVENTS.POST_TERMINATE, () => (counters.terminated += 1));

  const sweep = (now?: number) => sweepTusUploads(store, config.TusUploadExpiry, logger, now);
  const interval = config.TusUploadExpiry > 0 ? Math.min(config.TusUploadExpiry, 3_600_000) : 0;
  const timer = interval > 0 ? setInterval(() => void sweep(), interval).unref() : undefined;

  return {
    router: tusRouter({
      tus,
      store,
      files,
      grants,
      grantKey: grantKey(config.GrantSecret, config.Secret),
      logger,
      resumableDownloads: config.ResumableDownloadsEnabled,
      tusPath: config.TusPath,
      checksums,
      partials,
      concatenate: (req, grant, concatHeader, metadataHeader) =>
        concatenateFinal({ store, hooks, tusPath: config.TusPath, maxUploadSize: config.MaxUploadSize }, req, grant, concatHeader, metadataHeader),
    }),
    counters,
    sweep,
    stop: () => clearInterval(timer),
  };
}
