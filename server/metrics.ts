// Every Prometheus metric of the server, built in one place on an injected registry. The seed's names keep
// their names and meanings; the rest are prefixed file_server_. Labels stay few and bounded: door (legacy,
// tus; other for requests outside both doors), scheme (v, v2, token, jwt, grant), tenant (a configured prefix), code (the error catalogue's codes),
// reason/event/verdict/limit (fixed sets); never a path, a user or an address.
//
// Two kinds of sources: requests, observed by the metrics middleware when they end (what was uploaded or
// downloaded, how long it took, how it was refused), and the counters that the stores, the scanner and the
// guards keep anyway, read at scrape time.
//
// prom-client is handed in rather than imported: the server loads it only when MetricsEnabled.
import type { Request, Response } from 'express';
import type { Counter, Registry } from 'prom-client';
import type { RequestEntry } from '../middleware/request-log.js';
import { notesOf } from '../middleware/request-notes.js';

const KIB = 1024;
/** 1 KiB to 10 GiB: the sizes people upload, from a chat photo to a disk image. */
export const SIZE_BUCKETS = [KIB, 16 * KIB, 256 * KIB, KIB ** 2, 4 * KIB ** 2, 16 * KIB ** 2, 64 * KIB ** 2, 256 * KIB ** 2, KIB ** 3, 4 * KIB ** 3, 10 * KIB ** 3];
/** 10 ms to 1 h. */
export const DURATION_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600];

/** The counters the rest of the server keeps; each is read when Prometheus scrapes. */
export interface MetricSources {
  tus?: { created: number; finished: number; terminated: number; expired: number };
  scan?: { counters: { infected: number }; queue(): { active: number; waiting: number }; health(): { healthy: boolean | undefined } };
  dedup?: { counters: { hits: number; bytesSaved: number }; healthy(): boolean };
  /** Whether Redis answers now, when RedisEnabled. */
  redisUp?: () => boolean;
  expiry: { deletions: number };
  commits: { versionsPruned: number };
  uploadsInProgress: () => number;
  guards: {
    ipFilter: { blocked: number };
    rateLimit?: { limited: number; authLimited: number };
    bans?: { banned: number; failed: number };
    nginxLog?: { counted: number };
    admission: { queued: number; refused: number };
  };
  connections: { refused: number };
  /** Quotas: refusals by code, and what each tenant with a quota stores. */
  quotas?: { counters: { refused: Record<string, number> }; tenants: readonly string[]; usage(tenant: string): Promise<{ bytes: number; files: number }> };
}

export interface Metrics {
  registry: Registry;
  /** A request began (goroutines_count: requests in flight). */
  started(): void;
  /** A request ended: what it uploaded, downloaded or was refused, from its notes and its log entry. */
  ended(req: Request, res: Response, entry: RequestEntry): void;
  /** Read the server's own counters at every scrape. */
  attach(sources: MetricSources): void;
  /** A finished virus scan (hooks/scan.ts observeScan). */
  scanned(seconds: number, verdict: 'clean' | 'infected' | 'none'): void;
}

export type PromClient = typeof import('prom-client');

/** A counter that follows a number kept elsewhere (which only grows), read at scrape time. */
function followingCounter({ Counter }: PromClient, registry: Registry, name: string, help: string, labelNames: readonly string[], read: () => Array<[Record<string, string>, number]>): void {
  const last = new Map<string, number>();
  new Counter({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      for (const [labels, value] of read()) syncCounter(this, last, labels, value);
    },
  });
}

/** Brings a counter up to a number kept elsewhere; inc by 0 makes a label set appear before its first event. */
function syncCounter(counter: Counter, last: Map<string, number>, labels: Record<string, string>, value: number): void {
  const key = JSON.stringify(labels);
  const previous = last.get(key);
  // A counter only grows: a source that started again from 0 (a new sweep object) is counted on from there.
  const delta = previous === undefined || value < previous ? value : value - previous;
  counter.inc(labels, delta);
  last.set(key, value);
}

function gaugeOf({ Gauge }: PromClient, registry: Registry, name: string, help: string, read: () => number): void {
  new Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}

