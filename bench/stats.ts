// Small numeric helpers for the bench: medians, percentiles, a seeded PRNG and a bounded task pool.
import { setMaxListeners } from 'node:events';

/** The median; the mean of the middle two for an even count. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Nearest-rank percentile (p in 0..100): the smallest value with at least p % of the values at or below it. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1]!;
}

/** mulberry32: a tiny deterministic PRNG, so every target gets the same "random" offsets. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Runs task(0) … task(count - 1) with at most `concurrency` in flight; resolves with the results in index
 * order. The first failure aborts the signal handed to the tasks (so the uploads still in flight stop at once),
 * nothing more is started, and that failure is rethrown once every task has settled.
 */
export async function pool<T>(count: number, concurrency: number, task: (index: number, signal: AbortSignal) => Promise<T>, outer?: AbortSignal): Promise<T[]> {
  const results = new Array<T>(count);
  const failure = new AbortController();
  const signal = outer ? AbortSignal.any([outer, failure.signal]) : failure.signal;
  setMaxListeners(0, signal);
  let next = 0;
  let failed: Error | undefined;
  const worker = async () => {
    while (failed === undefined && next < count) {
      const index = next++;
      try {
        signal.throwIfAborted();
        results[index] = await task(index, signal);
      } catch (err) {
        failed ??= outer?.aborted ? (outer.reason as Error) : err instanceof Error ? err : new Error(String(err));
        failure.abort(failed);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, count)) }, worker));
  if (failed !== undefined) throw failed;
  return results;
}

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** "1 GiB", "64 KiB", "4 MiB": sizes as the table names them. */
export function sizeLabel(bytes: number): string {
  if (bytes >= GiB && bytes % GiB === 0) return `${bytes / GiB} GiB`;
  if (bytes >= MiB && bytes % MiB === 0) return `${bytes / MiB} MiB`;
  if (bytes >= KiB && bytes % KiB === 0) return `${bytes / KiB} KiB`;
  return `${bytes} B`;
}
