// Assembles the Express application from explicit dependencies. Middleware order, top to bottom:
// client IP (trusted proxies) → request log → legacy router (slot MACs) → 404 → error handler.
import express, { type Express } from 'express';
import type { Config } from './config.js';
import type { Logger } from './logger.js';
import { createCommitUpload } from '../hooks/commit-upload.js';
import { errorHandler, notFound } from '../middleware/error-handler.js';
import { legacyRouter } from '../middleware/legacy-router.js';
import { requestLog } from '../middleware/request-log.js';
import { hmacVerifiers } from '../middleware/slot-verifier-hmac.js';
import { CommittedFiles } from '../stores/committed-files.js';
import { FileLayout } from '../stores/file-layout.js';

export interface AppDeps {
  config: Config;
  logger: Logger;
  layout: FileLayout;
}

export function createApp({ config, logger, layout }: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('case sensitive routing', true);
  app.set('strict routing', true);
  // X-Forwarded-For is believed only from these peers (Express walks the chain from the socket outwards).
  app.set('trust proxy', [...config.TrustedProxies]);
  app.set('etag', false);

  const files = new CommittedFiles(layout);
  const commitUpload = createCommitUpload({ layout, logger, allowedExtensions: config.AllowedExtensions });

  app.use(requestLog(logger));
  app.use(
    `/${config.UploadSubDir}`,
    legacyRouter({
      layout,
      files,
      commitUpload,
      verifiers: hmacVerifiers(config.Secret),
      logger,
      secret: config.Secret,
      deleteSecret: config.DeleteSecret,
      maxUploadSize: config.MaxUploadSize,
      allowedExtensions: config.AllowedExtensions,
      resumableDownloads: config.ResumableDownloadsEnabled,
      chunkSize: config.ChunkSize,
    }),
  );
  app.use(notFound());
  app.use(errorHandler(logger));
  return app;
}
