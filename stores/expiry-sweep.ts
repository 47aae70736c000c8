// Expiry of committed files: a file goes FileTTL after its commit, or at its own expiresAt (the "expires" of
// a Prosody file-share token), whichever comes first. The sweep walks the metadata, so it needs no state of
// its own and picks up where it left off after a restart; a file still being committed has no metadata yet
// and is never touched.
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../server/logger.js';
import type { CommittedFiles } from './committed-files.js';
import { readMetadata, type FileMetadata } from './file-metadata.js';
import type { ReleaseBlob } from './versions.js';

/** file_deletions_total, for the metrics work. */
export interface ExpiryCounters {
  deletions: number;
}

export interface ExpiryDeps {
  metaDir: string;
  /** Kept versions expire by their own commit time, like the files they were. */
  versionsDir: string;
  /** Committed files per tenant prefix. */
  files: ReadonlyMap<string, CommittedFiles>;
  /** Prefix of files whose metadata names none. */
  defaultPrefix: string;
  fileTtlMs: number;
  logger: Logger;
  counters: ExpiryCounters;
  release?: ReleaseBlob;
}

function isExpired(meta: FileMetadata, fileTtlMs: number, now: number): boolean {
  if (meta.expiresAt !== undefined && Date.parse(meta.expiresAt) <= now) return true;
  return fileTtlMs > 0 && now - Date.parse(meta.createdAt) > fileTtlMs;
}

/** Deletes every expired file with its metadata; returns how many went. */
export async function sweepExpired(deps: ExpiryDeps, now = Date.now()): Promise<number> {
  const entries = await readdir(deps.metaDir, { recursive: true, withFileTypes: true }).catch(() => []);
  let removed = 0;
  for (const entry of entries) {
    if (!entry.isFile() || !entry.name.endsWith('.json')) continue;
    try {
      const meta = await readMetadata(path.join(entry.parentPath, entry.name));
      if (!meta || !isExpired(meta, deps.fileTtlMs, now)) continue;
      const files = deps.files.get(meta.prefix ?? deps.defaultPrefix);
      if (!files || !(await files.remove(meta.path))) continue;
      removed += 1;
      deps.counters.deletions += 1;
      deps.logger.info('file.expired', { path: `${meta.prefix ?? deps.defaultPrefix}/${meta.path}` });
    } catch (err) {
      deps.logger.warn('expiry.failed', { entry: entry.name, cause: err instanceof Error ? err.message : String(err) });
    }
  }
  for (const entry of await readdir(deps.versionsDir, { recursive: true, withFileTypes: true }).catch(() => [])) {
    if (!entry.isFile() || !entry.name.endsWith('.json')) continue;
    const metaPath = path.join(entry.parentPath, entry.name);
    const meta = await readMetadata(metaPath).catch(() => undefined);
    if (!meta || !isExpired(meta, deps.fileTtlMs, now)) continue;
    await rm(metaPath, { force: true });
    await rm(metaPath.slice(0, -'.json'.length), { force: true });
    if (meta.blob && deps.release) await deps.release(meta.blob);
    removed += 1;
    deps.counters.deletions += 1;
    deps.logger.info('file.expired', { path: `${meta.prefix ?? deps.defaultPrefix}/${meta.path}`, version: entry.name.slice(0, -'.json'.length) });
  }
  return removed;
}

/** How often to sweep: often enough for the TTL (a tenth of it), at least every second, at most hourly. */
export function sweepInterval(fileTtlMs: number): number {
  return fileTtlMs > 0 ? Math.min(3_600_000, Math.max(1000, Math.floor(fileTtlMs / 10))) : 3_600_000;
}
