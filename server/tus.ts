// Assembles the tus door: the counting file store, the locker shared by the library and our finish hook,
// the hooks, @tus/server itself, our gates in front of it, and the sweep of expired staging uploads.
import { AsyncLocalStorage } from 'node:async_hooks';
import type { IncomingMessage } from 'node:http';
import type { Request, Router } from 'express';
import { toHttp } from './errors.js';
import type { Admission } from './admission.js';
import { requestPath } from '../middleware/request-info.js';
import { note } from '../middleware/request-notes.js';
import { Server as TusServer, EVENTS } from '@tus/server';
import type { Upload } from '@tus/utils';
import type { Locks } from './locks.js';
import type { Config } from './config.js';
import type { PublicUrl } from './public-url.js';
import type { Logger } from './logger.js';
import type { CommitUpload } from '../hooks/commit-upload.js';
import { Concatenations } from '../hooks/tus-concat.js';
import { createTusHooks, type TusRequest } from '../hooks/tus-hooks.js';
import { tusRouter } from '../middleware/tus-router.js';
import { ietfUploads } from '../middleware/ietf-upload.js';
import { grantKey, type Grant } from '../middleware/upload-grant.js';
import type { CommittedFiles } from '../stores/storage.js';
import type { AuditLog } from './audit-log.js';
import type { Quotas, Reservation } from './quotas.js';
import { pendingCharge } from '../hooks/tus-quota.js';
import type { FileLayout } from '../stores/file-layout.js';
import type { KeyRing } from '../stores/key-ring.js';
import { CountingFileStore, newTusCounters, sweepTusUploads, type ExpectedChecksum, type TusCounters } from '../stores/tus-store.js';

export interface TusDoor {
  router: Router;
  counters: TusCounters;
  /** Removes expired staging uploads now; also runs on a timer until stop(). */
  sweep(now?: number): Promise<number>;
  /** Final uploads waiting for their partials in this process. */
  waitingFinals(): number;
  stop(): void;
}

export interface TusDoorDeps {
  config: Config;
  logger: Logger;
  keys: KeyRing;
  layout: FileLayout;
  files: CommittedFiles;
  commitUpload: CommitUpload;
  admission: Admission;
  /** Location and X-Download-URL as absolute URLs. */
  publicUrl: PublicUrl;
  /** The tus locker, and the lease that lets one instance at a time sweep. */
  locks: Locks;
  /** AuditLogFile: told of every deletion through tus. */
  audit?: AuditLog;
  /** Quotas: uploads are charged (at creation, or at commit) and a removed unfinished one refunded. */
  quotas?: Quotas;
}

/**
 * Every error the library answers goes through toHttp, like the rest of the server: its status, its public
 * one-line text and its headers (Retry-After); never an errno or a path. The library logs nothing, so 5xx are
 * logged here with their cause.
 */
async function answerTusError(req: TusRequest, err: unknown, deps: { logger: Logger; store: CountingFileStore; created: WeakMap<IncomingMessage, string>; refundCreation: (req: TusRequest) => Promise<void> }): Promise<{ status_code: number; body: string }> {
  const { logger } = deps;
  const error = toHttp(err);
  const node = req.runtime?.node;
  if (node) note(node.req, { code: error.code });
  // A creation that fails after its upload was made (creation-with-upload on a full disk, a body that broke
  // off) answers without Location: nobody can resume that upload, so it must not hold its bytes until expiry.
  const orphan = node ? deps.created.get(node.req) : undefined;
  if (orphan !== undefined && node?.req.method === 'POST') {
    const recorded = await deps.store.configstore.get(orphan).catch(() => undefined);
    // Removing a recorded upload gives its quota charge back (the store's discarded); one never recorded cannot.
    await deps.store.remove(orphan).catch(() => undefined);
    if (!recorded) await deps.refundCreation(req);
  }
  const fields = { status: error.status, method: node?.req.method, path: node ? requestPath(node.req as Request) : undefined };
  if (error.status >= 500) {
    const cause = error.cause ?? err;
    logger.error('request.failed', { ...fields, code: error.code, cause: cause instanceof Error ? (cause.stack ?? cause.message) : String(cause) });
  } else {
    logger.info('request.rejected', { ...fields, code: error.code });
  }
  if (node?.res && !node.res.headersSent) {
    // Set by the router for a creation's answer; a refused creation made no partial upload.
    if (node.req.method === 'POST') node.res.removeHeader('Upload-Concat');
    for (const [name, value] of Object.entries(error.headers)) node.res.setHeader(name, value);
    // An unread body must not be taken for the next request on this connection.
    if (!node.req.complete) node.res.setHeader('Connection', 'close');
  }
  return { status_code: error.status, body: `${error.message}\n` };
}

