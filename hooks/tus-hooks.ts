// The tus lifecycle hooks: creation checks (file name, extension, grant binding) and the finish hook that
// sends a completed upload through commitUpload() under that upload's lock (tus hooks run after the
// library released its own lock).
import { syncFile } from '../stores/file-sink.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Request as ExpressRequest } from 'express';
import type { Locker, Upload } from '@tus/utils';

import { HttpError, httpError, toHttp } from '../server/errors.js';
import type { Logger } from '../server/logger.js';
import type { Grant } from '../middleware/upload-grant.js';
import type { CommitUpload } from './commit-upload.js';
import { checkExtension } from './extension-check.js';
import { encodeSlotPath } from '../server/cli-sign.js';
import { clientIp } from '../middleware/request-info.js';
import { newEncryption } from '../stores/at-rest.js';
import type { FileLayout } from '../stores/file-layout.js';
import type { CommittedFiles } from '../stores/storage.js';
import type { KeyRing } from '../stores/key-ring.js';
import { IV_KEY, KEY_ID_KEY, clientMetadata, type CountingFileStore } from '../stores/tus-store.js';
import { checkUploadType } from '../middleware/media-type.js';
import { note } from '../middleware/request-notes.js';
import type { PublicUrl } from '../server/public-url.js';
import type { Quotas, Reservation } from '../server/quotas.js';

/** Metadata keys the server sets; a client sending them has them removed. */
export const OWNER_KEY = 'hfs_owner';
export const TARGET_KEY = 'hfs_target';
export const COMMITTED_KEY = 'hfs_committed';
/** The UTC day the upload was charged to its uploader's quota (hooks/tus-quota.ts); absent: not charged. */
export const CHARGED_KEY = 'hfs_charged';
/** A part of a parallel upload (Upload-Concat: partial): never committed on its own. */
export const PARTIAL_KEY = 'hfs_partial';
/** A final upload (Upload-Concat: final;…): the header's value, normalised, echoed on every HEAD. */
export const CONCAT_KEY = 'hfs_concat';
/** A final upload's partial ids, in order, space-separated: present until it is joined (concatenation-unfinished). */
export const PARTS_KEY = 'hfs_parts';
/** A partial's waiting final uploads, space-separated: whichever instance receives its last byte joins them. */
export const FINALS_KEY = 'hfs_finals';
/** A final upload's size limit (the creating grant's within MaxUploadSize), for a join that happens later. */
export const LIMIT_KEY = 'hfs_limit';

/** A few common types, for naming an upload that came without a filename: "<id>" plus this extension. */
const EXTENSIONS: Readonly<Record<string, string>> = {
  'image/png': '.png',
  'image/jpeg': '.jpg',
  'image/gif': '.gif',
  'image/webp': '.webp',
  'image/heic': '.heic',
  'video/mp4': '.mp4',
  'video/webm': '.webm',
  'audio/mpeg': '.mp3',
  'audio/ogg': '.ogg',
  'audio/mp4': '.m4a',
  'text/plain': '.txt',
  'application/pdf': '.pdf',
  'application/zip': '.zip',
};

/** The name of an upload without a filename: its id, plus the extension of its filetype when it is a common one. */
export function derivedName(id: string, type: string | null | undefined): string {
  const essence = type?.split(';')[0]?.trim().toLowerCase();
  return `${id}${(essence !== undefined && Object.hasOwn(EXTENSIONS, essence) ? EXTENSIONS[essence] : undefined) ?? ''}`;
}

/** The parts of a tus (srvx) request the hooks need: the Node request and response under it. */
export interface TusRequest {
  runtime?: { node?: { req: IncomingMessage; res?: ServerResponse } };
}

function nodeRequestOf(req: TusRequest): IncomingMessage | undefined {
  return req.runtime?.node?.req;
}

export interface TusHookDeps {
  grants: WeakMap<IncomingMessage, Grant>;
  /** Requests that created an Upload-Concat: partial upload (the header is taken off before the library). */
  partials: WeakSet<IncomingMessage>;
  /** The upload each creating request made, so a creation that fails later can remove it. */
  created: WeakMap<IncomingMessage, string>;
  /** The quota charge each creating request made, so a creation that fails before its record exists gives it back. */
  charges: WeakMap<IncomingMessage, Reservation>;
  layout: FileLayout;
  /** Where the default tenant's uploads are committed. */
  files: CommittedFiles;
  store: CountingFileStore;
  keys: KeyRing;
  locker: Locker;
  commitUpload: CommitUpload;
  logger: Logger;
  allowedExtensions: readonly string[];
  maxUploadSize: number;
  uploadSubDir: string;
  /** X-Download-URL as an absolute URL. */
  publicUrl: PublicUrl;
  /** A partial upload received its last byte (final uploads may be waiting for it). */
  onPartialFinished(id: string, req: TusRequest): void;
  /** Quotas: an upload is charged at its creation when its length is known, else at its commit. */
  quotas?: Quotas;
}

