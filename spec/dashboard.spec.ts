// The Grafana dashboard (dashboards/hmac-file-server.json): well formed for an import (a datasource input, unique
// panels that do not overlap), it covers what an operator looks at, and every query of every panel parses and
// returns data from a real Prometheus scraping a real server that has uploaded, downloaded and refused files.
// clamd, Redis, rate limiting and fail2ban are all switched on, so no panel is exempted for a missing dependency.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EICAR, startClamd, type RunningClamd } from './helpers/clamd.js';
import { rawRequest, signedPut } from './helpers/http.js';
import { startPrometheus, type RunningPrometheus } from './helpers/prometheus.js';
import { startRedis, type RunningRedis } from './helpers/redis.js';
import { grantFor, tusUpload } from './helpers/tus-client.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

const DASHBOARD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dashboards', 'hmac-file-server.json');
const DATASOURCE = '${DS_PROMETHEUS}';
const MAX_UPLOAD = 64 * 1024;

interface Target {
  expr?: string;
  refId?: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id?: number;
  type?: string;
  title?: string;
  gridPos?: { h: number; w: number; x: number; y: number };
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: Panel[];
}
interface Dashboard {
  schemaVersion?: number;
  uid?: string;
  title?: string;
  __inputs?: Array<{ name: string; type: string; pluginId: string }>;
  panels?: Panel[];
  templating?: { list?: Array<{ name: string; type: string; allValue?: string; datasource?: { uid?: string }; query?: unknown; definition?: string }> };
}

/** Every panel, those inside (collapsed) rows included. */
function allPanels(panels: readonly Panel[] = []): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels)]);
}

/**
 * What Grafana puts in place of its variables before it sends a query: interval variables get concrete durations
 * (Grafana would derive them from the time range and the scrape interval), $instance gets its "All" value.
 */
function concrete(expr: string, variables: Record<string, string>): string {
  let out = expr
    .replaceAll('$__rate_interval', '1m')
    .replaceAll('${__rate_interval}', '1m')
    .replaceAll('$__interval', '15s')
    .replaceAll('${__interval}', '15s')
    .replaceAll('$__range', '1h')
    .replaceAll('${__range}', '1h')
    .replaceAll(DATASOURCE, 'prometheus');
  for (const [name, value] of Object.entries(variables)) out = out.replaceAll(`\${${name}}`, value).replaceAll(`$${name}`, value);
  return out;
}

