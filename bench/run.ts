// npm run bench [-- --quick] [--only <id>[,<id>…]] [--runs N] [--out FILE] [--dir DIR] [--markdown] [--list]
//
// Measures hmac-file-server (its CLI, compiled from this checkout, as a child process) against Debian's nginx
// (WebDAV PUT and static GET) and a bare @tus/server, all on 127.0.0.1 with their files in one temp folder
// on one disk, and prints a side-by-side table with ratios (ours / baseline); the JSON goes to
// bench/results/latest.json (or --out). Exit status: 0 when every scenario ran and every byte verified,
// 1 when a scenario failed, 2 for a usage error. Nothing is left behind: every folder, process and
// clamd started here is removed or stopped on the way out, also after a failure or Ctrl-C.
import { setMaxListeners } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startClamd, type RunningClamd } from '../spec/helpers/clamd.js';
import { markdown, table, writeJson, type Report, type Row, type ScenarioResult } from './report.js';
import { freeBytes, profileFor, SCENARIOS, type Scenario } from './scenarios.js';
import { GiB } from './stats.js';
import { BENCH_CONFIG, buildServers, FEATURES_CONFIG, ensureNginxDav, REPO, reportTo, stopEverything, takeEvents, type Build } from './targets.js';

const USAGE = `Usage: npm run bench -- [options]
  --quick           small sizes (4 MiB instead of 1 GiB, 20 instead of 200 uploads, 50 Range GETs), for CI
  --only ID[,ID]    run only these scenarios (repeatable); --list shows them
  --runs N          runs per measurement, the median is reported (default 3; 1 with --quick)
  --out FILE        where the JSON goes (default bench/results/latest.json)
  --dir DIR         where the temp folder (every store, the nginx root) goes; default: the OS temp folder
  --markdown        also print the table as markdown
  --list            list the scenarios and exit
`;

function fail(message: string): never {
  process.stderr.write(`bench: ${message}\n\n${USAGE}`);
  process.exit(2);
}

function options() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        quick: { type: 'boolean', default: false },
        only: { type: 'string', multiple: true },
        runs: { type: 'string' },
        out: { type: 'string' },
        dir: { type: 'string' },
        markdown: { type: 'boolean', default: false },
        list: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    fail((err as Error).message);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  if (values.list) {
    for (const s of SCENARIOS) process.stdout.write(`${s.id.padEnd(16)} ${s.title}\n`);
    process.exit(0);
  }
  const wanted = (values.only ?? []).flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
  const unknown = wanted.filter((id) => !SCENARIOS.some((s) => s.id === id));
  if (unknown.length > 0) fail(`unknown scenario ${unknown.join(', ')} (--list shows them)`);
  // Quick proves the harness: one run each unless asked for more; the full bench takes medians of 3.
  const runs = values.runs === undefined ? (values.quick ? 1 : 3) : Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1 || runs > 25) fail('--runs is a whole number from 1 to 25');
  const selected = wanted.length === 0 ? SCENARIOS : SCENARIOS.filter((s) => wanted.includes(s.id));
  return {
    quick: values.quick,
    runs,
    selected,
    out: path.resolve(values.out ?? path.join(REPO, 'bench', 'results', 'latest.json')),
    markdown: values.markdown,
    dir: path.resolve(values.dir ?? os.tmpdir()),
  };
}

const log = (line: string) => process.stderr.write(`${line}\n`);
reportTo(log);

