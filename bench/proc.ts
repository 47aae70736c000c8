// What the kernel says about a server process: resident memory (VmRSS, VmHWM in /proc/<pid>/status), CPU
// time (utime + stime in /proc/<pid>/stat, all threads) and its children (nginx's workers).
import { execFileSync } from 'node:child_process';
import { readFile, readdir, writeFile } from 'node:fs/promises';

let ticks: number | undefined;

/** Clock ticks per second (USER_HZ), in which /proc/<pid>/stat counts CPU time. */
function clockTicks(): number {
  if (ticks === undefined) {
    try {
      ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticks = 100;
    }
  }
  return ticks;
}

async function statusField(pid: number, field: 'VmRSS' | 'VmHWM'): Promise<number> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8').catch((err: NodeJS.ErrnoException) => {
    // A child that has exited holds no memory any more.
    if (err.code === 'ENOENT' || err.code === 'ESRCH') return '';
    throw err;
  });
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  return match ? Number(match[1]) * 1024 : 0;
}

/** Resident bytes now, summed over pids. */
export async function rssOf(pids: readonly number[]): Promise<number> {
  let total = 0;
  for (const pid of pids) total += await statusField(pid, 'VmRSS');
  return total;
}

/** Peak resident bytes since start or the last resetPeak, summed over pids. */
export async function hwmOf(pids: readonly number[]): Promise<number> {
  let total = 0;
  for (const pid of pids) total += await statusField(pid, 'VmHWM');
  return total;
}

/** Resets VmHWM to the current RSS (clear_refs "5", Linux 4.0+). */
export async function resetPeak(pids: readonly number[]): Promise<void> {
  for (const pid of pids) {
    await writeFile(`/proc/${pid}/clear_refs`, '5').catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT' && err.code !== 'ESRCH') throw err;
    });
  }
}

/** CPU seconds (user + system, every thread) used so far, summed over pids. */
export async function cpuSecondsOf(pids: readonly number[]): Promise<number> {
  let total = 0;
  for (const pid of pids) {
    // A child that exited since the pids were listed (an nginx helper process) has nothing more to count.
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ESRCH') return undefined;
      throw err;
    });
    if (stat === undefined) continue;
    // The command name (field 2) may hold spaces and parentheses: count fields after its closing ")".
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    total += (Number(fields[11]) + Number(fields[12])) / clockTicks();
  }
  return total;
}

/** The direct children of pid (every thread's list). */
export async function childrenOf(pid: number): Promise<number[]> {
  const children: number[] = [];
  for (const task of await readdir(`/proc/${pid}/task`).catch(() => [])) {
    const text = await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '');
    children.push(...text.split(/\s+/).filter(Boolean).map(Number));
  }
  return children;
}

export interface PeakSampler {
  /** Stops sampling; the highest resident total seen (for one process also its VmHWM since the start). */
  stop(): Promise<number>;
}

/**
 * Samples the summed VmRSS of pids every intervalMs until stop(). The peak of one process also takes its
 * VmHWM (reset at the start), which catches a spike between two samples.
 */
export async function samplePeak(pids: readonly number[], intervalMs: number): Promise<PeakSampler> {
  await resetPeak(pids);
  let peak = await rssOf(pids);
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    void rssOf(pids)
      .then((rss) => (peak = Math.max(peak, rss)))
      .catch(() => undefined)
      .finally(() => (busy = false));
  }, intervalMs);
  // Never what keeps the bench running; stop() may be called again (a finally after the result).
  timer.unref();
  let stopped: number | undefined;
  return {
    async stop() {
      if (stopped !== undefined) return stopped;
      clearInterval(timer);
      const last = await rssOf(pids).catch(() => 0);
      peak = Math.max(peak, last);
      if (pids.length === 1) peak = Math.max(peak, await hwmOf(pids).catch(() => 0));
      stopped = peak;
      return peak;
    },
  };
}
