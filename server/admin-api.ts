// The admin API under /admin/ on the operators' listener (never the public port), for a Bearer AdminToken:
//
//   GET    /admin/files?tenant=&user=&since=&until=&min_size=&max_size=&limit=&offset=   committed files, newest first
//   GET    /admin/usage?tenant=&user=                                                  bytes and files per tenant and user
//   DELETE /admin/files?tenant=&path=                                                  one file, with its versions
//   DELETE /admin/users/files?user=&tenant=                                            every file and version of a user
//   POST   /admin/recount                                                              quotas counted again from the metadata
//   GET    /admin/health                                                               the readiness checks and the counts
//
// Answers are JSON. Every request that passed the token is written to the audit log; a refused token is an
// auth.failed line, as a refused signature is.
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { deletion, type AuditEvent, type AuditLog } from './audit-log.js';
import { HttpError } from './errors.js';
import { logAuthFailure, type Logger } from './logger.js';
import { validateSlotPath } from '../stores/file-layout.js';
import type { Quotas } from './quotas.js';
import type { FileMetadata } from '../stores/file-metadata.js';
import type { CommittedFiles, OnRemoved, StoredRecord } from '../stores/storage.js';

export interface AdminDeps {
  token: string;
  /** Committed files of each tenant prefix. */
  files: ReadonlyMap<string, CommittedFiles>;
  records: () => AsyncIterable<StoredRecord>;
  /** Told of every kept version removed here (dedup, quotas), as the stores tell it of the rest. */
  removed?: OnRemoved;
  quotas?: Quotas;
  audit?: AuditLog;
  /** The readiness checks, as /readyz answers them. */
  health: () => Promise<{ ready: boolean; checks: Record<string, string> }>;
  /** Prefix of files whose metadata names none. */
  defaultPrefix: string;
  logger: Logger;
}

export interface AdminFile {
  tenant: string;
  path: string;
  size: number;
  contentType: string;
  createdAt: string;
  user?: string;
  sha256?: string;
  expiresAt?: string;
}

const MAX_LIMIT = 1000;

class AdminError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function tokenMatches(given: string, token: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...headers }).end(`${JSON.stringify(body)}\n`);
}

function whole(query: URLSearchParams, name: string, fallback?: number): number | undefined {
  const value = query.get(name);
  if (value === null || value === '') return fallback;
  if (!/^\d+$/.test(value)) throw new AdminError(400, `${name}: a whole number`);
  return Number(value);
}

function time(query: URLSearchParams, name: string): number | undefined {
  const value = query.get(name);
  if (value === null || value === '') return undefined;
  const ms = Date.parse(value);
  if (Number.isNaN(ms)) throw new AdminError(400, `${name}: an ISO 8601 time such as 2026-12-01T00:00:00Z`);
  return ms;
}

function required(query: URLSearchParams, name: string): string {
  const value = query.get(name);
  if (!value) throw new AdminError(400, `${name} is required`);
  return value;
}

function fileOf(meta: FileMetadata, defaultPrefix: string): AdminFile {
  return {
    tenant: meta.prefix ?? defaultPrefix,
    path: meta.path,
    size: meta.size,
    contentType: meta.contentType,
    createdAt: meta.createdAt,
    ...(meta.owner !== undefined ? { user: meta.owner } : {}),
    ...(meta.sha256 !== undefined ? { sha256: meta.sha256 } : {}),
    ...(meta.expiresAt !== undefined ? { expiresAt: meta.expiresAt } : {}),
  };
}

function peerOf(req: IncomingMessage): string {
  return (req.socket.remoteAddress ?? 'unknown').replace(/^::ffff:/, '');
}

