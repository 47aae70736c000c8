// Installs the Debian packages an end-to-end test needs, so a fresh machine (or CI) runs the same tests as a
// developer's. Missing software is an error, never a silent skip: a skipped e2e test proves nothing.
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

// One `apt-get update` per test process is enough, however many suites ask.
let updated: Promise<unknown> | undefined;

/** An absolute path must exist; a bare name must be an executable somewhere on PATH. */
async function isPresent(binary: string): Promise<boolean> {
  const candidates = path.isAbsolute(binary)
    ? [binary]
    : (process.env.PATH ?? '').split(path.delimiter).filter(Boolean).map((dir) => path.join(dir, binary));
  const mode = path.isAbsolute(binary) ? constants.F_OK : constants.X_OK;
  for (const candidate of candidates) {
    try {
      await access(candidate, mode);
      return true;
    } catch {
      // try the next PATH entry
    }
  }
  return false;
}

async function apt(args: string[]): Promise<void> {
  try {
    await run('apt-get', args, {
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (err) {
    const { stderr } = err as { stderr?: string };
    throw new Error(`apt-get ${args.join(' ')} failed: ${(err as Error).message}\n${stderr ?? ''}`, { cause: err });
  }
}

/**
 * binaries maps a command name (looked up on PATH) or an absolute file path to the Debian package that
 * provides it, e.g. `{ prosody: 'prosody', '/usr/lib/prosody/modules/…': 'prosody-modules' }`.
 */
export async function ensureDebianPackages(binaries: Record<string, string>): Promise<void> {
  const missing: string[] = [];
  for (const [binary, pkg] of Object.entries(binaries)) {
    if (!(await isPresent(binary))) missing.push(pkg);
  }
  if (missing.length === 0) return;
  const packages = [...new Set(missing)].sort();
  if (process.getuid?.() !== 0) {
    throw new Error(`Missing Debian packages for the end-to-end tests; install them as root: apt-get install ${packages.join(' ')}`);
  }
  // A first run installs several packages and would otherwise look hung for minutes.
  process.stderr.write(`tests: installing missing Debian packages: ${packages.join(' ')} (apt-get, once per machine)\n`);
  updated ??= apt(['update']).catch((err: unknown) => {
    updated = undefined;
    throw err;
  });
  await updated;
  await apt(['install', '-y', '--no-install-recommends', ...packages]);
  const stillMissing: string[] = [];
  for (const binary of Object.keys(binaries)) {
    if (!(await isPresent(binary))) stillMissing.push(binary);
  }
  if (stillMissing.length > 0) {
    throw new Error(`apt-get installed ${packages.join(' ')} but these are still missing: ${stillMissing.join(', ')}`);
  }
}
