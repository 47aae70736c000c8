// The legacy XMPP door of one tenant prefix (default /<UploadSubDir>/), reached through legacyDoor(), which
// has decoded and validated the slot path (docs/protocols.md, "URLs"): PUT with a slot signature
// (v, v2, token query MACs or a file-share JWT), unauthenticated GET/HEAD, Metronome's DELETE, OPTIONS for
// CORS, 405 otherwise.
import { createHash } from 'node:crypto';
import { Router, type Request, type RequestHandler, type Response } from 'express';
import { httpError, type ErrorCode } from '../server/errors.js';
import type { Logger } from '../server/logger.js';
import { clientIp, logRefusal, requestPath } from './request-info.js';
import type { Tenant } from '../server/tenants.js';
import type { CommitUpload } from '../hooks/commit-upload.js';
import { checkExtension } from '../hooks/extension-check.js';
import type { CommittedFiles } from '../stores/storage.js';
import { deletion, type AuditLog } from '../server/audit-log.js';
import type { Quotas } from '../server/quotas.js';
import type { FileLayout } from '../stores/file-layout.js';
import { slotPathOf } from './legacy-door.js';
import { note } from './request-notes.js';
import { checkUploadType } from './media-type.js';
import type { Admission } from '../server/admission.js';
import { newEncryption, cipherFor } from '../stores/at-rest.js';
import type { KeyRing } from '../stores/key-ring.js';
import { receiveToStaging } from '../stores/staging.js';
import { writeBufferFor } from '../stores/file-sink.js';
import { sendDownload } from './download.js';
import { allowedMethods, legacyHeaders } from './legacy-headers.js';
import { HmacQueryVerifier, macMatchesAny, versionsMessage } from './slot-verifier-hmac.js';
import { FileShareJwtVerifier } from './slot-verifier-jwt.js';
import { verifySlot, type SlotGrant, type SlotVerifier } from './slot-verifier.js';

export interface LegacyRouterDeps {
  tenant: Tenant;
  layout: FileLayout;
  files: CommittedFiles;
  keys: KeyRing;
  commitUpload: CommitUpload;
  logger: Logger;
  deleteSecret: string;
  maxUploadSize: number;
  allowedExtensions: readonly string[];
  resumableDownloads: boolean;
  chunkSize: number;
  /** UploadStallTimeout in ms: a body that does not move for this long is cut (0 = never). */
  stallMs: number;
  /** NumWorkers and UploadQueueSize: how many bodies are received at once, how many wait. */
  admission: Admission;
  /** EnableVersioning: a PUT to a taken path keeps the old file as a version instead of a 409. */
  versioning: boolean;
  /** AuditLogFile: told of every deletion. */
  audit?: AuditLog;
  /** Quotas: an upload is charged before its body is read, and refunded when it is not stored. */
  quotas?: Quotas;
  now?: () => Date;
}

const DEFAULT_TYPE = 'application/octet-stream';

function slotVerifiersFor(tenant: Tenant): SlotVerifier[] {
  const verifiers: SlotVerifier[] = [];
  for (const scheme of ['v', 'v2', 'token'] as const) {
    if (tenant.protocols.has(scheme)) verifiers.push(new HmacQueryVerifier(scheme, tenant.secrets, tenant.userDirInPath));
  }
  if (tenant.protocols.has('jwt')) verifiers.push(new FileShareJwtVerifier(tenant.secrets));
  return verifiers;
}

