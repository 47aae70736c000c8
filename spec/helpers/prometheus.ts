// A real Prometheus (Debian's prometheus package) scraping a test server's metrics listener every second, from a
// private config and TSDB in a temp folder, on a free loopback port; plus promtool's linter for an exposition and
// a small parser of the text exposition format, so specs can check both what is exposed and what Prometheus
// makes of it.
import { spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureDebianPackages } from './debian-packages.js';
import { freePort, restartable, startDaemon, type Restartable } from './local-daemon.js';

export const PROMETHEUS_BINARIES: Record<string, string> = { prometheus: 'prometheus', promtool: 'prometheus' };

/** The job name every scraped target gets (the job label of its series). */
export const SCRAPE_JOB = 'hmac-file-server';

/** One series of an instant vector: its labels and its value ("NaN", "+Inf" included, as Prometheus writes them). */
export interface VectorSample {
  metric: Record<string, string>;
  value: [number, string];
}

/** What /api/v1/query answered: the HTTP status and the JSON body. */
export interface QueryAnswer {
  httpStatus: number;
  status: 'success' | 'error';
  errorType?: string;
  error?: string;
  data?: { resultType: 'vector' | 'matrix' | 'scalar' | 'string'; result: unknown };
}

export interface RunningPrometheus extends Restartable {
  /** http://127.0.0.1:PORT */
  url: string;
  /** The raw answer of /api/v1/query for expr (evaluated now), whatever its status. */
  query(expr: string): Promise<QueryAnswer>;
  /** The instant vector expr evaluates to now; throws on anything but a successful vector answer. */
  vector(expr: string): Promise<VectorSample[]>;
  /**
   * Polls expr until accept holds for its vector (by default: it is not empty), every 250 ms up to timeoutMs;
   * returns that vector, or throws with the last answer.
   */
  waitFor(expr: string, accept?: (samples: VectorSample[]) => boolean, timeoutMs?: number): Promise<VectorSample[]>;
  /** Waits until every target's up is 1 and at least `scrapes` more scrapes have happened since the call. */
  waitForScrapes(scrapes?: number, timeoutMs?: number): Promise<void>;
}

const HTTP_TIMEOUT_MS = 5000;

/** targets: the metrics addresses to scrape, as http://host:port (RunningServer.metricsAddress). */
export async function startPrometheus(targets: readonly string[]): Promise<RunningPrometheus> {
  await ensureDebianPackages(PROMETHEUS_BINARIES);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-prometheus-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const hostPorts = targets.map((t) => {
    const u = new URL(t);
    if (u.hostname !== '127.0.0.1' && u.hostname !== '[::1]') throw new Error(`only loopback targets are scraped, not ${t}`);
    return u.host;
  });
  const configFile = path.join(dir, 'prometheus.yml');
  // JSON is YAML: no YAML writer needed.
  await writeFile(
    configFile,
    JSON.stringify({
      global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
      scrape_configs: [{ job_name: SCRAPE_JOB, metrics_path: '/metrics', static_configs: [{ targets: hostPorts }] }],
    }),
  );
  const logFile = path.join(dir, 'prometheus.log');
  const args = [
    `--config.file=${configFile}`,
    `--storage.tsdb.path=${path.join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn',
  ];

  const query = async (expr: string): Promise<QueryAnswer> => {
    const res = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(expr)}`, { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
    const body = (await res.json()) as Omit<QueryAnswer, 'httpStatus'>;
    return { httpStatus: res.status, ...body };
  };
  const vector = async (expr: string): Promise<VectorSample[]> => {
    const answer = await query(expr);
    if (answer.status !== 'success' || answer.data?.resultType !== 'vector') throw new Error(`query ${expr} answered ${JSON.stringify(answer)}`);
    return answer.data.result as VectorSample[];
  };
  const waitFor = async (expr: string, accept: (samples: VectorSample[]) => boolean = (s) => s.length > 0, timeoutMs = 15_000): Promise<VectorSample[]> => {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      try {
        const samples = await vector(expr);
        if (accept(samples)) return samples;
        last = samples;
      } catch (err) {
        last = (err as Error).message;
      }
      if (Date.now() > deadline) throw new Error(`prometheus: ${expr} not as expected within ${timeoutMs} ms; last answer: ${JSON.stringify(last)}`);
      await sleep(250);
    }
  };
  // Every scrape appends an `up` sample per target, in the same commit as the scraped samples.
  const scrapesExpr = `sum(count_over_time(up{job="${SCRAPE_JOB}"}[1h])) or vector(0)`;
  const scrapeCount = async (): Promise<number> => Number((await vector(scrapesExpr))[0]?.value[1] ?? 0);

  const service = restartable(dir, () => startDaemon('prometheus', 'prometheus', args, { logFile }), {
    check: async () => {
      try {
        return (await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1000) })).status === 200;
      } catch {
        return false;
      }
    },
    timeoutMs: 30_000,
    notReady: 'prometheus was not ready within 30 s',
  });
  const prometheus: RunningPrometheus = {
    ...service,
    url,
    query,
    vector,
    waitFor,
    async waitForScrapes(scrapes = 2, timeoutMs = 15_000) {
      await waitFor(`up{job="${SCRAPE_JOB}"}`, (s) => s.length === hostPorts.length && s.every((x) => x.value[1] === '1'), timeoutMs);
      const want = (await scrapeCount()) + scrapes * hostPorts.length;
      await waitFor(scrapesExpr, (s) => Number(s[0]?.value[1] ?? 0) >= want, timeoutMs);
    },
  };
  try {
    await prometheus.start();
  } catch (err) {
    await prometheus.dispose();
    throw err;
  }
  return prometheus;
}