export function createMetrics(prom: PromClient, registry: Registry, options: { defaultTenant: string; instanceId: string }): Metrics {
  const { Counter, Histogram } = prom;
  prom.collectDefaultMetrics({ register: registry });
  const r = [registry];
  let inFlight = 0;
  let cpuLast = { usage: process.cpuUsage(), at: performance.now() };

  // Several instances behind one proxy: which one answered this scrape (Prometheus' own instance label is the
  // scrape address, which a port forward or a container network may hide).
  new prom.Gauge({ name: 'file_server_instance_info', help: 'Always 1; instance_id says which instance this is (InstanceID)', labelNames: ['instance_id'], registers: r }).set({ instance_id: options.instanceId }, 1);
  gaugeOf(prom, registry, 'memory_usage_bytes', 'Resident set size of the server process, in bytes', () => process.memoryUsage.rss());
  gaugeOf(prom, registry, 'cpu_usage_percent', 'CPU used by the server process since the previous scrape, in percent of one core', () => {
    const now = { usage: process.cpuUsage(), at: performance.now() };
    const usedMicros = now.usage.user - cpuLast.usage.user + (now.usage.system - cpuLast.usage.system);
    const elapsedMicros = (now.at - cpuLast.at) * 1000;
    cpuLast = now;
    return elapsedMicros > 0 ? (100 * usedMicros) / elapsedMicros : 0;
  });
  gaugeOf(prom, registry, 'goroutines_count', 'Requests in flight, uploads included (the name is kept from the Go server this one replaces; Node has no goroutines)', () => inFlight);

  const uploads = new Counter({ name: 'file_server_uploads_total', help: 'Uploads committed', labelNames: ['door', 'scheme', 'tenant'], registers: r });
  const uploadErrors = new Counter({ name: 'file_server_upload_errors_total', help: 'Upload requests refused or failed, by error code', labelNames: ['door', 'code'], registers: r });
  const uploadSize = new Histogram({ name: 'file_server_upload_size_bytes', help: 'Size of committed uploads, in bytes', labelNames: ['door'], buckets: SIZE_BUCKETS, registers: r });
  const uploadDuration = new Histogram({
    name: 'file_server_upload_duration_seconds',
    help: 'Time to receive and commit an upload: the PUT for legacy uploads, creation to commit for tus',
    labelNames: ['door'],
    buckets: DURATION_BUCKETS,
    registers: r,
  });
  const downloads = new Counter({ name: 'file_server_downloads_total', help: 'Downloads served (200 or 206)', labelNames: ['door', 'tenant'], registers: r });
  const downloadErrors = new Counter({ name: 'file_server_download_errors_total', help: 'Download requests refused or failed, by error code', labelNames: ['door', 'code'], registers: r });
  const downloadSize = new Histogram({ name: 'file_server_download_size_bytes', help: 'Bytes of file content per download', labelNames: ['door'], buckets: SIZE_BUCKETS, registers: r });
  const downloadDuration = new Histogram({ name: 'file_server_download_duration_seconds', help: 'Time to serve a download', labelNames: ['door'], buckets: DURATION_BUCKETS, registers: r });
  const bytesIn = new Counter({ name: 'file_server_received_bytes_total', help: 'Bytes received from clients, headers included', labelNames: ['door'], registers: r });
  const bytesOut = new Counter({ name: 'file_server_sent_bytes_total', help: 'Bytes sent to clients, headers included', labelNames: ['door'], registers: r });
  let expiredSource: () => number = () => 0;
  const expiredLast = new Map<string, number>();
  const deletions = new Counter({
    name: 'file_deletions_total',
    help: 'Files deleted, by reason: expired (FileTTL or the file\'s own expiry) or client (DELETE)',
    labelNames: ['reason'],
    registers: r,
    collect() {
      syncCounter(this, expiredLast, { reason: 'expired' }, expiredSource());
    },
  });
  deletions.inc({ reason: 'client' }, 0);
  const scanDuration = new Histogram({ name: 'file_server_scan_duration_seconds', help: 'Time clamd took per scan, by verdict (none: no answer)', labelNames: ['verdict'], buckets: DURATION_BUCKETS, registers: r });

  const doorOf = (req: Request): string => notesOf(req).door ?? 'other';

  return {
    registry,
    started: () => void (inFlight += 1),
    ended(req, res, entry) {
      inFlight -= 1;
      const notes = notesOf(req);
      const door = doorOf(req);
      bytesIn.inc({ door }, entry.bytesIn);
      bytesOut.inc({ door }, entry.bytesOut);
      if (!notes.door) return;
      const tenant = notes.tenant ?? options.defaultTenant;
      const status = entry.status;
      const code = notes.code ?? (status >= 400 ? `HTTP_${status}` : 'none');
      const method = req.method;
      const isUpload = door === 'legacy' ? method === 'PUT' : method === 'POST' || method === 'PATCH';
      if (isUpload) {
        if (notes.committed) {
          uploads.inc({ door, scheme: notes.scheme ?? 'none', tenant });
          uploadSize.observe({ door }, notes.committed.size);
          const seconds = notes.committed.startedAt !== undefined ? (Date.now() - notes.committed.startedAt) / 1000 : entry.ms / 1000;
          uploadDuration.observe({ door }, Math.max(0, seconds));
        } else if (status >= 400 || status === 0) {
          uploadErrors.inc({ door, code: status === 0 ? 'E_ABORTED' : code });
        }
        return;
      }
      if (method === 'GET') {
        if (status === 200 || status === 206) {
          downloads.inc({ door, tenant });
          downloadSize.observe({ door }, Number(res.getHeader('Content-Length') ?? 0));
          downloadDuration.observe({ door }, entry.ms / 1000);
        } else if (status >= 400 || status === 0) {
          downloadErrors.inc({ door, code: status === 0 ? 'E_ABORTED' : code });
        }
        return;
      }
      if (method === 'DELETE' && door === 'legacy' && status === 204) deletions.inc({ reason: 'client' });
    },
    scanned: (seconds, verdict) => scanDuration.observe({ verdict }, seconds),

    attach(s) {
      followingCounter(prom, registry, 'infected_files_total', 'Uploads refused because clamd found malware', [], () => [[{}, s.scan?.counters.infected ?? 0]]);
      expiredSource = () => s.expiry.deletions;
      gaugeOf(prom, registry, 'file_server_uploads_in_progress', 'Upload bodies being received now', s.uploadsInProgress);
      followingCounter(prom, registry, 'file_server_tus_uploads_total', 'tus uploads by event: created, finished, terminated (DELETE), expired (swept)', ['event'], () =>
        s.tus ? (['created', 'finished', 'terminated', 'expired'] as const).map((event) => [{ event }, s.tus![event]]) : [],
      );
      gaugeOf(prom, registry, 'file_server_scan_queue_length', 'Uploads waiting for a virus scan worker', () => s.scan?.queue().waiting ?? 0);
      if (s.scan) gaugeOf(prom, registry, 'file_server_clamd_up', '1 when clamd answered its last health check', () => (s.scan!.health().healthy ? 1 : 0));
      if (s.redisUp) gaugeOf(prom, registry, 'file_server_redis_up', '1 when Redis is connected and ready', () => (s.redisUp!() ? 1 : 0));
      if (s.dedup) {
        followingCounter(prom, registry, 'file_server_dedup_hits_total', 'Uploads whose content was stored already (deduplicated)', [], () => [[{}, s.dedup!.counters.hits]]);
        followingCounter(prom, registry, 'file_server_dedup_saved_bytes_total', 'Bytes not stored again thanks to deduplication', [], () => [[{}, s.dedup!.counters.bytesSaved]]);
      }
      followingCounter(prom, registry, 'file_server_versions_pruned_total', 'Earlier versions removed beyond MaxVersions', [], () => [[{}, s.commits.versionsPruned]]);
      followingCounter(prom, registry, 'file_server_ip_refused_total', 'Requests refused by AllowedIPs or BlockedIPs', [], () => [[{}, s.guards.ipFilter.blocked]]);
      followingCounter(prom, registry, 'file_server_rate_limited_total', 'Requests answered 429, by limit: general (RequestsPerMinute) or auth_failures', ['limit'], () =>
        s.guards.rateLimit
          ? [
              [{ limit: 'general' }, s.guards.rateLimit.limited],
              [{ limit: 'auth_failures' }, s.guards.rateLimit.authLimited],
            ]
          : [],
      );
      followingCounter(prom, registry, 'file_server_fail2ban_bans_total', 'Bans asked of fail2ban-client, by result', ['result'], () =>
        s.guards.bans
          ? [
              [{ result: 'banned' }, s.guards.bans.banned],
              [{ result: 'failed' }, s.guards.bans.failed],
            ]
          : [],
      );
      followingCounter(prom, registry, 'file_server_nginx_refusals_total', "Answers nginx gave by itself, counted against their client (IPSource = nginx-log)", [], () =>
        s.guards.nginxLog ? [[{}, s.guards.nginxLog.counted]] : [],
      );
      followingCounter(prom, registry, 'file_server_admission_total', 'Uploads that had to wait for a place (queued) or were turned away (refused)', ['result'], () => [
        [{ result: 'queued' }, s.guards.admission.queued],
        [{ result: 'refused' }, s.guards.admission.refused],
      ]);
      if (s.quotas) {
        const quotas = s.quotas;
        followingCounter(prom, registry, 'file_server_quota_refusals_total', 'Uploads refused by a quota, by code: E_QUOTA (a user\'s) or E_TENANT_QUOTA', ['code'], () =>
          (['E_QUOTA', 'E_TENANT_QUOTA'] as const).map((code) => [{ code }, quotas.counters.refused[code] ?? 0]),
        );
        // Per tenant, never per user: a label per user would grow without bound.
        for (const [name, help, field] of [
          ['file_server_quota_used_bytes', 'Bytes stored in each tenant that has a quota, as the quotas count them', 'bytes'],
          ['file_server_quota_used_files', 'Files stored in each tenant that has a quota, as the quotas count them', 'files'],
        ] as const) {
          new prom.Gauge({
            name,
            help,
            labelNames: ['tenant'],
            registers: r,
            async collect() {
              for (const tenant of quotas.tenants) {
                // A ledger that does not answer (Redis down) leaves the last value.
                const usage = await quotas.usage(tenant).catch(() => undefined);
                if (usage) this.set({ tenant }, usage[field]);
              }
            },
          });
        }
      }
      followingCounter(prom, registry, 'file_server_connections_refused_total', 'Connections or proxied requests refused by MaxConnectionsPerIP', [], () => [[{}, s.connections.refused]]);
    },
  };
}
