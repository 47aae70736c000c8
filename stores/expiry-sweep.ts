// Expiry of committed files: a file goes FileTTL after its commit, or at its own expiresAt (the "expires" of
// a Prosody file-share token), whichever comes first. The sweep walks the metadata, so it needs no state of
// its own and picks up where it left off after a restart; a file still being committed has no metadata yet
// and is never touched.
import { deletion, type AuditLog } from '../server/audit-log.js';
import type { Logger } from '../server/logger.js';
import type { FileMetadata } from './file-metadata.js';
import type { CommittedFiles, OnRemoved, StoredRecord } from './storage.js';

/** file_deletions_total, for the metrics work. */
export interface ExpiryCounters {
  deletions: number;
}

export interface ExpiryDeps {
  /** Every committed file and kept version; versions expire by their own commit time, like the files they were. */
  records: () => AsyncIterable<StoredRecord>;
  /** Committed files per tenant prefix. */
  files: ReadonlyMap<string, CommittedFiles>;
  /** Prefix of files whose metadata names none. */
  defaultPrefix: string;
  fileTtlMs: number;
  logger: Logger;
  counters: ExpiryCounters;
  removed?: OnRemoved;
  /** AuditLogFile: told of every expiry. */
  audit?: AuditLog;
}

function isExpired(meta: FileMetadata, fileTtlMs: number, now: number): boolean {
  if (meta.expiresAt !== undefined && Date.parse(meta.expiresAt) <= now) return true;
  return fileTtlMs > 0 && now - Date.parse(meta.createdAt) > fileTtlMs;
}

/** Deletes every expired file and version with its metadata; returns how many went. */
export async function sweepExpired(deps: ExpiryDeps, now = Date.now()): Promise<number> {
  let removed = 0;
  const failed = (where: Record<string, string>, err: unknown) => deps.logger.warn('expiry.failed', { ...where, cause: err instanceof Error ? err.message : String(err) });
  try {
    for await (const { meta, version } of deps.records()) {
      if (!isExpired(meta, deps.fileTtlMs, now)) continue;
      const tenant = meta.prefix ?? deps.defaultPrefix;
      const where = `${tenant}/${meta.path}`;
      try {
        if (version) {
          await version.remove(deps.removed);
        } else {
          const files = deps.files.get(tenant);
          if (!files || !(await files.remove(meta.path))) continue;
        }
        removed += 1;
        deps.counters.deletions += 1;
        deps.logger.info('file.expired', { path: where, ...(version ? { version: version.id } : {}) });
        deps.audit?.record({ ...deletion(tenant, meta, 'sweep', undefined, 'expire'), ...(version ? { version: version.id } : {}) });
      } catch (err) {
        failed({ path: where }, err);
      }
    }
  } catch (err) {
    // The listing itself broke off (object storage gone): the next sweep starts over.
    failed({}, err);
  }
  return removed;
}

/** How often to sweep: often enough for the TTL (a tenth of it), at least every second, at most hourly. */
export function sweepInterval(fileTtlMs: number): number {
  return fileTtlMs > 0 ? Math.min(3_600_000, Math.max(1000, Math.floor(fileTtlMs / 10))) : 3_600_000;
}
