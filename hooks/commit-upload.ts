// The one commit path of both front doors (legacy PUT and tus): every finished upload passes these stages in
// order (extension, scan, version, place), and the staging file is gone afterwards whatever happened.
import { rm } from 'node:fs/promises';
import type { Logger } from '../server/logger.js';
import type { FileMetadata, StoredEncryption } from '../stores/file-metadata.js';
import type { CommittedFiles } from '../stores/storage.js';
import { HttpError } from '../server/errors.js';
import type { AuditLog } from '../server/audit-log.js';
import { checkExtension } from './extension-check.js';
import type { Dedup } from './dedup.js';
import { createPathLock, type PathLock } from './path-lock.js';

export interface StagedUpload {
  /** Validated slot path relative to the upload tree. */
  path: string;
  stagingPath: string;
  /** tus keeps its staging file (as a second link) so HEAD still reports the final offset; its sweep removes it. */
  keepStaging?: boolean;
  size: number;
  contentType: string;
  /** Which door it came through, for the log: "legacy" or "tus". */
  via: string;
  client: string;
  owner?: string;
  expiresAt?: Date;
  /** Hex SHA-256 of the plaintext. */
  sha256?: string;
  encryption?: StoredEncryption;
}

export interface CommitDeps {
  logger: Logger;
  allowedExtensions: readonly string[];
  /** The virus scan (ScanGate.stage); absent when ClamAVEnabled is off. */
  scan?: (upload: StagedUpload) => Promise<void>;
  /** EnableVersioning: how many earlier versions of a path to keep. */
  maxVersions?: number;
  /** DeduplicationEnabled: blobs and their index. */
  dedup?: Dedup;
  /** What the metrics read. */
  counters?: CommitCounters;
  /** One commit at a time per path (versioning); across instances when they share Redis. */
  pathLock?: PathLock;
  /** AuditLogFile: told of every commit and every infected upload. */
  audit?: AuditLog;
  now?: () => Date;
}

export interface CommitCounters {
  /** Earlier versions removed because more than MaxVersions were kept. */
  versionsPruned: number;
}

/** Commits a staged upload to files (one tenant's, in the storage backend). */
export type CommitUpload = (files: CommittedFiles, upload: StagedUpload) => Promise<FileMetadata>;

export function createCommitUpload(deps: CommitDeps): CommitUpload {
  const now = deps.now ?? (() => new Date());
  const lockPath = deps.pathLock ?? createPathLock();
  const { maxVersions } = deps;

  const place = async (files: CommittedFiles, from: string, meta: FileMetadata) => {
    if (maxVersions === undefined) return files.place(from, meta);
    // The previous file becomes a version instead of a 409, then the surplus of versions goes.
    await lockPath(`${files.prefix}/${meta.path}`, async () => {
      const kept = await files.keepAsVersion(meta.path);
      try {
        await files.place(from, meta);
      } catch (err) {
        // A refused or failed placement (a full disk, S3 gone) must not cost the file that was there.
        if (kept !== undefined) await files.restoreVersion(meta.path, kept);
        throw err;
      }
      const pruned = await files.pruneVersions(meta.path, maxVersions);
      if (deps.counters) deps.counters.versionsPruned += pruned;
    });
  };

  return async function commitUpload(files, upload) {
    try {
      checkExtension(deps.allowedExtensions, upload.path);
      // via is the door and the signature scheme ("legacy:v2"; "tus").
      const [door = upload.via, scheme] = upload.via.split(':');
      const audited = { tenant: files.prefix, path: upload.path, size: upload.size, door, ...(scheme !== undefined ? { scheme } : {}), client: upload.client, ...(upload.sha256 !== undefined ? { sha256: upload.sha256 } : {}), ...(upload.owner !== undefined ? { user: upload.owner } : {}) };
      try {
        await deps.scan?.(upload);
      } catch (err) {
        if (err instanceof HttpError && err.code === 'E_INFECTED') deps.audit?.record({ action: 'infected', ...audited });
        throw err;
      }
      // With dedup the bytes placed are the blob's (perhaps another upload's, under its own IV).
      const adopted = await deps.dedup?.adopt(upload);
      const encryption = adopted ? adopted.encryption : upload.encryption;
      const meta: FileMetadata = {
        path: upload.path,
        prefix: files.prefix,
        size: upload.size,
        contentType: upload.contentType,
        createdAt: now().toISOString(),
        ...(upload.owner !== undefined ? { owner: upload.owner } : {}),
        ...(upload.expiresAt !== undefined ? { expiresAt: upload.expiresAt.toISOString() } : {}),
        ...(upload.sha256 !== undefined ? { sha256: upload.sha256 } : {}),
        ...(encryption !== undefined ? { encryption } : {}),
        ...(adopted ? { blob: adopted.blob } : {}),
      };
      try {
        await place(files, adopted?.from ?? upload.stagingPath, meta);
      } catch (err) {
        if (adopted) await deps.dedup!.release(adopted.blob);
        throw err;
      }
      deps.logger.info('upload.committed', { path: upload.path, size: upload.size, via: upload.via, client: upload.client, ...(adopted ? { blob: adopted.blob.sha } : {}) });
      deps.audit?.record({ action: 'commit', ...audited });
      return meta;
    } finally {
      if (!upload.keepStaging) await rm(upload.stagingPath, { force: true });
    }
  };
}
