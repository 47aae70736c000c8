// Results: one row per measured quantity, ours next to a baseline with the ratio ours / baseline, printed as a
// table and written as JSON.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { median } from './stats.js';

export interface Measured {
  /** Who was measured, e.g. "hmac-file-server legacy PUT" or "nginx WebDAV PUT". */
  label: string;
  /** Median over the runs. */
  median: number;
  runs: number[];
}

export interface Row {
  /** What was done, e.g. "Legacy PUT 1 GiB". */
  group: string;
  /** What was read off, e.g. "MiB/s at answer". */
  metric: string;
  unit: string;
  better: 'higher' | 'lower';
  ours: Measured;
  baseline?: Measured;
  /** ours.median / baseline.median. */
  ratio?: number;
  note?: string;
}

export function measured(label: string, runs: readonly number[]): Measured {
  return { label, median: median(runs), runs: [...runs] };
}

export function row(group: string, metric: string, unit: string, better: Row['better'], ours: Measured, baseline?: Measured, note?: string): Row {
  const ratio = baseline && baseline.median !== 0 && Number.isFinite(baseline.median) ? ours.median / baseline.median : undefined;
  return { group, metric, unit, better, ours, ...(baseline ? { baseline } : {}), ...(ratio !== undefined ? { ratio } : {}), ...(note ? { note } : {}) };
}

export interface ScenarioResult {
  id: string;
  title: string;
  status: 'ok' | 'failed' | 'skipped';
  seconds: number;
  rows: Row[];
  /** Why it failed or was skipped. */
  message?: string;
  /** What it scaled down or left out. */
  notes?: string[];
}

export interface Report {
  tool: string;
  mode: 'quick' | 'full';
  runsPerMeasurement: number;
  started: string;
  seconds: number;
  host: Record<string, string | number>;
  notes: string[];
  scenarios: ScenarioResult[];
}

function format(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return '—';
  const abs = Math.abs(value);
  if (abs >= 1000) return value.toFixed(0);
  if (abs >= 100) return value.toFixed(1);
  if (abs >= 1) return value.toFixed(2);
  return value.toPrecision(2);
}

/** "MiB/s at answer ↑", "p99 latency, ms ↓": the unit unless the metric names it, and which way is better. */
function metricLabel(r: Row): string {
  return `${r.metric.includes(r.unit) ? r.metric : `${r.metric}, ${r.unit}`} ${r.better === 'higher' ? '↑' : '↓'}`;
}

export const LEGEND = '↑ higher is better, ↓ lower is better; Ratio = hmac-file-server / baseline (medians)';

function pad(text: string, width: number, right = false): string {
  return right ? text.padStart(width) : text.padEnd(width);
}

/** The side-by-side table: a header, then one line per row, scenarios that failed or were skipped at the end. */
export function table(report: Report): string {
  const lines: string[][] = [['Scenario', 'Metric', 'hmac-file-server', 'Baseline', 'Baseline value', 'Ratio', '']];
  for (const scenario of report.scenarios) {
    for (const r of scenario.rows) {
      lines.push([
        r.group,
        metricLabel(r),
        format(r.ours.median),
        r.baseline?.label ?? '—',
        format(r.baseline?.median),
        r.ratio === undefined ? '—' : r.ratio.toFixed(2),
        r.note ?? '',
      ]);
    }
  }
  const widths = lines[0]!.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
  const numeric = new Set([2, 4, 5]);
  const out = lines.map((l) => l.map((cell, i) => pad(cell, widths[i]!, numeric.has(i))).join('  ').trimEnd());
  out.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  ').trimEnd());
  out.push(LEGEND);
  for (const scenario of report.scenarios) {
    for (const text of scenario.notes ?? []) out.push(`note    ${scenario.id}: ${text}`);
    if (scenario.status === 'failed') out.push(`FAILED  ${scenario.id}: ${scenario.message ?? ''}`);
    if (scenario.status === 'skipped') out.push(`skipped ${scenario.id}: ${scenario.message ?? ''}`);
  }
  return out.join('\n');
}

/** The same table as GitHub markdown (for the README's "Performance" section). */
export function markdown(report: Report): string {
  const out = ['| Scenario | Metric | hmac-file-server | Baseline | Baseline value | Ratio |', '|---|---|--:|---|--:|--:|'];
  for (const scenario of report.scenarios) {
    for (const r of scenario.rows) {
      out.push(
        `| ${r.group} | ${metricLabel(r)} | ${format(r.ours.median)} | ${r.baseline?.label ?? '—'} | ${format(r.baseline?.median)} | ${r.ratio === undefined ? '—' : r.ratio.toFixed(2)} |`,
      );
    }
  }
  out.push('', LEGEND);
  return out.join('\n');
}

export async function writeJson(file: string, report: Report): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, `${JSON.stringify(report, null, 2)}\n`);
}
