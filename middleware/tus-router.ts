// The tus door at TusPath (default /files/): our gates in front of @tus/server, then the library.
// Gates, in order: CORS, X-HTTP-Method-Override, Tus-Resumable (412 with Tus-Version, tus 1.0.0 §
// "Tus-Resumable"), upload id shape, grant (401), owner of the upload (403). GET of a finished upload is
// served by our own download handler (the library's GET can crash the process on an early hang-up).
import type { AsyncLocalStorage } from 'node:async_hooks';
import type { IncomingMessage } from 'node:http';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { Router, type Request, type RequestHandler, type Response } from 'express';
import type { Server as TusServer } from '@tus/server';
import { Metadata, type Locker, type Upload } from '@tus/utils';
import { httpError } from '../server/errors.js';
import type { Logger } from '../server/logger.js';
import { clientIp, logRefusal, requestPath } from './request-info.js';
import { COMMITTED_KEY, CONCAT_KEY, OWNER_KEY, PARTIAL_KEY, TARGET_KEY } from '../hooks/tus-hooks.js';
import type { CommittedFiles } from '../stores/storage.js';
import { deletion, type AuditLog } from '../server/audit-log.js';
import { isWaitingFinal, type Concatenations } from '../hooks/tus-concat.js';
import { CHECKSUM_ALGORITHMS, UPLOAD_ID, clientMetadata, parseChecksum, type CountingFileStore, type ExpectedChecksum } from '../stores/tus-store.js';
import { sendDownload } from './download.js';
import { applyTusCors } from './tus-cors.js';
import { INTEROP_HEADER, interopVersionOf } from './interop.js';
import { PARTIAL_UPLOAD, type IetfUploads } from './ietf-upload.js';
import { admitBody } from './body-gate.js';
import { note } from './request-notes.js';
import type { Admission } from '../server/admission.js';
import type { PublicUrl } from '../server/public-url.js';
import { grantTokenOf, verifyGrant, type Grant } from './upload-grant.js';

export const TUS_VERSION = '1.0.0';
const OVERRIDABLE = new Set(['PATCH', 'DELETE', 'HEAD', 'GET', 'OPTIONS']);

export interface TusRouterDeps {
  /** AuditLogFile: told of every deletion. */
  audit?: AuditLog;
  tus: TusServer;
  store: CountingFileStore;
  files: CommittedFiles;
  grants: WeakMap<IncomingMessage, Grant>;
  grantKey: Uint8Array;
  logger: Logger;
  resumableDownloads: boolean;
  /** TusPath, e.g. "/files/". */
  tusPath: string;
  checksums: AsyncLocalStorage<ExpectedChecksum>;
  partials: WeakSet<IncomingMessage>;
  /** NumWorkers and UploadQueueSize: a PATCH or creation-with-upload body is read only once admitted. */
  admission: Admission;
  /** Final uploads (Upload-Concat: final;…): created, and joined when their partials are finished. */
  concatenations: Concatenations;
  /** The library's locker: a DELETE of a finished upload takes the same lock as its PATCHes and its commit. */
  locker: Locker;
  /** Counts a termination the router does itself (the library counts its own). */
  terminated(): void;
  /** Location as an absolute URL. */
  publicUrl: PublicUrl;
  /** The IETF resumable-upload protocol, for requests with Upload-Draft-Interop-Version. */
  ietf: IetfUploads;
  /** Commits a finished upload (the finish hook), for one whose commit did not happen when its last byte came. */
  finish: (req: Request, res: Response, upload: Upload) => Promise<unknown>;
}

/** Removes a request header before the library sees it (it reads rawHeaders as well as headers). */
function dropHeader(req: IncomingMessage, name: string): void {
  delete req.headers[name];
  for (let i = req.rawHeaders.length - 2; i >= 0; i -= 2) {
    if (req.rawHeaders[i]!.toLowerCase() === name) req.rawHeaders.splice(i, 2);
  }
}

/**
 * What a body's checksum will be checked against: the Upload-Checksum header, or (checksum-trailer) its trailer
 * when the request announces one. tus 1.0.0, Checksum: "If the hash cannot be calculated at the beginning of
 * the upload, it MAY be included as a trailer. [...] Following RFC 7230 they MUST be announced using the
 * Trailer header and are only allowed in chunked transfers."
 */
