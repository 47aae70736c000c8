// The legacy XMPP door under /<UploadSubDir>/ (XEP-0363 with mod_http_upload_external, ejabberd, Metronome):
// PUT with a slot MAC, unauthenticated GET/HEAD, Metronome's DELETE, OPTIONS for CORS, 405 otherwise.
import { Router, type Request, type RequestHandler } from 'express';
import { httpError } from '../server/errors.js';
import { logAuthFailure, type Logger } from '../server/logger.js';
import type { CommitUpload } from '../hooks/commit-upload.js';
import { checkExtension } from '../hooks/extension-check.js';
import type { CommittedFiles } from '../stores/committed-files.js';
import { decodeSlotPath, type FileLayout } from '../stores/file-layout.js';
import { receiveToStaging } from '../stores/staging.js';
import { sendDownload } from './download.js';
import { allowedMethods, legacyHeaders } from './legacy-headers.js';
import { hmacHex, macMatches, verifySlot } from './slot-verifier-hmac.js';
import type { SlotVerifier } from './slot-verifier.js';

export interface LegacyRouterDeps {
  layout: FileLayout;
  files: CommittedFiles;
  commitUpload: CommitUpload;
  verifiers: readonly SlotVerifier[];
  logger: Logger;
  secret: string;
  deleteSecret: string;
  maxUploadSize: number;
  allowedExtensions: readonly string[];
  resumableDownloads: boolean;
  chunkSize: number;
}

const DEFAULT_TYPE = 'application/octet-stream';

function slotPathOf(req: Request): string {
  // req.path is still percent-encoded: decode exactly once, then validate (PROTOCOL.md, "URLs").
  return decodeSlotPath(req.path.slice(1));
}

function clientOf(req: Request): string {
  return req.ip ?? 'unknown';
}

export function legacyRouter(deps: LegacyRouterDeps): Router {
  const deleteEnabled = deps.deleteSecret !== '';
  const router = Router({ caseSensitive: true, strict: true });
  router.use(legacyHeaders({ deleteEnabled }));

  const authFailed = (req: Request, reason: string, code: 'E_MAC_MISSING' | 'E_MAC_INVALID') => {
    logAuthFailure(deps.logger, { client: clientOf(req), reason, method: req.method, path: req.originalUrl.split('?')[0] ?? '' });
    return httpError(code);
  };

  const put: RequestHandler = async (req, res) => {
    const path = slotPathOf(req);
    // Node's parser gives chunked bodies no Content-Length; the MAC signs the length, so one is required.
    const lengthHeader = req.get('Content-Length');
    if (lengthHeader === undefined) throw httpError('E_LENGTH_REQUIRED');
    if (!/^\d+$/.test(lengthHeader)) throw httpError('E_BAD_REQUEST', { message: 'Invalid Content-Length' });
    const size = Number(lengthHeader);
    const contentType = req.get('Content-Type') ?? DEFAULT_TYPE;

    const { verdict } = verifySlot(deps.verifiers, { path, size, contentType, query: req.query, headers: req.headers });
    if (verdict === 'absent') throw authFailed(req, 'mac_missing', 'E_MAC_MISSING');
    if (verdict === 'invalid') throw authFailed(req, 'mac_invalid', 'E_MAC_INVALID');
    if (size > deps.maxUploadSize) throw httpError('E_TOO_LARGE');
    checkExtension(deps.allowedExtensions, path);
    // Cheap early answer; the link in commitUpload() is what decides a race.
    if (await deps.files.exists(path)) throw httpError('E_EXISTS');

    if (req.get('Expect')?.toLowerCase() === '100-continue') res.writeContinue();
    const staged = await receiveToStaging(req, {
      stagingPath: deps.layout.newStagingPath(),
      expectedSize: size,
      highWaterMark: deps.chunkSize,
    });
    await deps.commitUpload({ path, stagingPath: staged.stagingPath, size: staged.size, contentType, via: 'legacy', client: clientOf(req) });
    res.status(201).setHeader('Location', req.originalUrl.split('?')[0] ?? '');
    res.end();
  };

  const get: RequestHandler = async (req, res) => {
    const file = await deps.files.open(slotPathOf(req));
    if (!file) throw httpError('E_NOT_FOUND');
    await sendDownload(req, res, file, { allowRanges: deps.resumableDownloads });
  };

  // Metronome: DELETE <url>?token=HMAC(secret, "<path>\0<delete secret>") (PROTOCOL.md, "The MAC").
  const del: RequestHandler = async (req, res) => {
    if (!deleteEnabled) throw httpError('E_METHOD', { headers: { Allow: allowedMethods({ deleteEnabled }) } });
    const path = slotPathOf(req);
    const token = req.query.token;
    if (token === undefined) throw authFailed(req, 'mac_missing', 'E_MAC_MISSING');
    if (typeof token !== 'string' || !macMatches(token, hmacHex(deps.secret, `${path}\0${deps.deleteSecret}`))) {
      throw authFailed(req, 'mac_invalid', 'E_MAC_INVALID');
    }
    if (!(await deps.files.remove(path))) throw httpError('E_NOT_FOUND');
    deps.logger.info('upload.deleted', { path, client: clientOf(req) });
    res.status(204).end();
  };

  router.options('/*splat', (_req, res) => {
    res.setHeader('Allow', allowedMethods({ deleteEnabled }));
    res.status(204).end();
  });
  router.put('/*splat', put);
  // Express routes HEAD to the GET handler; sendDownload sends headers only for HEAD.
  router.get('/*splat', get);
  router.delete('/*splat', del);
  router.all('/*splat', () => {
    throw httpError('E_METHOD', { headers: { Allow: allowedMethods({ deleteEnabled }) } });
  });
  return router;
}
