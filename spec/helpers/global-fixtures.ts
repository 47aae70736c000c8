// The test run's temp folder: mocha's global fixtures point TMPDIR at one private folder for the whole run, name
// whatever a spec or a daemon left in it, and remove it, so no run leaves hfs-* folders in the real temp folder.
import { mkdirSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

interface RunTemp {
  dir: string;
  /** TMPDIR as the run found it, put back at the end. */
  outer: string | undefined;
}

let runTemp: RunTemp | undefined;

/** tsx's compile cache folder, named as tsx names it (tsx-<euid>) below os.tmpdir(). */
const TSX_CACHE = `tsx-${process.geteuid?.() ?? os.userInfo().username}`;

/**
 * os.tmpdir() reads TMPDIR on every call and child processes inherit it, so specs, helpers and the daemons they
 * start all land here. Spec files are loaded before this runs: they must call os.tmpdir() in hooks and tests
 * only, never at module level. The name stays short because unix socket paths below it are limited to 107 bytes.
 */
export function mochaGlobalSetup(): void {
  const real = os.tmpdir();
  const dir = path.join(real, `hfs-test-run-${process.pid}`);
  // A crashed run with the same pid may have left its folder; nothing in it is worth keeping.
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { mode: 0o700 });
  // The CLI children of a run (runCli) would otherwise compile into an empty cache here, every run.
  mkdirSync(path.join(real, TSX_CACHE), { recursive: true, mode: 0o700 });
  symlinkSync(path.join(real, TSX_CACHE), path.join(dir, TSX_CACHE));
  runTemp = { dir, outer: process.env.TMPDIR };
  process.env.TMPDIR = dir;
}

export function mochaGlobalTeardown(): void {
  if (!runTemp) return;
  const { dir, outer } = runTemp;
  runTemp = undefined;
  if (outer === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = outer;
  // Named rather than silently removed: a leftover means some spec lacks its cleanup and leaks outside a run.
  const left = readdirSync(dir).filter((name) => name !== TSX_CACHE);
  if (left.length > 0) process.stderr.write(`temp folders left behind: ${left.join(', ')}\n`);
  // rm removes the cache link itself, never what it points to.
  rmSync(dir, { recursive: true, force: true });
}