export function legacyRouter(deps: LegacyRouterDeps): Router {
  const { tenant, files, logger } = deps;
  const now = deps.now ?? (() => new Date());
  const deleteEnabled = deps.deleteSecret !== '';
  const allow = allowedMethods({ deleteEnabled });
  const verifiers = slotVerifiersFor(tenant);
  const router = Router({ caseSensitive: true, strict: true });
  router.use(legacyHeaders({ deleteEnabled }));

  const authFailed = (req: Request, reason: string, code: ErrorCode, message?: string) => {
    logRefusal(logger, req, reason);
    return httpError(code, message === undefined ? {} : { message });
  };

  const put: RequestHandler = async (req, res) => {
    const path = slotPathOf(req);
    // Node's parser gives chunked bodies no Content-Length; every scheme signs the length, so one is required.
    const lengthHeader = req.get('Content-Length');
    if (lengthHeader === undefined) throw httpError('E_LENGTH_REQUIRED');
    if (!/^\d+$/.test(lengthHeader)) throw httpError('E_BAD_REQUEST', { message: 'Invalid Content-Length' });
    const size = Number(lengthHeader);
    const requestType = checkUploadType(req.get('Content-Type') ?? DEFAULT_TYPE);

    const result = await verifySlot(verifiers, { path, size, contentType: requestType, query: req.query, headers: req.headers });
    if (result.verdict === 'absent') throw authFailed(req, 'mac_missing', 'E_MAC_MISSING');
    if (result.verdict === 'invalid') throw authFailed(req, result.code.slice(2).toLowerCase(), result.code, result.reason);
    const { grant } = result;
    note(req, { scheme: grant.scheme });
    if (grant.contentType !== undefined) checkUploadType(grant.contentType);
    if (size > deps.maxUploadSize) throw httpError('E_TOO_LARGE', { message: `File too large (limit ${deps.maxUploadSize} bytes)` });
    checkExtension(deps.allowedExtensions, path);
    // Cheap early answer; the placement in commitUpload() is what decides a race.
    if (!deps.versioning && (await files.exists(path))) throw httpError('E_EXISTS');

    // Quotas before the body: a refused upload is answered before its first byte is read.
    const charged = deps.quotas ? await deps.quotas.reserve(tenant.prefix, grant.owner, size, { path, client: clientIp(req), door: 'legacy' }) : undefined;
    try {
      await receiveAndCommit(req, res, path, size, requestType, grant);
    } catch (err) {
      await charged?.refund();
      throw err;
    }
    note(req, { committed: { size } });
    res.status(201).setHeader('Location', requestPath(req));
    res.end();
  };

  const receiveAndCommit = async (req: Request, res: Response, path: string, size: number, requestType: string, grant: SlotGrant): Promise<void> => {
    // NumWorkers: the body is read only once this upload has a place; a waiting client gets its 100 Continue then.
    const gone = new AbortController();
    const onGone = () => gone.abort();
    req.once('close', onGone);
    const release = await deps.admission.admit(gone.signal).finally(() => req.off('close', onGone));
    let staged;
    const digest = createHash('sha256');
    const encryption = newEncryption(deps.keys);
    try {
      if (req.get('Expect')?.toLowerCase() === '100-continue') res.writeContinue();
      // Hashed and (when on) encrypted in the stream: the staging file never holds plaintext of an encrypted upload.
      staged = await receiveToStaging(req, {
        stagingPath: deps.layout.newStagingPath(),
        expectedSize: size,
        highWaterMark: writeBufferFor(deps.chunkSize, deps.admission.state().active),
        stallMs: deps.stallMs,
        onChunk: (chunk) => digest.update(chunk),
        transforms: cipherFor(encryption?.key, encryption?.stored, 0),
        durable: files.durableStaging,
      });
    } finally {
      release();
    }
    await deps.commitUpload(files, {
      path,
      stagingPath: staged.stagingPath,
      size: staged.size,
      contentType: grant.contentType ?? requestType,
      via: `legacy:${grant.scheme}`,
      client: clientIp(req),
      ...(grant.owner !== undefined ? { owner: grant.owner } : {}),
      ...(grant.expiresAt !== undefined ? { expiresAt: grant.expiresAt } : {}),
      sha256: digest.digest('hex'),
      ...(encryption ? { encryption: encryption.stored } : {}),
    });
  };

  // Kept versions: ?versions=<HMAC(secret, "versions\0<path>")> lists them as JSON, and with &id=<version id>
  // serves one. Never without the MAC: an old version may be exactly what its uploader replaced on purpose.
  const versions: RequestHandler = async (req, res) => {
    const path = slotPathOf(req);
    const mac = req.query.versions;
    if (typeof mac !== 'string' || !macMatchesAny(mac, tenant.secrets, versionsMessage(path))) throw authFailed(req, 'versions_mac_invalid', 'E_MAC_INVALID');
    const id = req.query.id;
    if (id === undefined) {
      res.json(await files.listVersions(path));
      return;
    }
    const file = typeof id === 'string' ? await files.openVersion(path, id) : undefined;
    if (!file) throw httpError('E_NOT_FOUND');
    await sendDownload(req, res, file, { allowRanges: deps.resumableDownloads });
  };

  const get: RequestHandler = async (req, res, next) => {
    if (req.query.versions !== undefined) return versions(req, res, next);
    const file = await files.open(slotPathOf(req));
    if (!file) throw httpError('E_NOT_FOUND');
    if (file.meta.expiresAt !== undefined && Date.parse(file.meta.expiresAt) <= now().getTime()) {
      await file.close();
      throw httpError('E_EXPIRED');
    }
    await sendDownload(req, res, file, { allowRanges: deps.resumableDownloads });
  };

  // Metronome: DELETE <url>?token=HMAC(secret, "<path>\0<delete secret>") (docs/protocols.md, "The MAC").
  const del: RequestHandler = async (req, res) => {
    if (!deleteEnabled) throw httpError('E_METHOD', { headers: { Allow: allow } });
    const path = slotPathOf(req);
    const token = req.query.token;
    if (token === undefined) throw authFailed(req, 'mac_missing', 'E_MAC_MISSING');
    if (typeof token !== 'string' || !macMatchesAny(token, tenant.secrets, `${path}\0${deps.deleteSecret}`)) {
      throw authFailed(req, 'mac_invalid', 'E_MAC_INVALID');
    }
    const removed = await files.remove(path);
    if (!removed) throw httpError('E_NOT_FOUND');
    await files.removeAllVersions(path);
    logger.info('upload.deleted', { path, client: clientIp(req) });
    deps.audit?.record(deletion(files.prefix, removed, 'legacy', clientIp(req)));
    res.status(204).end();
  };

  router.options('/*splat', (_req, res) => {
    res.setHeader('Allow', allow);
    res.status(204).end();
  });
  router.put('/*splat', put);
  // Express routes HEAD to the GET handler; sendDownload sends headers only for HEAD.
  router.get('/*splat', get);
  router.delete('/*splat', del);
  router.all('/*splat', () => {
    throw httpError('E_METHOD', { headers: { Allow: allow } });
  });
  return router;
}