export function createTusDoor({ config, logger, keys, layout, files, commitUpload, admission, publicUrl, locks, audit, quotas }: TusDoorDeps): TusDoor {
  const counters = newTusCounters();
  const checksums = new AsyncLocalStorage<ExpectedChecksum>();
  const store = new CountingFileStore(config.StoreDir, {
    expirationMs: config.TusUploadExpiry,
    chunkSize: config.ChunkSize,
    activeUploads: () => admission.state().active,
    counters,
    checksums,
    keys,
    stallMs: config.UploadStallTimeout,
    ...(quotas
      ? {
          discarded: async (record: Upload) => {
            const charge = pendingCharge(record, config.UploadSubDir);
            if (charge) await quotas.refund(charge);
          },
        }
      : {}),
  });
  const locker = locks.tus;
  const grants = new WeakMap<IncomingMessage, Grant>();
  const partials = new WeakSet<IncomingMessage>();
  const created = new WeakMap<IncomingMessage, string>();
  const charges = new WeakMap<IncomingMessage, Reservation>();
  const hooks = createTusHooks({
    // concatenations is made below, with these hooks; a partial finishes only once requests arrive.
    onPartialFinished: (id, req) => concatenations.partialFinished(id, req),
    grants,
    partials,
    created,
    charges,
    keys,
    layout,
    files,
    store,
    locker,
    commitUpload,
    ...(quotas ? { quotas } : {}),
    logger,
    allowedExtensions: config.AllowedExtensions,
    maxUploadSize: config.MaxUploadSize,
    uploadSubDir: config.UploadSubDir,
    publicUrl,
  });
  const concatenations = new Concatenations({ store, hooks, logger, tusPath: config.TusPath, publicPath: config.PublicURL === '' ? '' : new URL(config.PublicURL).pathname.replace(/\/$/, ''), maxUploadSize: config.MaxUploadSize, joinLock: locks.paths });
  const tus = new TusServer({
    path: config.TusPath.slice(0, -1),
    datastore: store,
    locker,
    // Absolute: several clients cannot resolve a relative Location (tus 1.0.0 leaves its form open).
    generateUrl: (req, { path, id }) => {
      const node = (req as TusRequest).runtime?.node?.req;
      return node ? publicUrl(node, `${path}/${id}`) : `${path}/${id}`;
    },
    disableTerminationForFinishedUploads: true,
    maxSize: (req, id) => hooks.maxSize(req as TusRequest, id),
    onUploadCreate: (req, upload) => hooks.onUploadCreate(req as TusRequest, upload),
    onUploadFinish: (req, upload) => hooks.onUploadFinish(req as TusRequest, upload),
    onResponseError: (req, err) => answerTusError(req as TusRequest, err, { logger, store, created, refundCreation: (r) => hooks.refundCreation(r) }),
  });
  tus.on(EVENTS.POST_CREATE, () => (counters.created += 1));
  tus.on(EVENTS.POST_FINISH, () => (counters.finished += 1));
  tus.on(EVENTS.POST_TERMINATE, () => (counters.terminated += 1));

  const sweep = async (now?: number) => {
    let removed = 0;
    // Several instances on one StoreDir: one of them sweeps at a time; the others' waiting finals still learn.
    await locks.once('tus-sweep', async () => {
      removed = await sweepTusUploads(store, config.TusUploadExpiry, logger, now);
    });
    await concatenations.forgetGone();
    counters.expired += removed;
    return removed;
  };
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
      admission,
      locker,
      terminated: () => (counters.terminated += 1),
      ...(audit ? { audit } : {}),
      concatenations,
      publicUrl,
      finish: (req, res, upload) => hooks.onUploadFinish({ runtime: { node: { req, res } } }, upload),
      ietf: ietfUploads({
        store,
        hooks,
        locker,
        logger,
        publicUrl,
        tusPath: config.TusPath,
        expirationMs: config.TusUploadExpiry,
        maxUploadSize: config.MaxUploadSize,
        admission,
        counters,
      }),
    }),
    counters,
    sweep,
    waitingFinals: () => concatenations.waitingCount,
    stop: () => clearInterval(timer),
  };
}
