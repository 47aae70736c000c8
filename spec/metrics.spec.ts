// The operators' metrics after real traffic through both doors (legacy PUT with v and v2, tus), downloads,
// refusals, an infected file (a real clamd) and an expiry: promtool's linter finds nothing to say, every value
// matches what was done, no label value is a path, an address or a user, and a real Prometheus scraping the
// metrics port sees the same; /healthz on both ports, and /readyz following clamd and Redis going away and back.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { CATALOGUE } from '../server/errors.js';
import { DURATION_BUCKETS, SIZE_BUCKETS } from '../server/metrics.js';
import { EICAR, startClamd, type RunningClamd } from './helpers/clamd.js';
import { rawRequest, signedPut } from './helpers/http.js';
import {
  parseExposition,
  promtoolCheckMetrics,
  samplesOf,
  SCRAPE_JOB,
  startPrometheus,
  valueOf,
  type ExposedSample,
  type Exposition,
  type RunningPrometheus,
  type VectorSample,
} from './helpers/prometheus.js';
import { startRedis, type RunningRedis } from './helpers/redis.js';
import { grantFor, tusUpload } from './helpers/tus-client.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

const KIB = 1024;
const MAX_UPLOAD = 64 * KIB;
/** The documented ranges: sizes 1 KiB to 10 GiB, durations 10 ms to 1 h. */
const SIZE_RANGE = [1024, 10737418240];
const DURATION_RANGE = [0.01, 3600];

/**
 * promtool lint lines that this exposition cannot avoid, each with the reason:
 * - goroutines_count keeps the name of the Go server this one replaces (dashboards and alerts use it), and the
 *   linter takes its _count suffix for a histogram's;
 * - prom-client's default metrics name three gauges *_total (counts of live handles, requests, resources).
 */
const UNAVOIDABLE_LINT = new Set([
  'goroutines_count non-histogram and non-summary metrics should not have "_count" suffix',
  'nodejs_active_handles_total non-counter metrics should not have "_total" suffix',
  'nodejs_active_requests_total non-counter metrics should not have "_total" suffix',
  'nodejs_active_resources_total non-counter metrics should not have "_total" suffix',
]);

/** What the traffic of before() did, as the metrics should count it. */
const MADE = {
  uploads: { 'legacy/v': 2, 'legacy/v2': 4, 'tus/grant': 2 } as Record<string, number>,
  uploadErrors: { 'legacy/E_MAC_INVALID': 1, 'legacy/E_TOO_LARGE': 1, 'legacy/E_INFECTED': 1 } as Record<string, number>,
  downloads: 4,
  downloadErrors: { 'legacy/E_NOT_FOUND': 1 } as Record<string, number>,
  scans: { clean: 8, infected: 1 } as Record<string, number>,
};
const USER = 'metrics-user';

const codes = new Set<string>([...Object.keys(CATALOGUE), 'E_ABORTED', 'none']);
/** Every label name the exposition may carry, and the bounded set (or form) of its values. */
const BOUNDED: Record<string, (value: string, sample: ExposedSample) => boolean> = {
  door: (v) => ['legacy', 'tus', 'other'].includes(v),
  scheme: (v) => ['v', 'v2', 'token', 'jwt', 'grant', 'none'].includes(v),
  tenant: (v) => v === 'upload',
  code: (v) => codes.has(v) || /^HTTP_[1-5]\d\d$/.test(v),
  reason: (v) => ['expired', 'client'].includes(v),
  event: (v) => ['created', 'finished', 'terminated', 'expired'].includes(v),
  verdict: (v) => ['clean', 'infected', 'none'].includes(v),
  limit: (v) => ['general', 'auth_failures'].includes(v),
  result: (v, s) => (s.name.startsWith('file_server_fail2ban_bans') ? ['banned', 'failed'] : ['queued', 'refused']).includes(v),
  le: (v) => v === '+Inf' || Number.isFinite(Number(v)),
  // InstanceID of the server under test.
  instance_id: (v, s) => s.name === 'file_server_instance_info' && v === 'files-a',
  // prom-client's default metrics.
  space: (v) => /^[a-z_]+$/.test(v),
  kind: (v) => ['major', 'minor', 'incremental', 'weakcb'].includes(v),
  type: (v) => /^[A-Za-z]+$/.test(v),
  version: (v) => /^v\d+\.\d+\.\d+$/.test(v),
  major: (v) => /^\d+$/.test(v),
  minor: (v) => /^\d+$/.test(v),
  patch: (v) => /^\d+$/.test(v),
};