/** The metric names an expression reads (identifiers followed by a selector or a range, not functions or labels). */
function metricNames(expr: string): string[] {
  const withoutStrings = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  const names = withoutStrings.match(/[a-zA-Z_:][a-zA-Z0-9_:]*(?=\s*[{[])/g) ?? [];
  return names.filter((n) => !['by', 'without', 'on', 'ignoring', 'group_left', 'group_right'].includes(n));
}

describe('the Grafana dashboard', function () {
  this.timeout(60_000);
  let dashboard: Dashboard;
  let panels: Panel[];
  let targets: Array<{ panel: string; target: Target }>;

  before(async () => {
    dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as Dashboard;
    panels = allPanels(dashboard.panels);
    targets = panels.flatMap((p) => (p.targets ?? []).map((target) => ({ panel: p.title ?? `panel ${p.id}`, target })));
  });

  it('imports into Grafana: schema, a Prometheus datasource input used everywhere, unique panels that do not overlap', () => {
    assert.ok(dashboard.schemaVersion !== undefined && dashboard.schemaVersion >= 36 && dashboard.schemaVersion <= 41, `schemaVersion ${dashboard.schemaVersion}`);
    assert.equal(dashboard.uid, 'hmac-file-server');
    assert.ok(dashboard.title);
    assert.deepEqual(
      dashboard.__inputs?.map((i) => [i.name, i.type, i.pluginId]),
      [['DS_PROMETHEUS', 'datasource', 'prometheus']],
    );
    const ids = panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
    const boxes: Array<{ title: string; x: number; y: number; w: number; h: number }> = [];
    for (const p of panels) {
      assert.ok(p.gridPos, `${p.title} has a gridPos`);
      const { x, y, w, h } = p.gridPos;
      assert.ok(x >= 0 && w > 0 && x + w <= 24 && h > 0 && y >= 0, `${p.title} fits the 24-column grid`);
      for (const other of boxes) {
        const overlaps = x < other.x + other.w && other.x < x + w && y < other.y + other.h && other.y < y + h;
        assert.ok(!overlaps, `${p.title} overlaps ${other.title}`);
      }
      boxes.push({ title: p.title ?? '', x, y, w, h });
      if (p.type === 'row') continue;
      assert.ok(['timeseries', 'stat'].includes(p.type ?? ''), `${p.title}: ${p.type}`);
      assert.deepEqual(p.datasource, { type: 'prometheus', uid: DATASOURCE }, `${p.title} datasource`);
      assert.ok((p.targets ?? []).length > 0, `${p.title} has queries`);
      const refIds = p.targets!.map((t) => t.refId);
      assert.equal(new Set(refIds).size, refIds.length, `${p.title}: refIds are unique`);
      for (const t of p.targets!) {
        assert.deepEqual(t.datasource, { type: 'prometheus', uid: DATASOURCE }, `${p.title} target datasource`);
        assert.ok(typeof t.expr === 'string' && t.expr.trim() !== '', `${p.title} ${t.refId} has an expr`);
      }
    }
    for (const v of dashboard.templating?.list ?? []) assert.equal(v.datasource?.uid, DATASOURCE, `variable ${v.name}`);
  });

  it('covers what an operator looks at', () => {
    const exprs = targets.map((t) => t.target.expr ?? '');
    const read = new Set(exprs.flatMap(metricNames));
    for (const name of [
      'file_server_uploads_total',
      'file_server_upload_errors_total',
      'file_server_downloads_total',
      'file_server_download_errors_total',
      'file_server_received_bytes_total',
      'file_server_sent_bytes_total',
      'file_server_upload_duration_seconds_bucket',
      'file_server_download_duration_seconds_bucket',
      'file_server_uploads_in_progress',
      'goroutines_count',
      'file_server_scan_queue_length',
      'file_server_scan_duration_seconds_bucket',
      'infected_files_total',
      'file_server_clamd_up',
      'file_server_redis_up',
      'memory_usage_bytes',
      'file_server_rate_limited_total',
      'file_server_ip_refused_total',
      'file_server_fail2ban_bans_total',
      'file_server_admission_total',
    ]) {
      assert.ok(read.has(name), `no panel reads ${name}`);
    }
    // Rates of counters over 5 minutes, quantiles from histogram buckets, both p50 and p95.
    assert.ok(exprs.some((e) => /rate\(file_server_uploads_total\{[^}]*\}\[5m\]\)/.test(e) && /by \(door\)/.test(e)));
    assert.ok(exprs.some((e) => /rate\(file_server_upload_errors_total\{[^}]*\}\[5m\]\)/.test(e) && /by \([^)]*code/.test(e)));
    for (const family of ['file_server_upload_duration_seconds', 'file_server_download_duration_seconds']) {
      for (const q of ['0.5', '0.95']) assert.ok(exprs.some((e) => e.startsWith(`histogram_quantile(${q},`) && e.includes(`${family}_bucket`)), `${family} p${q}`);
    }
  });

  describe('against a real Prometheus scraping a real server', function () {
    let clamd: RunningClamd | undefined;
    let redis: RunningRedis | undefined;
    let server: TestServer | undefined;
    let prometheus: RunningPrometheus | undefined;

    /** One round of everything the panels show: uploads through both doors, downloads, refusals, malware. */
    async function traffic(s: TestServer, round: number): Promise<void> {
      assert.equal((await signedPut(s, `r${round}/v.bin`, randomBytes(2000), { protocol: 'v' })).status, 201);
      assert.equal((await signedPut(s, `r${round}/v2.bin`, randomBytes(30_000), { protocol: 'v2' })).status, 201);
      const { downloadUrl } = await tusUpload(s, randomBytes(40_000), await grantFor(s), { chunkSize: 16_000 });
      for (const p of [`/upload/r${round}/v.bin`, new URL(downloadUrl).pathname]) assert.equal((await rawRequest(s.url, 'GET', p)).status, 200);
      assert.equal((await rawRequest(s.url, 'PUT', `/upload/r${round}/bad.bin?v2=${'0'.repeat(64)}`, { 'Content-Length': 3 }, Buffer.from('abc'))).status, 403);
      assert.equal((await rawRequest(s.url, 'GET', `/upload/r${round}/missing.bin`)).status, 404);
      assert.equal((await signedPut(s, `r${round}/big.bin`, randomBytes(MAX_UPLOAD + 1))).status, 413);
      assert.equal((await signedPut(s, `r${round}/eicar.txt`, EICAR)).status, 422);
    }

    before(async function () {
      // A first run may install clamav, redis-server and prometheus.
      this.timeout(600_000);
      clamd = await startClamd();
      redis = await startRedis();
      server = await startTestServer({
        MetricsEnabled: true,
        MetricsPort: 0,
        ClamAVEnabled: true,
        ClamAVSocket: clamd.socketPath,
        RedisEnabled: true,
        RedisAddr: redis.addr,
        DeduplicationEnabled: true,
        EnableRateLimiting: true,
        RequestsPerMinute: 10_000,
        AuthFailuresPerMinute: 10_000,
        // Switched on for its counters; the bad MACs of the traffic stay far below a ban, so the command never runs.
        Fail2BanEnabled: true,
        Fail2BanMaxRetry: 10_000,
        MaxUploadSize: MAX_UPLOAD,
      });
      prometheus = await startPrometheus([server.running.metricsAddress!]);
      await prometheus.waitForScrapes(1);
      // Two rounds with scrapes in between: every counter and bucket then grows between samples, so rates and
      // quantiles have a value (a series' first sample alone gives no rate).
      await traffic(server, 1);
      await prometheus.waitForScrapes(2);
      await traffic(server, 2);
      await prometheus.waitForScrapes(2);
    });

    after(async function () {
      this.timeout(60_000);
      await server?.close();
      await prometheus?.dispose();
      await clamd?.dispose();
      await redis?.dispose();
    });

    it('answers a query that does not parse with 400 bad_data (so the check below can tell)', async () => {
      const answer = await prometheus!.query('sum(rate(file_server_uploads_total[5m])');
      assert.equal(answer.httpStatus, 400);
      assert.equal(answer.errorType, 'bad_data');
    });

    it('fills the instance variable from memory_usage_bytes', async () => {
      const variable = dashboard.templating?.list?.find((v) => v.name === 'instance');
      assert.ok(variable, 'an instance variable');
      assert.equal(variable.definition, 'label_values(memory_usage_bytes, instance)');
      const samples = await prometheus!.vector('memory_usage_bytes');
      assert.deepEqual(
        samples.map((s) => s.metric.instance),
        [new URL(server!.running.metricsAddress!).host],
      );
    });

    it('parses every query of every panel, and each returns data with a numeric value', async function () {
      this.timeout(60_000);
      const variables = Object.fromEntries((dashboard.templating?.list ?? []).map((v) => [v.name, v.allValue ?? '.+']));
      const failures: string[] = [];
      for (const { panel, target } of targets) {
        const expr = concrete(target.expr!, variables);
        assert.ok(!expr.includes('$'), `${panel} ${target.refId}: a variable left in ${expr}`);
        const answer = await prometheus!.query(expr);
        if (answer.httpStatus !== 200 || answer.status !== 'success') {
          failures.push(`${panel} ${target.refId}: ${expr} -> HTTP ${answer.httpStatus} ${answer.errorType ?? ''} ${answer.error ?? ''}`);
          continue;
        }
        const result = (answer.data?.resultType === 'vector' ? answer.data.result : []) as Array<{ value: [number, string] }>;
        if (result.length === 0) failures.push(`${panel} ${target.refId}: ${expr} -> no data`);
        else if (!result.some((r) => Number.isFinite(Number(r.value[1])))) failures.push(`${panel} ${target.refId}: ${expr} -> only ${result.map((r) => r.value[1]).join(', ')}`);
      }
      assert.deepEqual(failures, []);
      assert.ok(targets.length >= 20, `${targets.length} queries checked`);
    });
  });
});