function expectedChecksumOf(req: Request): ExpectedChecksum | undefined {
  const header = req.get('Upload-Checksum');
  if (header !== undefined) return parseChecksum(header);
  const announced = req.get('Trailer')?.split(',').some((name) => name.trim().toLowerCase() === 'upload-checksum');
  if (!announced) return undefined;
  if (!/(^|,)\s*chunked\s*$/i.test(req.get('Transfer-Encoding') ?? '')) throw httpError('E_BAD_REQUEST', { message: 'An Upload-Checksum trailer needs Transfer-Encoding: chunked' });
  return { trailer: () => req.trailers['upload-checksum'] };
}

/** A plain upload (not a partial, not a final still waiting for its partials) that was not committed. */
function isUncommitted(metadata: Readonly<Record<string, string | null>>): boolean {
  return !metadata[COMMITTED_KEY] && !metadata[PARTIAL_KEY] && !isWaitingFinal(metadata);
}

export function tusRouter(deps: TusRouterDeps): Router {
  const router = Router({ caseSensitive: true, strict: true });

  const corsAndOverride: RequestHandler = (req, res, next) => {
    note(req, { door: 'tus', scheme: 'grant' });
    applyTusCors(req, res);
    // Some proxies and clients only speak GET and POST (tus 1.0.0, "X-HTTP-Method-Override").
    const override = req.get('X-HTTP-Method-Override')?.toUpperCase();
    if (req.method === 'POST' && override && OVERRIDABLE.has(override)) req.method = override;
    if (req.method === 'OPTIONS') {
      res.setHeader('Tus-Checksum-Algorithm', CHECKSUM_ALGORITHMS.join(','));
      // The IETF protocol: "the server MUST include the Accept-Patch header field"; Upload-Limit "SHOULD".
      res.setHeader('Accept-Patch', PARTIAL_UPLOAD);
      res.setHeader('Upload-Limit', deps.ietf.uploadLimit(undefined));
    }
    next();
  };

  const tusResumable: RequestHandler = (req, _res, next) => {
    if (req.method === 'OPTIONS' || req.method === 'GET' || req.get(INTEROP_HEADER) !== undefined) return next();
    // "If the Client's version is not supported by the Server, it MUST respond with 412 Precondition Failed
    // and MUST include the Tus-Version header into the response."
    if (req.get('Tus-Resumable') !== TUS_VERSION) {
      throw httpError('E_PRECONDITION', { message: 'Unsupported or missing Tus-Resumable', headers: { 'Tus-Version': TUS_VERSION, 'Tus-Resumable': TUS_VERSION } });
    }
    next();
  };

  const idOf = (req: Request): string => req.path.slice(1);

  const authenticate = async (req: Request): Promise<Grant> => {
    const check = await verifyGrant(deps.grantKey, grantTokenOf({ authorization: req.get('Authorization') }, req.query));
    if (!check.ok) {
      logRefusal(deps.logger, req, `grant_${check.reason}`);
      throw httpError('E_GRANT', {
        message: check.message,
        headers: { 'WWW-Authenticate': `Bearer realm="hmac-file-server", error="invalid_token", error_description="${check.message}"` },
      });
    }
    deps.grants.set(req, check.grant);
    return check.grant;
  };

  /** Upload-Expires of an unfinished upload (RFC 7231 date), or undefined when it is finished or never expires. */
  const expiresOf = async (id: string, record: Upload): Promise<string | undefined> => {
    const expiration = deps.store.getExpiration();
    if (expiration <= 0 || !record.creation_date || record.metadata?.[COMMITTED_KEY]) return undefined;
    if (record.size !== undefined) {
      const received = await stat(path.join(deps.store.directory, id)).then((s) => s.size, () => undefined);
      if (received === record.size) return undefined;
    }
    return new Date(Date.parse(record.creation_date) + expiration).toUTCString();
  };

  /**
   * tus 1.0.0, Termination: "When receiving a DELETE request for an existing upload the Server SHOULD free
   * associated resources and MUST respond with the 204 No Content status". A finished upload (committed, or a
   * finished partial) is removed here, never by the library, whose disableTerminationForFinishedUploads keeps
   * it from touching committed files: the committed file goes the way of a legacy DELETE (its versions and
   * dedup references too), then the tus record and the staging link.
   */
  const terminateFinished = async (req: Request, id: string): Promise<void> => {
    const lock = deps.locker.newLock(id);
    await lock.lock(new AbortController().signal, () => undefined);
    try {
      const record = await deps.store.configstore.get(id);
      if (!record) throw httpError('E_NOT_FOUND');
      const target = record.metadata?.[TARGET_KEY];
      if (record.metadata?.[COMMITTED_KEY] && target) {
        const removed = await deps.files.remove(target);
        await deps.files.removeAllVersions(target);
        deps.logger.info('upload.deleted', { path: target, via: 'tus', client: clientIp(req) });
        if (removed) deps.audit?.record(deletion(deps.files.prefix, removed, 'tus', clientIp(req)));
      }
      await deps.store.remove(id).catch(() => deps.store.configstore.delete(id));
    } finally {
      await lock.unlock();
    }
    deps.terminated();
  };

  /**
   * A final upload that has not been joined may have all its partials finished by now: a GET or HEAD joins it
   * first (which also finishes one whose partials finished before a restart). Its record afterwards; a join
   * that failed removed it.
   */
  const settled = async (req: Request, id: string): Promise<Upload> => {
    await deps.concatenations.settle(id, { runtime: { node: { req } } }).catch(() => undefined);
    const record = await deps.store.configstore.get(id);
    if (!record) throw httpError('E_NOT_FOUND');
    return record;
  };

  /**
   * HEAD of a final upload still waiting for its partials. tus 1.0.0, Concatenation: "The response to a HEAD
   * request for a final upload SHOULD NOT contain the Upload-Offset header unless the concatenation has been
   * successfully finished."
   */
  const answerWaitingFinal = async (res: Response, id: string, metadata: Readonly<Record<string, string | null>>): Promise<void> => {
    const length = await deps.concatenations.lengthOf(id);
    if (length !== undefined) res.setHeader('Upload-Length', length);
    const shown = clientMetadata(metadata);
    if (shown) res.setHeader('Upload-Metadata', Metadata.stringify(shown));
    res.status(200).set({ 'Tus-Resumable': TUS_VERSION, 'Cache-Control': 'no-store' }).end();
  };

  const gate: RequestHandler = async (req, res, next) => {
    if (req.method === 'OPTIONS') return next();
    const interop = interopVersionOf(req.get(INTEROP_HEADER));
    if (interop === null) throw httpError('E_BAD_REQUEST', { message: `Unsupported ${INTEROP_HEADER}; this server speaks 3 to 8` });
    const id = idOf(req);
    if (id !== '' && !UPLOAD_ID.test(id)) throw httpError('E_NOT_FOUND');
    if (id === '' && req.method !== 'POST') throw httpError('E_METHOD', { headers: { Allow: 'POST, OPTIONS' } });
    let record = id === '' ? undefined : await deps.store.configstore.get(id);
    if (id !== '' && !record) throw httpError('E_NOT_FOUND');
    if (record && isWaitingFinal(record.metadata) && (req.method === 'GET' || req.method === 'HEAD')) record = await settled(req, id);
    const metadata = record?.metadata ?? {};

    if (req.method === 'GET') {
      // A finished upload is public like a legacy GET URL; an unfinished one is nobody's business but its owner's.
      const target = metadata[TARGET_KEY];
      const file = metadata[COMMITTED_KEY] && target ? await deps.files.open(target) : undefined;
      if (file) return sendDownload(req, res, file, { allowRanges: deps.resumableDownloads });
      const grant = await authenticate(req);
      if (metadata[OWNER_KEY] !== grant.subject) throw httpError('E_FORBIDDEN');
      throw httpError('E_NOT_FOUND', { message: 'Upload not finished' });
    }

    const grant = await authenticate(req);
    if (record && metadata[OWNER_KEY] !== grant.subject) {
      logRefusal(deps.logger, req, 'grant_other_subject');
      throw httpError('E_FORBIDDEN');
    }
    // "For all future requests to this URL, the Server SHOULD respond with the 404 Not Found or 410 Gone status."
    if (req.method === 'DELETE' && (metadata[COMMITTED_KEY] || metadata[PARTIAL_KEY])) {
      await terminateFinished(req, id);
      res.status(204).set('Tus-Resumable', TUS_VERSION).end();
      return;
    }
    // tus 1.0.0, Concatenation: "The Server MUST respond with the 403 Forbidden status to PATCH requests against
    // a final upload URL and MUST NOT modify the final or its partial uploads."
    if (req.method === 'PATCH' && metadata[CONCAT_KEY]) throw httpError('E_FORBIDDEN', { message: 'A final upload cannot be patched' });
    if (interop !== undefined) return deps.ietf.handle(req, res, { id, record, grant, version: interop });
    // The staging file of a committed upload is a link to the served file: it must never be written again.
    if (req.method === 'PATCH' && metadata[COMMITTED_KEY]) throw httpError('E_EXISTS', { message: 'Upload already finished' });
    // tus 1.0.0, Expiration: "The Client SHOULD use this header to determine if an upload is still valid before
    // attempting to resume the upload", and it resumes with a HEAD; "This header MUST be included in every PATCH
    // response if the upload is going to expire" (refusals too). The library merges what we set here into its
    // answer; the finish hook takes it off the PATCH that completes the upload.
    if ((req.method === 'HEAD' || req.method === 'PATCH') && record) {
      const expires = await expiresOf(id, record);
      if (expires !== undefined) res.setHeader('Upload-Expires', expires);
    }
    // "Response to HEAD request against partial or final upload MUST include the Upload-Concat header and its
    // value as received in the upload creation request."
    if (req.method === 'HEAD') {
      // Every byte arrived but no commit followed: its instance was killed in between, or the commit met a
      // passing 503. A client resumes with a HEAD, finds nothing left to send and stops: commit it now.
      if (record && isUncommitted(metadata) && record.size !== undefined) {
        // One stat on the way of every resuming HEAD; the upload is read whole only when it is complete.
        if ((await deps.store.received(id)) === record.size) await deps.finish(req, res, await deps.store.getUpload(id));
      }
      const concatValue = metadata[PARTIAL_KEY] ? 'partial' : metadata[CONCAT_KEY];
      if (concatValue) res.setHeader('Upload-Concat', concatValue);
      if (isWaitingFinal(metadata)) return answerWaitingFinal(res, id, metadata);
    }
    // tus 1.0.0: a body (PATCH, or creation-with-upload) "MUST" be application/offset+octet-stream.
    const hasBody = req.method === 'PATCH' || (req.method === 'POST' && Number(req.get('Content-Length') ?? 0) > 0);
    if (hasBody && req.get('Content-Type')?.split(';')[0]?.trim().toLowerCase() !== 'application/offset+octet-stream') {
      throw httpError('E_MEDIA_TYPE', { message: 'Content-Type must be application/offset+octet-stream' });
    }
    const concat = req.get('Upload-Concat');
    if (req.method === 'POST' && concat !== undefined) {
      if (concat.trim() === 'partial') {
        // The library would answer 501 to the header; the hooks know the upload is a partial from here.
        deps.partials.add(req);
        dropHeader(req, 'upload-concat');
        // "The Upload-Concat request and response header MUST be set in both partial and final upload creation
        // requests." The library merges what we set here into its answer.
        res.setHeader('Upload-Concat', 'partial');
      } else {
        const result = await deps.concatenations.create(req, grant, concat, req.get('Upload-Metadata'));
        res.status(201).set({ ...result.headers, Location: deps.publicUrl(req, `${deps.tusPath}${result.id}`), 'Tus-Resumable': TUS_VERSION }).end();
        return;
      }
    }
    next();
  };


  const handOver: RequestHandler = async (req, res) => {
    // The library routes on the full path (Express stripped the mount point) and would take a ?grant= query
    // for part of the upload id.
    req.url = requestPath(req);
    // Refused before the body is admitted or asked for.
    const checksum = req.method === 'PATCH' || req.method === 'POST' ? expectedChecksumOf(req) : undefined;
    const release = await admitBody(deps.admission, req);
    try {
      // The gates passed: a client waiting on Expect: 100-continue may send its body now (the library never
      // answers it, so curl would wait out its whole expect timeout).
      if (req.get('Expect')?.toLowerCase() === '100-continue' && !res.headersSent) res.writeContinue();
      if (checksum !== undefined) {
        await deps.checksums.run(checksum, () => deps.tus.handle(req, res));
      } else {
        await deps.tus.handle(req, res);
      }
    } finally {
      release();
    }
  };

  router.use(corsAndOverride, tusResumable);
  router.all('/{*id}', gate, handOver);
  return router;
}
