// The embedded dedup index: one small JSON file per blob with its references, needing no service and
// surviving restarts. Updates of one blob are serialised in this process and land by rename.
//
//   StoreDir/.hmac/refs/<sha[0..2]>/<sha>.json    ["<ref>", …]
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { createPathLock } from '../hooks/path-lock.js';
import type { DedupIndex } from './dedup-index.js';

export class EmbeddedDedupIndex implements DedupIndex {
  private readonly lock = createPathLock();

  constructor(private readonly dir: string) {}

  private file(sha: string): string {
    return path.join(this.dir, sha.slice(0, 2), `${sha}.json`);
  }

  async refs(sha: string): Promise<string[]> {
    try {
      return JSON.parse(await readFile(this.file(sha), 'utf8')) as string[];
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  private async save(sha: string, refs: string[]): Promise<void> {
    const file = this.file(sha);
    if (refs.length === 0) return rm(file, { force: true });
    await mkdir(path.dirname(file), { recursive: true, mode: 0o750 });
    const temp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await writeFile(temp, JSON.stringify(refs), { mode: 0o640, flag: 'wx' });
      await rename(temp, file);
    } finally {
      await rm(temp, { force: true });
    }
  }

  addRef(sha: string, ref: string): Promise<boolean> {
    return this.lock(sha, async () => {
      const refs = await this.refs(sha);
      if (refs.includes(ref)) return false;
      await this.save(sha, [...refs, ref]);
      return refs.length === 0;
    });
  }

  removeRef(sha: string, ref: string): Promise<boolean> {
    return this.lock(sha, async () => {
      const refs = await this.refs(sha);
      const left = refs.filter((r) => r !== ref);
      if (left.length !== refs.length) await this.save(sha, left);
      return left.length === 0;
    });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