const byLabels = (samples: ExposedSample[], names: string[]) =>
  Object.fromEntries(samples.map((s) => [names.map((n) => s.labels[n]).join('/'), s.value]));
const vectorBy = (samples: VectorSample[], names: string[]) =>
  Object.fromEntries(samples.map((s) => [names.map((n) => s.metric[n]).join('/'), Number(s.value[1])]));

async function exposition(server: TestServer): Promise<{ text: string; parsed: Exposition; contentType: string | null }> {
  const res = await fetch(`${server.running.metricsAddress}/metrics`, { signal: AbortSignal.timeout(5000) });
  assert.equal(res.status, 200);
  const text = await res.text();
  return { text, parsed: parseExposition(text), contentType: res.headers.get('content-type') };
}

async function get(url: string): Promise<{ status: number; body: string; contentType: string | null }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  return { status: res.status, body: await res.text(), contentType: res.headers.get('content-type') };
}

/** Polls url until it answers status, up to timeoutMs; the last answer otherwise. */
async function waitForStatus(url: string, status: number, timeoutMs: number): Promise<{ status: number; body: string }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const answer = await get(url);
    if (answer.status === status || Date.now() > deadline) return answer;
    await sleep(200);
  }
}

/** Polls the exposition until name (no labels) reads value, up to timeoutMs; returns what it read last. */
async function waitForGauge(server: TestServer, name: string, value: number, timeoutMs: number): Promise<number | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const read = valueOf((await exposition(server)).parsed, name);
    if (read === value || Date.now() > deadline) return read;
    await sleep(200);
  }
}

