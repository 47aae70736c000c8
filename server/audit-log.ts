// The audit log (AuditLogFile): one JSON object per line for each event an operator may have to account for
// (a commit, a deletion, an expiry, an infected upload). The uploader's identity is recorded here and never in
// the info log. Each line is appended when the event happens, so lines keep their order. The file is fsynced in
// batches, at most BATCH_MS after a line. reopen() opens the path again after logrotate renamed it (SIGHUP).
import fs, { closeSync, openSync, writeSync } from 'node:fs';
import type { FileMetadata } from '../stores/file-metadata.js';
import type { Logger } from './logger.js';

export type AuditAction = 'commit' | 'delete' | 'expire' | 'infected' | 'quota_refused' | 'admin';

export interface AuditEvent {
  action: AuditAction;
  /** The tenant prefix (UploadSubDir or a tenant's Prefix). */
  tenant?: string;
  path?: string;
  size?: number;
  sha256?: string;
  /** The uploader, when the signature or grant named one. */
  user?: string;
  /** The client address of the request that caused it (none for an expiry). */
  client?: string;
  /** "legacy" or "tus"; "sweep" for an expiry; "admin" for the admin API. */
  door: string;
  /** An admin request that removed nothing itself: list, usage, delete_user, recount, health. */
  request?: string;
  /** How many files it listed or removed (and kept versions, for delete_user). */
  count?: number;
  versions?: number;
  /** quota_refused: which limit: user-bytes, user-files, user-day or tenant-bytes. */
  limit?: string;
  /** How a legacy upload was signed: "v", "v2", "token" or "jwt". */
  scheme?: string;
  /** A kept version's id, when the event concerns one. */
  version?: string;
}

/** The event of a committed file that went (meta: what its metadata said). */
export function deletion(tenant: string, meta: Readonly<FileMetadata>, door: string, client?: string, action: 'delete' | 'expire' = 'delete'): AuditEvent {
  return {
    action,
    tenant,
    path: meta.path,
    size: meta.size,
    ...(meta.sha256 !== undefined ? { sha256: meta.sha256 } : {}),
    ...(meta.owner !== undefined ? { user: meta.owner } : {}),
    ...(client !== undefined ? { client } : {}),
    door,
  };
}

export interface AuditLog {
  record(event: AuditEvent): void;
  /** Opens AuditLogFile again by name; throws, and keeps the old file, when it cannot. */
  reopen(): void;
  /** Syncs what was written and closes the file. */
  close(): Promise<void>;
}

const BATCH_MS = 200;

function codeOf(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? String(err);
}

export function openAuditLog(file: string, logger: Logger): AuditLog {
  const open = () => openSync(file, 'a', 0o640);
  let fd = open();
  let timer: NodeJS.Timeout | undefined;
  let failing: string | undefined;
  let syncing: Promise<void> = Promise.resolve();

  const syncNow = (descriptor: number): Promise<void> =>
    (syncing = syncing.then(
      () =>
        new Promise((resolve) =>
          fs.fdatasync(descriptor, (err) => {
            if (err) logger.warn('audit.sync_failed', { file, cause: codeOf(err) });
            resolve();
          }),
        ),
    ));

  return {
    record(event) {
      const line = Buffer.from(`${JSON.stringify({ time: new Date().toISOString(), ...event })}\n`);
      try {
        for (let written = 0; written < line.length; ) written += writeSync(fd, line, written);
        if (failing !== undefined) logger.info('audit.writing_again', { file });
        failing = undefined;
      } catch (err) {
        // A full disk must not stop uploads: said once, until a line is written again.
        if (failing !== codeOf(err)) logger.error('audit.write_failed', { file, cause: codeOf(err) });
        failing = codeOf(err);
        return;
      }
      timer ??= setTimeout(() => {
        timer = undefined;
        void syncNow(fd);
      }, BATCH_MS).unref();
    },
    reopen() {
      const next = open();
      const old = fd;
      fd = next;
      void syncNow(old).then(() => closeSync(old));
    },
    async close() {
      clearTimeout(timer);
      timer = undefined;
      await syncNow(fd);
      closeSync(fd);
    },
  };
}
