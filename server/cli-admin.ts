// `hmac-file-server admin …`: the admin API (server/admin-api.ts) from the command line, on the running
// server's operators' port, as readable tables or, with --json, the API's own answers.
import type { Writable } from 'node:stream';
import type { AdminFile } from './admin-api.js';
import { sizeText } from './quotas.js';

export const ADMIN_USAGE = `  hmac-file-server admin files [--tenant T] [--user U] [--since TIME] [--until TIME]
                         [--min-size SIZE] [--max-size SIZE] [--limit N] [--offset N]
  hmac-file-server admin usage [--tenant T] [--user U]
  hmac-file-server admin delete --tenant T --path PATH
  hmac-file-server admin delete-user --user U [--tenant T]
  hmac-file-server admin recount | health
      every admin command also takes [--config PATH] [--url http://HOST:PORT] [--token TOKEN] [--json]`;

export interface AdminRequest {
  /** The operators' port, e.g. http://127.0.0.1:9090 */
  base: string;
  token: string;
  json: boolean;
  stdout: Writable;
  stderr: Writable;
}

interface Usage {
  tenants: Array<{ tenant: string; bytes: number; files: number }>;
  users: Array<{ tenant: string; user: string; bytes: number; files: number }>;
}

/** Columns padded to their widest cell; numbers right-aligned. */
function table(head: readonly string[], rows: ReadonlyArray<readonly string[]>, right: ReadonlySet<number> = new Set()): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(head), ...rows.map(line)].join('\n') + '\n';
}

const routes: Record<string, { method: string; path: string; params: readonly string[] }> = {
  files: { method: 'GET', path: '/admin/files', params: ['tenant', 'user', 'since', 'until', 'min_size', 'max_size', 'limit', 'offset'] },
  usage: { method: 'GET', path: '/admin/usage', params: ['tenant', 'user'] },
  delete: { method: 'DELETE', path: '/admin/files', params: ['tenant', 'path'] },
  'delete-user': { method: 'DELETE', path: '/admin/users/files', params: ['user', 'tenant'] },
  recount: { method: 'POST', path: '/admin/recount', params: [] },
  health: { method: 'GET', path: '/admin/health', params: [] },
};

export function isAdminCommand(name: string | undefined): boolean {
  return name !== undefined && name in routes;
}

function printFiles(out: Writable, answer: { total: number; offset: number; files: AdminFile[]; next?: number }): void {
  out.write(table(['CREATED', 'SIZE', 'TENANT', 'PATH', 'USER'], answer.files.map((f) => [f.createdAt.replace('T', ' ').slice(0, 19), sizeText(f.size), f.tenant, f.path, f.user ?? '-']), new Set([1])));
  const shown = answer.files.length === 0 ? 'none' : `${answer.offset + 1}-${answer.offset + answer.files.length}`;
  out.write(`${shown} of ${answer.total}${answer.next !== undefined ? ` (more: --offset ${answer.next})` : ''}\n`);
}

function printUsage(out: Writable, usage: Usage): void {
  out.write(table(['TENANT', 'FILES', 'BYTES'], usage.tenants.map((t) => [t.tenant, String(t.files), sizeText(t.bytes)]), new Set([1, 2])));
  if (usage.users.length > 0) out.write(`\n${table(['TENANT', 'USER', 'FILES', 'BYTES'], usage.users.map((u) => [u.tenant, u.user, String(u.files), sizeText(u.bytes)]), new Set([2, 3]))}`);
}

/** Runs one admin command; 0 when the server did it, 1 when it answered an error or could not be reached. */
export async function runAdmin(command: string, params: Record<string, string | undefined>, request: AdminRequest): Promise<number> {
  const route = routes[command]!;
  const query = new URLSearchParams();
  for (const name of route.params) if (params[name] !== undefined) query.set(name, params[name]);
  const url = `${request.base.replace(/\/$/, '')}${route.path}${query.size > 0 ? `?${query.toString()}` : ''}`;
  let status: number;
  let body: unknown;
  try {
    const answer = await fetch(url, { method: route.method, headers: { Authorization: `Bearer ${request.token}` }, signal: AbortSignal.timeout(120_000) });
    status = answer.status;
    body = await answer.json();
  } catch (err) {
    request.stderr.write(`admin: ${url}: ${err instanceof Error ? ((err.cause as Error | undefined)?.message ?? err.message) : String(err)}\n`);
    return 1;
  }
  if (request.json) request.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
  if (status >= 400 && !(command === 'health' && status === 503)) {
    const { error, message } = body as { error?: string; message?: string };
    request.stderr.write(`admin: ${status} ${error ?? ''}: ${message ?? ''}\n`);
    return 1;
  }
  if (request.json) return 0;
  const out = request.stdout;
  if (command === 'files') printFiles(out, body as Parameters<typeof printFiles>[1]);
  else if (command === 'usage') printUsage(out, body as Usage);
  else if (command === 'delete' || command === 'delete-user') {
    const { deleted, versions } = body as { deleted: AdminFile[]; versions?: number };
    for (const f of deleted) out.write(`deleted ${f.tenant}/${f.path} (${sizeText(f.size)})\n`);
    out.write(`${deleted.length} file(s)${versions ? ` and ${versions} kept version(s)` : ''} deleted\n`);
  } else if (command === 'recount') out.write('quotas counted again\n');
  else {
    const { ready, checks } = body as { ready: boolean; checks: Record<string, string> };
    out.write(table(['CHECK', 'STATE'], Object.entries(checks)));
    out.write(ready ? 'ready\n' : 'not ready\n');
    return ready ? 0 : 1;
  }
  return 0;
}