describe('metrics', function () {
  this.timeout(60_000);
  let clamd: RunningClamd | undefined;
  let redis: RunningRedis | undefined;
  let server: TestServer | undefined;
  let prometheus: RunningPrometheus | undefined;
  /** The exposition right after the traffic of before(). */
  let after1: { text: string; parsed: Exposition; contentType: string | null };
  const uploadedSizes: number[] = [];

  before(async function () {
    // A first run may install clamav, redis-server and prometheus.
    this.timeout(600_000);
    clamd = await startClamd();
    redis = await startRedis();
    server = await startTestServer({
      InstanceID: 'files-a',
      MetricsEnabled: true,
      MetricsPort: 0,
      ClamAVEnabled: true,
      ClamAVSocket: clamd.socketPath,
      ClamAVHealthCheckInterval: '200ms',
      RedisEnabled: true,
      RedisAddr: redis.addr,
      RedisHealthCheckInterval: '300ms',
      DeduplicationEnabled: true,
      FileTTL: '1h',
      MaxUploadSize: MAX_UPLOAD,
      // A quota nothing here reaches: its metrics are in the exposition promtool checks.
      MaxBytesPerTenant: '10GiB',
    });
    assert.match(server.running.metricsAddress ?? '', /^http:\/\/127\.0\.0\.1:\d+$/);
    prometheus = await startPrometheus([server.running.metricsAddress!]);
    const s = server;

    const put = async (slot: string, size: number, protocol: 'v' | 'v2') => {
      assert.equal((await signedPut(s, slot, randomBytes(size), { protocol })).status, 201);
      uploadedSizes.push(size);
    };
    // The one file to expire: uploaded first and swept as if FileTTL had passed for it only.
    await put('expire/old.bin', 1500, 'v2');
    const oldBorn = Date.now();
    await sleep(1100);
    for (let i = 0; i < 2; i++) await put(`m/v-${i}.bin`, 2000 + i, 'v');
    for (let i = 0; i < 3; i++) await put(`m/v2-${i}.bin`, 3000 + i, 'v2');
    const grant = await grantFor(s, { subject: USER });
    const viaTus: string[] = [];
    for (let i = 0; i < 2; i++) {
      const { downloadUrl } = await tusUpload(s, randomBytes(20_000), grant, { chunkSize: 8000 });
      viaTus.push(new URL(downloadUrl).pathname);
    }
    for (const p of ['/upload/m/v-0.bin', '/upload/m/v2-0.bin', ...viaTus]) assert.equal((await rawRequest(s.url, 'GET', p)).status, 200);
    // Refusals: a bad MAC, a missing file, a file over MaxUploadSize, malware.
    assert.equal((await rawRequest(s.url, 'PUT', `/upload/m/bad.bin?v2=${'0'.repeat(64)}`, { 'Content-Length': 3 }, Buffer.from('abc'))).status, 403);
    assert.equal((await rawRequest(s.url, 'GET', '/upload/m/missing.bin')).status, 404);
    assert.equal((await signedPut(s, 'm/big.bin', randomBytes(MAX_UPLOAD + 1))).status, 413);
    assert.equal((await signedPut(s, 'm/eicar.txt', EICAR)).status, 422);
    assert.equal(await s.running.expiry.sweep(oldBorn + 3_600_000 + 500), 1);
    after1 = await exposition(s);
  });

  after(async function () {
    this.timeout(60_000);
    await server?.close();
    await prometheus?.dispose();
    await clamd?.dispose();
    await redis?.dispose();
  });

  it('passes `promtool check metrics`, but for the lint its names cannot avoid', async () => {
    assert.match(after1.contentType ?? '', /^text\/plain; version=0\.0\.4/);
    const verdict = await promtoolCheckMetrics(after1.text);
    const unexpected = verdict.lines.filter((l) => !UNAVOIDABLE_LINT.has(l.trim()));
    assert.deepEqual(unexpected, [], verdict.lines.join('\n'));
    // 0: nothing to say; 3: lint problems only (all of them listed above); 1 would be a parse error.
    assert.ok(verdict.code === 0 || verdict.code === 3, `promtool exited ${verdict.code}: ${verdict.lines.join('\n')}`);
  });

  it('counts the uploads, downloads, refusals, the infected file and the expiry that were made', () => {
    const m = after1.parsed;
    assert.deepEqual(byLabels(samplesOf(m, 'file_server_uploads_total'), ['door', 'scheme']), MADE.uploads);
    assert.deepEqual(new Set(samplesOf(m, 'file_server_uploads_total').map((s) => s.labels.tenant)), new Set(['upload']));
    assert.deepEqual(byLabels(samplesOf(m, 'file_server_upload_errors_total'), ['door', 'code']), MADE.uploadErrors);
    // tus downloads are GETs of the committed file, served by the legacy door.
    assert.deepEqual(byLabels(samplesOf(m, 'file_server_downloads_total'), ['door', 'tenant']), { 'legacy/upload': MADE.downloads });
    assert.deepEqual(byLabels(samplesOf(m, 'file_server_download_errors_total'), ['door', 'code']), MADE.downloadErrors);
    assert.equal(valueOf(m, 'infected_files_total'), 1);
    assert.deepEqual(byLabels(samplesOf(m, 'file_deletions_total'), ['reason']), { expired: 1, client: 0 });
    assert.deepEqual(byLabels(samplesOf(m, 'file_server_tus_uploads_total'), ['event']), { created: 2, finished: 2, terminated: 0, expired: 0 });
    assert.deepEqual(byLabels(samplesOf(m, 'file_server_upload_size_bytes_count'), ['door']), { legacy: 6, tus: 2 });
    assert.deepEqual(byLabels(samplesOf(m, 'file_server_upload_size_bytes_sum'), ['door']), { legacy: uploadedSizes.reduce((a, b) => a + b, 0), tus: 40_000 });
    assert.deepEqual(byLabels(samplesOf(m, 'file_server_upload_duration_seconds_count'), ['door']), { legacy: 6, tus: 2 });
    assert.deepEqual(byLabels(samplesOf(m, 'file_server_download_size_bytes_count'), ['door']), { legacy: MADE.downloads });
    assert.equal(valueOf(m, 'file_server_download_size_bytes_sum'), 2000 + 3000 + 2 * 20_000);
    assert.deepEqual(byLabels(samplesOf(m, 'file_server_scan_duration_seconds_count'), ['verdict']), MADE.scans);
    for (const door of ['legacy', 'tus']) {
      assert.ok(valueOf(m, 'file_server_received_bytes_total', { door })! > 0, `received bytes of ${door}`);
      assert.ok(valueOf(m, 'file_server_sent_bytes_total', { door })! > 0, `sent bytes of ${door}`);
    }
    // More than the bodies of the committed uploads arrived (headers, the refused PUTs).
    assert.ok(valueOf(m, 'file_server_received_bytes_total', { door: 'legacy' })! > uploadedSizes.reduce((a, b) => a + b, 0));
    for (const [name, value] of [
      ['file_server_uploads_in_progress', 0],
      ['file_server_scan_queue_length', 0],
      ['file_server_clamd_up', 1],
      ['file_server_redis_up', 1],
      ['file_server_versions_pruned_total', 0],
      ['file_server_ip_refused_total', 0],
      ['file_server_connections_refused_total', 0],
      ['file_server_dedup_hits_total', 0],
      ['file_server_dedup_saved_bytes_total', 0],
    ] as const) {
      assert.equal(valueOf(m, name), value, name);
    }
    assert.deepEqual(byLabels(samplesOf(m, 'file_server_admission_total'), ['result']), { queued: 0, refused: 0 });
  });

  it('has histograms with the documented buckets, cumulative and ending in +Inf = _count', () => {
    const m = after1.parsed;
    const families: Array<[string, readonly number[], number[]]> = [
      ['file_server_upload_size_bytes', SIZE_BUCKETS, SIZE_RANGE],
      ['file_server_download_size_bytes', SIZE_BUCKETS, SIZE_RANGE],
      ['file_server_upload_duration_seconds', DURATION_BUCKETS, DURATION_RANGE],
      ['file_server_download_duration_seconds', DURATION_BUCKETS, DURATION_RANGE],
      ['file_server_scan_duration_seconds', DURATION_BUCKETS, DURATION_RANGE],
    ];
    for (const [family, buckets, [first, last]] of families) {
      assert.equal(m.types.get(family), 'histogram', family);
      assert.equal(buckets[0], first, `${family} starts at ${first}`);
      assert.equal(buckets.at(-1), last, `${family} ends at ${last}`);
      const all = samplesOf(m, `${family}_bucket`);
      assert.ok(all.length > 0, `${family} has buckets`);
      const groups = new Map<string, ExposedSample[]>();
      for (const s of all) {
        const key = JSON.stringify(Object.fromEntries(Object.entries(s.labels).filter(([name]) => name !== 'le')));
        groups.set(key, [...(groups.get(key) ?? []), s]);
      }
      for (const [key, group] of groups) {
        const les = group.map((s) => s.labels.le);
        assert.deepEqual(les, [...buckets.map(String), '+Inf'], `${family} ${key}`);
        assert.equal(Number(les[0]), first);
        assert.equal(Number(les.at(-2)), last);
        for (let i = 1; i < group.length; i++) assert.ok(group[i]!.value >= group[i - 1]!.value, `${family} ${key} is cumulative`);
        assert.equal(group.at(-1)!.value, valueOf(m, `${family}_count`, JSON.parse(key) as Record<string, string>), `${family} ${key} +Inf`);
      }
    }
    // Every legacy upload was between 1 KiB and 16 KiB, every tus upload between 16 KiB and 256 KiB.
    assert.equal(valueOf(m, 'file_server_upload_size_bytes_bucket', { door: 'legacy', le: '1024' }), 0);
    assert.equal(valueOf(m, 'file_server_upload_size_bytes_bucket', { door: 'legacy', le: '16384' }), 6);
    assert.equal(valueOf(m, 'file_server_upload_size_bytes_bucket', { door: 'tus', le: '16384' }), 0);
    assert.equal(valueOf(m, 'file_server_upload_size_bytes_bucket', { door: 'tus', le: '262144' }), 2);
  });

  it("keeps the seed's gauges and prom-client's default metrics, each with a type and a help text", () => {
    const m = after1.parsed;
    const rss = valueOf(m, 'memory_usage_bytes');
    assert.ok(rss !== undefined && rss > 10 * 1024 * 1024, `memory_usage_bytes ${rss}`);
    const cpu = valueOf(m, 'cpu_usage_percent');
    assert.ok(cpu !== undefined && Number.isFinite(cpu) && cpu >= 0, `cpu_usage_percent ${cpu}`);
    // Read on the metrics port, where no request of the public port is in flight: every request that began ended.
    assert.equal(valueOf(m, 'goroutines_count'), 0);
    for (const name of ['memory_usage_bytes', 'cpu_usage_percent', 'goroutines_count']) assert.equal(m.types.get(name), 'gauge', name);
    for (const name of [
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'process_start_time_seconds',
      'process_open_fds',
      'nodejs_eventloop_lag_seconds',
      'nodejs_heap_size_used_bytes',
      'nodejs_version_info',
    ]) {
      assert.ok(samplesOf(m, name).length > 0, `${name} is exposed`);
    }
    assert.equal(m.types.get('nodejs_gc_duration_seconds'), 'histogram');
    for (const family of m.types.keys()) assert.ok((m.help.get(family) ?? '').trim().length > 0, `${family} has a HELP text`);
    for (const [family, type] of [
      ['file_server_uploads_total', 'counter'],
      ['file_server_upload_errors_total', 'counter'],
      ['file_server_downloads_total', 'counter'],
      ['file_server_download_errors_total', 'counter'],
      ['file_server_received_bytes_total', 'counter'],
      ['file_server_sent_bytes_total', 'counter'],
      ['file_deletions_total', 'counter'],
      ['infected_files_total', 'counter'],
      ['file_server_tus_uploads_total', 'counter'],
      ['file_server_uploads_in_progress', 'gauge'],
      ['file_server_scan_queue_length', 'gauge'],
      ['file_server_clamd_up', 'gauge'],
      ['file_server_redis_up', 'gauge'],
      ['file_server_instance_info', 'gauge'],
    ]) {
      assert.equal(m.types.get(family!), type, family);
    }
  });

  it('has no label value that is a path, an address or a user: every one is in its bounded set', () => {
    const m = after1.parsed;
    const wrong: string[] = [];
    for (const s of m.samples) {
      for (const [name, value] of Object.entries(s.labels)) {
        const bounded = BOUNDED[name];
        if (!bounded) wrong.push(`${s.name}: label ${name}="${value}" is not a known bounded label`);
        else if (!bounded(value, s)) wrong.push(`${s.name}: ${name}="${value}" is outside its bounded set`);
        // Whatever the set: nothing that names a file, a client or a user.
        if (name !== 'le' && name !== 'version') {
          if (value.includes('/') || value.includes('.bin') || value.includes('.txt')) wrong.push(`${s.name}: ${name}="${value}" looks like a path`);
          if (net.isIP(value) !== 0 || /\d+\.\d+\.\d+\.\d+/.test(value) || value.includes('127.0.0.1')) wrong.push(`${s.name}: ${name}="${value}" looks like an address`);
          if (value.includes(USER)) wrong.push(`${s.name}: ${name}="${value}" names the user`);
        }
      }
    }
    assert.deepEqual(wrong, []);
    // Nor anywhere else in the exposition (a HELP text, a metric name).
    for (const needle of ['127.0.0.1', USER, 'v-0.bin', 'eicar.txt', 'expire/old.bin']) assert.ok(!after1.text.includes(needle), `the exposition mentions ${needle}`);
  });

  it('reads the same through a real Prometheus scraping the metrics port', async function () {
    this.timeout(60_000);
    const p = prometheus!;
    await p.waitForScrapes(2);
    assert.deepEqual(vectorBy(await p.vector(`up{job="${SCRAPE_JOB}"}`), ['instance']), { [new URL(server!.running.metricsAddress!).host]: 1 });
    const perDoor: Record<string, number> = {};
    for (const [key, n] of Object.entries(MADE.uploads)) perDoor[key.split('/')[0]!] = (perDoor[key.split('/')[0]!] ?? 0) + n;
    // The first scrapes may predate the end of the traffic: wait until Prometheus has the final counts.
    const doors = await p.waitFor('sum by (door) (file_server_uploads_total)', (s) => {
      const got = vectorBy(s, ['door']);
      return got.legacy === perDoor.legacy && got.tus === perDoor.tus;
    });
    assert.deepEqual(vectorBy(doors, ['door']), perDoor);
    assert.deepEqual(vectorBy(await p.vector('sum by (door, scheme) (file_server_uploads_total)'), ['door', 'scheme']), MADE.uploads);
    assert.deepEqual(vectorBy(await p.vector('sum by (door, code) (file_server_upload_errors_total)'), ['door', 'code']), MADE.uploadErrors);
    assert.deepEqual(vectorBy(await p.vector('sum by (door, code) (file_server_download_errors_total)'), ['door', 'code']), MADE.downloadErrors);
    assert.deepEqual(vectorBy(await p.vector('sum(file_server_downloads_total)'), []), { '': MADE.downloads });
    assert.deepEqual(vectorBy(await p.vector('sum(infected_files_total)'), []), { '': 1 });
    assert.deepEqual(vectorBy(await p.vector('sum by (reason) (file_deletions_total)'), ['reason']), { expired: 1, client: 0 });
    assert.deepEqual(vectorBy(await p.vector('sum by (event) (file_server_tus_uploads_total)'), ['event']), { created: 2, finished: 2, terminated: 0, expired: 0 });
    assert.deepEqual(vectorBy(await p.vector('sum by (verdict) (file_server_scan_duration_seconds_count)'), ['verdict']), MADE.scans);
    assert.deepEqual(vectorBy(await p.vector('max(file_server_clamd_up) + max(file_server_redis_up)'), []), { '': 2 });
    assert.deepEqual(vectorBy(await p.vector('count by (door) (file_server_upload_size_bytes_bucket)'), ['door']), { legacy: SIZE_BUCKETS.length + 1, tus: SIZE_BUCKETS.length + 1 });
    assert.deepEqual(vectorBy(await p.vector('count by (door) (file_server_upload_duration_seconds_bucket)'), ['door']), { legacy: DURATION_BUCKETS.length + 1, tus: DURATION_BUCKETS.length + 1 });
    // All legacy uploads lie in the (1 KiB, 16 KiB] bucket: Prometheus interpolates its median inside it.
    const median = Number((await p.vector('histogram_quantile(0.5, sum by (le) (file_server_upload_size_bytes_bucket{door="legacy"}))'))[0]?.value[1]);
    assert.ok(median > 1024 && median <= 16384, `median upload size ${median}`);
    for (const name of ['memory_usage_bytes', 'cpu_usage_percent', 'goroutines_count', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes']) {
      assert.equal((await p.vector(name)).length, 1, name);
    }
    // Prometheus took every series of the exposition: no sample was dropped as unreadable.
    const names = new Set((await p.vector(`count by (__name__) ({job="${SCRAPE_JOB}"})`)).map((s) => s.metric.__name__));
    const missing = [...new Set(after1.parsed.samples.map((s) => s.name))].filter((n) => !names.has(n));
    assert.deepEqual(missing, []);
  });

  it('serves no /metrics on the public port, and /healthz on both', async () => {
    const s = server!;
    assert.notEqual(new URL(s.url).port, new URL(s.running.metricsAddress!).port);
    const publicMetrics = await rawRequest(s.url, 'GET', '/metrics');
    assert.equal(publicMetrics.status, 404);
    assert.ok(!publicMetrics.body.toString().includes('file_server_'));
    const publicHealth = await rawRequest(s.url, 'GET', '/healthz');
    assert.equal(publicHealth.status, 200);
    assert.equal(publicHealth.body.toString('latin1'), 'ok\n');
    const health = await get(`${s.running.metricsAddress}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(health.body, 'ok\n');
    assert.equal((await get(`${s.running.metricsAddress}/nothing-here`)).status, 404);
    const post = await fetch(`${s.running.metricsAddress}/metrics`, { method: 'POST', signal: AbortSignal.timeout(5000) });
    assert.equal(post.status, 405);
    await post.body?.cancel();
  });

  it('/readyz says 503, naming clamd, while clamd is down, and 200 once it is back', async function () {
    this.timeout(90_000);
    const s = server!;
    const url = `${s.running.metricsAddress}/readyz`;
    const ready = await get(url);
    assert.equal(ready.status, 200, ready.body);
    assert.match(ready.contentType ?? '', /^application\/json/);
    assert.deepEqual(JSON.parse(ready.body), { ready: true, checks: { store: 'ok', redis: 'ok', clamd: 'ok' } });
    try {
      await clamd!.stop();
      const down = await waitForStatus(url, 503, 10_000);
      assert.equal(down.status, 503, down.body);
      const body = JSON.parse(down.body) as { ready: boolean; checks: Record<string, string> };
      assert.equal(body.ready, false);
      assert.match(body.checks.clamd ?? '', /^down/);
      assert.equal(body.checks.redis, 'ok');
      assert.equal(body.checks.store, 'ok');
      assert.equal(await waitForGauge(s, 'file_server_clamd_up', 0, 5000), 0);
    } finally {
      await clamd!.start();
    }
    const back = await waitForStatus(url, 200, 15_000);
    assert.equal(back.status, 200, back.body);
    assert.equal(await waitForGauge(s, 'file_server_clamd_up', 1, 5000), 1);
  });

  it('/readyz says 503, naming redis, while Redis is down, and 200 once it is back', async function () {
    this.timeout(90_000);
    const s = server!;
    const url = `${s.running.metricsAddress}/readyz`;
    assert.equal((await waitForStatus(url, 200, 10_000)).status, 200);
    try {
      await redis!.stop();
      const down = await waitForStatus(url, 503, 10_000);
      assert.equal(down.status, 503, down.body);
      const body = JSON.parse(down.body) as { ready: boolean; checks: Record<string, string> };
      assert.equal(body.ready, false);
      assert.match(body.checks.redis ?? '', /^down/);
      assert.equal(body.checks.clamd, 'ok');
      assert.equal(await waitForGauge(s, 'file_server_redis_up', 0, 5000), 0);
    } finally {
      await redis!.start();
    }
    // ioredis reconnects by itself, backing off up to 2 s between attempts.
    const back = await waitForStatus(url, 200, 15_000);
    assert.equal(back.status, 200, back.body);
    assert.equal(await waitForGauge(s, 'file_server_redis_up', 1, 5000), 1);
  });
});