/** Handles a request below /admin/. */
export function adminApi(deps: AdminDeps): (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<void> {
  const filesOf = (tenant: string) => {
    const files = deps.files.get(tenant);
    if (!files) throw new AdminError(404, `no tenant ${tenant}`);
    return files;
  };

  /** An admin request in the audit log; the files it removes have their own delete lines. */
  const audit = (req: IncomingMessage, request: string, fields: Pick<AuditEvent, 'tenant' | 'user' | 'count' | 'versions'> = {}) => {
    const defined = Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)) as Partial<AuditEvent>;
    deps.audit?.record({ action: 'admin', door: 'admin', client: peerOf(req), request, ...defined });
  };

  /** A tenant's current file at path, removed with its kept versions. */
  const removeCurrent = async (tenant: string, path: string): Promise<FileMetadata | undefined> => {
    const files = filesOf(tenant);
    const removed = await files.remove(path);
    await files.removeAllVersions(path);
    return removed;
  };

  const routes: Record<string, (req: IncomingMessage, res: ServerResponse, query: URLSearchParams) => Promise<void>> = {
    'GET /admin/files': async (req, res, query) => {
      const tenant = query.get('tenant') || undefined;
      const user = query.get('user') || undefined;
      const since = time(query, 'since');
      const until = time(query, 'until');
      const minSize = whole(query, 'min_size');
      const maxSize = whole(query, 'max_size');
      const limit = Math.min(whole(query, 'limit', 100)!, MAX_LIMIT);
      const offset = whole(query, 'offset', 0)!;
      const found: AdminFile[] = [];
      for await (const { meta, version } of deps.records()) {
        if (version) continue;
        const file = fileOf(meta, deps.defaultPrefix);
        const created = Date.parse(file.createdAt);
        if (tenant !== undefined && file.tenant !== tenant) continue;
        if (user !== undefined && file.user !== user) continue;
        if ((since !== undefined && created < since) || (until !== undefined && created >= until)) continue;
        if ((minSize !== undefined && file.size < minSize) || (maxSize !== undefined && file.size > maxSize)) continue;
        found.push(file);
      }
      found.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || a.tenant.localeCompare(b.tenant) || a.path.localeCompare(b.path));
      const page = found.slice(offset, offset + limit);
      audit(req, 'list', { tenant, user, count: page.length });
      send(res, 200, { total: found.length, offset, files: page, ...(offset + limit < found.length ? { next: offset + limit } : {}) });
    },

    'GET /admin/usage': async (req, res, query) => {
      const tenant = query.get('tenant') || undefined;
      const user = query.get('user') || undefined;
      const tenants = new Map<string, { bytes: number; files: number }>();
      const users = new Map<string, { tenant: string; user: string; bytes: number; files: number }>();
      for await (const { meta } of deps.records()) {
        const t = meta.prefix ?? deps.defaultPrefix;
        if (tenant !== undefined && t !== tenant) continue;
        if (user !== undefined && meta.owner !== user) continue;
        const sum = tenants.get(t) ?? { bytes: 0, files: 0 };
        tenants.set(t, { bytes: sum.bytes + meta.size, files: sum.files + 1 });
        if (meta.owner === undefined) continue;
        const key = `${t}\u0000${meta.owner}`;
        const own = users.get(key) ?? { tenant: t, user: meta.owner, bytes: 0, files: 0 };
        users.set(key, { ...own, bytes: own.bytes + meta.size, files: own.files + 1 });
      }
      audit(req, 'usage', { tenant, user });
      send(res, 200, {
        tenants: [...tenants].map(([name, sum]) => ({ tenant: name, ...sum })).sort((a, b) => b.bytes - a.bytes),
        users: [...users.values()].sort((a, b) => b.bytes - a.bytes),
      });
    },

    'DELETE /admin/files': async (req, res, query) => {
      const tenant = required(query, 'tenant');
      // The rules of an upload's path: nothing an admin types reaches outside the store either.
      const path = validateSlotPath(required(query, 'path'));
      const removed = await removeCurrent(tenant, path);
      if (!removed) throw new AdminError(404, 'no such file');
      deps.audit?.record(deletion(tenant, removed, 'admin', peerOf(req)));
      deps.logger.info('admin.deleted', { tenant, path, client: peerOf(req) });
      send(res, 200, { deleted: [fileOf(removed, deps.defaultPrefix)] });
    },

    'DELETE /admin/users/files': async (req, res, query) => {
      const user = required(query, 'user');
      const tenant = query.get('tenant') || undefined;
      // Listed first, removed after: removing while the listing runs could skip entries.
      const matching: StoredRecord[] = [];
      for await (const record of deps.records()) {
        const t = record.meta.prefix ?? deps.defaultPrefix;
        if (record.meta.owner === user && (tenant === undefined || t === tenant)) matching.push(record);
      }
      const deleted: AdminFile[] = [];
      let versions = 0;
      const gone = new Set<string>();
      for (const { meta, version } of matching) {
        if (version) continue;
        const t = meta.prefix ?? deps.defaultPrefix;
        // Its path's kept versions go with it: an earlier copy of the user's file is the user's too.
        const removed = await removeCurrent(t, meta.path);
        if (removed) {
          deleted.push(fileOf(removed, deps.defaultPrefix));
          deps.audit?.record(deletion(t, removed, 'admin', peerOf(req)));
        }
        gone.add(`${t}\u0000${meta.path}`);
      }
      // The user's versions of paths whose current file is someone else's.
      for (const { meta, version } of matching) {
        const t = meta.prefix ?? deps.defaultPrefix;
        if (!version || gone.has(`${t}\u0000${meta.path}`)) continue;
        await version.remove(deps.removed);
        versions += 1;
        deps.audit?.record({ ...deletion(t, meta, 'admin', peerOf(req)), version: version.id });
      }
      audit(req, 'delete_user', { tenant, user, count: deleted.length, versions });
      deps.logger.info('admin.deleted_user', { files: deleted.length, versions, client: peerOf(req) });
      send(res, 200, { deleted, versions });
    },

    'POST /admin/recount': async (req, res) => {
      if (!deps.quotas) throw new AdminError(409, 'no tenant has a quota');
      await deps.quotas.recount(deps.records());
      audit(req, 'recount');
      send(res, 200, { recounted: true });
    },

    'GET /admin/health': async (req, res) => {
      const health = await deps.health();
      audit(req, 'health');
      send(res, health.ready ? 200 : 503, health);
    },
  };

  return async (req, res, url) => {
    const header = req.headers.authorization ?? '';
    const given = /^Bearer (\S+)$/.exec(header)?.[1];
    if (given === undefined || !tokenMatches(given, deps.token)) {
      logAuthFailure(deps.logger, { client: peerOf(req), reason: given === undefined ? 'admin_token_missing' : 'admin_token_invalid', method: req.method ?? '', path: url.pathname });
      send(res, 401, { error: 'E_ADMIN_TOKEN', message: 'Admin token missing or wrong' }, { 'WWW-Authenticate': 'Bearer realm="hmac-file-server admin"' });
      return;
    }
    const route = routes[`${req.method} ${url.pathname}`];
    if (!route) {
      const known = Object.keys(routes).filter((r) => r.endsWith(` ${url.pathname}`));
      if (known.length > 0) send(res, 405, { error: 'E_METHOD', message: 'Method not allowed' }, { Allow: known.map((r) => r.split(' ')[0]).join(', ') });
      else send(res, 404, { error: 'E_NOT_FOUND', message: 'No such admin endpoint' });
      return;
    }
    try {
      await route(req, res, url.searchParams);
    } catch (err) {
      if (err instanceof AdminError) return send(res, err.status, { error: err.status === 404 ? 'E_NOT_FOUND' : 'E_BAD_REQUEST', message: err.message });
      if (err instanceof HttpError && err.status < 500) return send(res, err.status, { error: err.code, message: err.message });
      const status = (err as { status?: number }).status;
      // A store or Redis that went away (503) says so; anything else is a fault, logged with its cause.
      if (typeof status === 'number' && status >= 500) return send(res, status, { error: (err as { code?: string }).code ?? 'E_INTERNAL', message: (err as Error).message });
      deps.logger.error('admin.failed', { path: url.pathname, cause: err instanceof Error ? (err.stack ?? err.message) : String(err) });
      send(res, 500, { error: 'E_INTERNAL', message: 'Internal server error' });
    }
  };
}