/** What `promtool check metrics` said of an exposition: its exit code and every line it wrote. */
export interface PromtoolVerdict {
  code: number | null;
  lines: string[];
}

/** Lints an exposition with `promtool check metrics` (read from stdin); bounded by timeoutMs. */
export async function promtoolCheckMetrics(exposition: string, timeoutMs = 15_000): Promise<PromtoolVerdict> {
  await ensureDebianPackages(PROMETHEUS_BINARIES);
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    const collect = (chunk: Buffer) => (output += chunk.toString('utf8'));
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`promtool check metrics did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, lines: output.split('\n').filter((l) => l.trim() !== '') });
    });
    child.stdin.end(exposition);
  });
}

/** One sample line of a text exposition. */
export interface ExposedSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  samples: ExposedSample[];
  /** # TYPE per metric family. */
  types: Map<string, string>;
  /** # HELP per metric family. */
  help: Map<string, string>;
}

const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|(?=\}))/y;

function unescapeLabel(value: string): string {
  return value.replace(/\\(.)/g, (_m, c: string) => (c === 'n' ? '\n' : c));
}

/** Parses the Prometheus text format (version 0.0.4), as prom-client writes it; throws on a line it cannot read. */
export function parseExposition(text: string): Exposition {
  const samples: ExposedSample[] = [];
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) ?(.*)$/.exec(line);
    if (meta) {
      (meta[1] === 'HELP' ? help : types).set(meta[2]!, meta[3]!);
      continue;
    }
    if (line.startsWith('#')) continue;
    const head = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
    if (!head) throw new Error(`unreadable exposition line: ${line}`);
    const name = head[1]!;
    let at = name.length;
    const labels: Record<string, string> = {};
    if (line[at] === '{') {
      at += 1;
      while (line[at] !== '}') {
        LABEL.lastIndex = at;
        const m = LABEL.exec(line);
        if (!m) throw new Error(`unreadable labels in exposition line: ${line}`);
        labels[m[1]!] = unescapeLabel(m[2]!);
        at = LABEL.lastIndex;
      }
      at += 1;
    }
    const rest = line.slice(at).trim().split(/\s+/);
    const value = Number(rest[0] === '+Inf' ? Infinity : rest[0] === '-Inf' ? -Infinity : rest[0]);
    // NaN in any case, as Prometheus reads it (Go's ParseFloat): prom-client writes "Nan", e.g. for the event loop
    // lag of a scrape that came before any sample.
    if (rest[0] === undefined || (Number.isNaN(value) && rest[0].toLowerCase() !== 'nan')) throw new Error(`unreadable value in exposition line: ${line}`);
    samples.push({ name, labels, value });
  }
  return { samples, types, help };
}

/** The samples of name whose labels include every pair of match. */
export function samplesOf(exposition: Exposition, name: string, match: Record<string, string> = {}): ExposedSample[] {
  return exposition.samples.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v));
}

/** The sum of the samples of name whose labels include match; undefined when there is none. */
export function valueOf(exposition: Exposition, name: string, match: Record<string, string> = {}): number | undefined {
  const found = samplesOf(exposition, name, match);
  return found.length === 0 ? undefined : found.reduce((sum, s) => sum + s.value, 0);
}