async function main(): Promise<number> {
  const opts = options();
  const profile = profileFor(opts.quick);
  const started = new Date();
  const root = await mkdtemp(path.join(opts.dir, 'hfs-bench-'));
  let clamd: Promise<RunningClamd> | undefined;
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    await stopEverything();
    if (clamd) await (await clamd.catch(() => undefined))?.dispose();
    await rm(root, { recursive: true, force: true });
  };
  // Ctrl-C (or SIGTERM): the running scenario is aborted, the rest are not started, the report is still
  // written; a second signal stops at once. Either way every server is stopped and the temp folder removed.
  const stopRequested = new AbortController();
  const interrupted = (signal: NodeJS.Signals) => {
    if (stopRequested.signal.aborted) {
      void cleanup().finally(() => process.exit(130));
      return;
    }
    log(`bench: ${signal}: stopping (again to stop at once)`);
    stopRequested.abort(new Error(`interrupted by ${signal}`));
  };
  process.on('SIGINT', interrupted);
  process.on('SIGTERM', interrupted);

  const notes: string[] = [];
  const results: ScenarioResult[] = [];
  let build: Build | undefined;
  try {
    const free = await freeBytes(root);
    const need = Math.max(...opts.selected.map((s) => s.diskNeed(profile)));
    log(`bench: ${opts.quick ? 'quick' : 'full'} run, ${opts.runs} run(s) per measurement, ${opts.selected.length} scenario(s); ${(free / GiB).toFixed(1)} GiB free in the temp folder, the largest scenario needs ${(need / GiB).toFixed(2)} GiB`);
    notes.push(...(await ensureNginxDav()));
    log('bench: compiling the server and the tus baseline (tsc, into the temp folder)');
    build = await buildServers(root);
    notes.push(`server compiled with tsc in ${build.seconds.toFixed(1)} s and run as plain node (like npm start)`);
    if (build.warnings) {
      notes.push('tsc reported type errors but emitted; see the log');
      log(`bench: tsc reported problems (it emitted anyway):\n${build.warnings}`);
    }
    notes.push(`hmac-file-server config beyond its defaults: ${Object.entries(BENCH_CONFIG).map(([k, v]) => `${k} = ${v}`).join(', ')}, MaxUploadSize = 2GiB, LogFile in its temp folder; with AES+dedup+ClamAV also ${Object.entries(FEATURES_CONFIG).map(([k, v]) => `${k} = ${v}`).join(', ')}`);
    notes.push('nginx: 1 worker, sendfile on, tcp_nopush off, access_log on; bare @tus/server: @tus/file-store defaults, no logging');
    notes.push('every store, nginx root and temp path below one temp folder (one filesystem); the client (node:http) shares the machine');

    for (const scenario of opts.selected) {
      if (stopRequested.signal.aborted) break;
      results.push(await runScenario(scenario));
    }
  } catch (err) {
    log(`bench: ${(err as Error).stack ?? String(err)}`);
    results.push({ id: 'setup', title: 'setting up the targets', status: 'failed', seconds: 0, rows: [], message: (err as Error).message.split('\n')[0] ?? '' });
  } finally {
    await cleanup();
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
  }

  async function runScenario(scenario: Scenario): Promise<ScenarioResult> {
    const t0 = Date.now();
    const base = { id: scenario.id, title: scenario.title };
    const free = await freeBytes(root);
    const need = scenario.diskNeed(profile);
    if (free < need) {
      const message = `needs ${(need / GiB).toFixed(1)} GiB free, the temp folder's disk has ${(free / GiB).toFixed(1)} GiB`;
      log(`bench: skipping ${scenario.id}: ${message}`);
      return { ...base, status: 'skipped', seconds: 0, rows: [], message };
    }
    log(`bench: ${scenario.id}: ${scenario.title}`);
    const dir = await mkdtemp(path.join(root, `${scenario.id}-`));
    const scenarioNotes: string[] = [];
    const emitted: Row[] = [];
    // One deadline for every request of the scenario: thousands of requests listen to it at once.
    const signal = AbortSignal.any([AbortSignal.timeout(profile.scenarioTimeoutMs), stopRequested.signal]);
    setMaxListeners(100_000, signal);
    let result: ScenarioResult;
    try {
      const rows = await scenario.run({
        profile,
        runs: opts.runs,
        build: build!,
        dir,
        signal,
        log,
        note: (text) => {
          scenarioNotes.push(text);
          log(`  note: ${text}`);
        },
        emit: (...rows) => emitted.push(...rows),
        clamdSocket: async () => {
          clamd ??= startClamd({ streamMaxLength: '1100M' });
          return (await clamd).socketPath;
        },
      });
      const seconds = (Date.now() - t0) / 1000;
      log(`bench: ${scenario.id} done in ${seconds.toFixed(1)} s`);
      result = { ...base, status: 'ok', seconds, rows: [...emitted, ...rows] };
    } catch (err) {
      const seconds = (Date.now() - t0) / 1000;
      // Whatever broke once the deadline passed or a stop was asked for, that is the reason.
      const cause = signal.aborted ? (signal.reason as Error) : (err as Error);
      log(`bench: ${scenario.id} FAILED after ${seconds.toFixed(1)} s: ${cause.stack ?? String(cause)}`);
      result = { ...base, status: 'failed', seconds, rows: emitted, message: (cause.message ?? String(cause)).split('\n')[0]! };
    } finally {
      await stopEverything();
      await rm(dir, { recursive: true, force: true });
    }
    scenarioNotes.push(...takeEvents());
    return scenarioNotes.length > 0 ? { ...result, notes: scenarioNotes } : result;
  }

  const report: Report = {
    tool: 'hmac-file-server bench',
    mode: opts.quick ? 'quick' : 'full',
    runsPerMeasurement: opts.runs,
    started: started.toISOString(),
    seconds: (Date.now() - started.getTime()) / 1000,
    host: {
      cpus: os.cpus().length,
      cpu: os.cpus()[0]?.model ?? 'unknown',
      memoryGiB: Number((os.totalmem() / GiB).toFixed(1)),
      kernel: os.release(),
      node: process.version,
    },
    notes,
    scenarios: results,
  };
  process.stdout.write(`\n${table(report)}\n`);
  if (opts.markdown) process.stdout.write(`\n${markdown(report)}\n`);
  for (const note of notes) log(`note: ${note}`);
  await writeJson(opts.out, report);
  log(`bench: ${report.seconds.toFixed(1)} s in all; JSON in ${path.relative(process.cwd(), opts.out) || opts.out}`);
  if (stopRequested.signal.aborted) return 130;
  return results.some((r) => r.status === 'failed') ? 1 : 0;
}

// Explicitly: a handle some library left open must not keep a finished bench alive.
process.exit(await main());