/** @tus/server answers a hook's error with its status_code and body; ours carry the same public text. */
export class TusHookError extends Error {
  readonly status_code: number;
  readonly body: string;
  constructor(err: unknown) {
    const error = toHttp(err);
    super(error.message, { cause: err });
    this.status_code = error.status;
    this.body = `${error.message}\n`;
  }
}

export function createTusHooks(deps: TusHookDeps) {
  const grantOf = (req: TusRequest): Grant | undefined => {
    const node = nodeRequestOf(req);
    return node ? deps.grants.get(node) : undefined;
  };

  return {
    /**
     * Tus-Max-Size and the 413 limit: the grant's max_size within MaxUploadSize; both are >= 1, never the
     * library's "0 = no limit". For a PATCH of an upload whose length is deferred (so not charged yet), also
     * what its uploader's quota has room for: it is stopped as its bytes arrive, not only at its commit.
     */
    async maxSize(req: TusRequest, id?: string | null): Promise<number> {
      const grant = grantOf(req);
      const limit = grant ? Math.min(deps.maxUploadSize, grant.maxSize) : deps.maxUploadSize;
      const node = nodeRequestOf(req);
      if (!id || !deps.quotas?.applies(deps.uploadSubDir) || node?.method !== 'PATCH') return limit;
      const record = await deps.store.configstore.get(id).catch(() => undefined);
      if (!record || record.size !== undefined || record.metadata?.[CHARGED_KEY] || record.metadata?.[PARTIAL_KEY]) return limit;
      const user = record.metadata?.[OWNER_KEY] || undefined;
      const room = await deps.quotas.headroom(deps.uploadSubDir, user);
      if (!room) return limit;
      // The bytes this PATCH would bring the upload to, as far as its headers say.
      const declared = Number(node.headers['upload-length'] ?? NaN);
      const reach = Number.isFinite(declared) ? declared : Number(node.headers['upload-offset'] ?? 0) + Number(node.headers['content-length'] ?? 0);
      if (reach > room.bytes) deps.quotas.refuse(room.refusal, { tenant: deps.uploadSubDir, ...(user ? { user } : {}), size: reach, door: 'tus', path: record.metadata?.[TARGET_KEY] ?? id, client: clientIp(node) });
      return Math.max(1, Math.min(limit, room.bytes));
    },

    async onUploadCreate(req: TusRequest, upload: Upload): Promise<{ metadata: Record<string, string | null> }> {
      try {
        const grant = grantOf(req);
        if (!grant) throw httpError('E_MAC_MISSING');
        const client = clientMetadata(upload.metadata) ?? {};
        const type = client.filetype ?? client.type;
        if (type) checkUploadType(type);
        const node = nodeRequestOf(req);
        if (node) deps.created.set(node, upload.id);
        // Encrypted from the first byte on: the key and IV live in the tus record, so every PATCH can seek.
        const encryption = newEncryption(deps.keys);
        const ours = { [OWNER_KEY]: grant.subject, ...(encryption ? { [KEY_ID_KEY]: encryption.stored.keyId, [IV_KEY]: encryption.stored.iv } : {}) };
        // A partial has no name of its own: the final upload that concatenates it is checked like any other.
        if (node && deps.partials.has(node)) return { metadata: { ...client, ...ours, [PARTIAL_KEY]: '1' } };
        // tus 1.0.0, Creation: "The Client MAY supply the Upload-Metadata header [...] The Server MAY decide to
        // ignore or use this information". Without a filename the upload is named after its id.
        const given = client.filename || client.name || undefined;
        const filename = given ?? derivedName(upload.id, type);
        if (filename.includes('/')) throw httpError('E_BAD_PATH');
        if (grant.filename !== undefined && grant.filename !== given) throw httpError('E_SLOT_MISMATCH', { message: 'File name not allowed by this grant' });
        // claim(): a grant's prefix cannot reach into a tenant nested below UploadSubDir.
        const target = deps.layout.claim(`${grant.prefix !== undefined ? `${grant.prefix}/` : ''}${upload.id}/${filename}`);
        if (given !== undefined) {
          checkExtension(deps.allowedExtensions, target);
        } else {
          try {
            checkExtension(deps.allowedExtensions, target);
          } catch {
            // Refused at creation (not after the last byte): the client can send a filename and try again.
            throw httpError('E_BAD_REQUEST', { message: 'Upload-Metadata has no filename, and its filetype gives no allowed extension' });
          }
        }
        // Charged before any byte arrives, when the length is known (a deferred one is charged at the commit).
        const charged = upload.size !== undefined && deps.quotas?.applies(deps.uploadSubDir) ? await deps.quotas.reserve(deps.uploadSubDir, grant.subject, upload.size, { path: target, door: 'tus', ...(node ? { client: clientIp(node) } : {}) }) : undefined;
        if (node && charged) deps.charges.set(node, charged);
        return { metadata: { ...client, ...ours, [TARGET_KEY]: target, ...(charged ? { [CHARGED_KEY]: charged.day } : {}) } };
      } catch (err) {
        throw new TusHookError(err);
      }
    },

    /**
     * A creation failed before its record was written (a full disk): the charge it made has no record to be
     * given back through, so it is given back here.
     */
    async refundCreation(req: TusRequest): Promise<void> {
      const node = nodeRequestOf(req);
      const charged = node ? deps.charges.get(node) : undefined;
      if (!node || !charged) return;
      deps.charges.delete(node);
      await charged.refund();
    },

    async onUploadFinish(req: TusRequest, finished: Upload): Promise<{ headers: Record<string, string> }> {
      // "The Upload-Expires response header indicates the time after which the unfinished upload expires": the
      // router set it for this PATCH while the upload was unfinished.
      const res = req.runtime?.node?.res;
      if (res && !res.headersSent) res.removeHeader('Upload-Expires');
      // The library hands over what it shows clients (store.getUpload); our keys are in the record.
      const record = await deps.store.configstore.get(finished.id);
      if (record?.metadata?.[PARTIAL_KEY]) {
        deps.onPartialFinished(finished.id, req);
        return { headers: {} };
      }
      const lock = deps.locker.newLock(finished.id);
      await lock.lock(new AbortController().signal, () => undefined);
      const node = nodeRequestOf(req) as ExpressRequest | undefined;
      const downloadUrl = (target: string) => {
        const downloadPath = `/${deps.uploadSubDir}/${encodeSlotPath(target)}`;
        return { 'X-Download-URL': node ? deps.publicUrl(node, downloadPath) : downloadPath };
      };
      // Read again under the lock: another request (here, or on another instance sharing the StoreDir) may
      // have committed this upload while this one waited; a commit happens once.
      const current = await deps.store.configstore.get(finished.id).catch(() => undefined);
      const upload = { ...finished, metadata: current?.metadata ?? record?.metadata ?? {} } as Upload;
      try {
        const metadata = upload.metadata ?? {};
        const target = metadata[TARGET_KEY];
        if (target && metadata[COMMITTED_KEY]) return { headers: downloadUrl(target) };
        if (!current) throw httpError('E_NOT_FOUND', { message: 'Upload was removed' });
        if (!target || upload.storage?.path === undefined || upload.size === undefined) throw new Error(`tus upload ${upload.id} lacks its target`);
        if (!metadata[CHARGED_KEY] && deps.quotas?.applies(deps.uploadSubDir)) {
          // Not charged at its creation (its length was not known then): charged now, before it is stored, and
          // recorded, so that a commit that meets a 503 and is tried again is not charged twice.
          const charged = await deps.quotas.reserve(deps.uploadSubDir, metadata[OWNER_KEY] || undefined, upload.size, { path: target, door: 'tus', ...(node ? { client: clientIp(node) } : {}) });
          current.metadata = { ...metadata, [CHARGED_KEY]: charged.day };
          upload.metadata = current.metadata;
          await deps.store.configstore.set(upload.id, current).catch(async (err: unknown) => {
            await charged.refund();
            throw err;
          });
        }
        const encryption = await deps.store.encryptionOf(upload.id);
        // PATCHes are written without a sync of their own; the finished file must be on disk before the link.
        await syncFile(upload.storage.path);
        await deps.commitUpload(deps.files, {
          path: target,
          stagingPath: upload.storage.path,
          keepStaging: true,
          size: upload.size,
          contentType: metadata.filetype || metadata.type || 'application/octet-stream',
          via: 'tus',
          client: node ? clientIp(node) : 'unknown',
          ...(metadata[OWNER_KEY] ? { owner: metadata[OWNER_KEY] } : {}),
          sha256: await deps.store.digestOf(upload.id, upload.size),
          ...(encryption ? { encryption } : {}),
        });
        if (node) note(node, { committed: { size: upload.size, ...(current.creation_date ? { startedAt: Date.parse(current.creation_date) } : {}) } });
        upload.metadata = { ...upload.metadata, [COMMITTED_KEY]: '1' };
        current.metadata = upload.metadata;
        await deps.store.configstore.set(upload.id, current);
        return { headers: downloadUrl(target) };
      } catch (err) {
        // A refused upload (extension, conflict, …) keeps nothing: its staging bytes go too. One that met a
        // passing shortage (503: the scanner, the shared locks) keeps its bytes, and its next HEAD commits it.
        if (toHttp(err).status !== 503) await deps.store.remove(upload.id).catch(() => undefined);
        if (!(err instanceof HttpError)) deps.logger.error('tus.commit_failed', { id: upload.id, cause: err instanceof Error ? err.stack : String(err) });
        throw new TusHookError(err);
      } finally {
        await lock.unlock();
      }
    },
  };
}
