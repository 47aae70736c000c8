// Content-addressed blobs for deduplication. A blob is one more hard link to the bytes of every path that holds
// the same plaintext, so downloads read a path exactly as before and removing one name never removes bytes
// another name still uses:
//
//   StoreDir/.hmac/blobs/<sha[0..2]>/<sha>         the bytes as stored (encrypted once, when encryption is on)
//   StoreDir/.hmac/blobs/<sha[0..2]>/<sha>.json    {"size", "encryption"}: how to read them
//
// sha is the SHA-256 of the plaintext. Work on one blob is serialised by the lock the store is given.
import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createPathLock, type PathLock } from '../hooks/path-lock.js';
import type { BlobInfo, Blobs } from './storage.js';

export class BlobStore implements Blobs {
  /**
   * @param lock serialises adopt and release per blob: in this process, or across instances (Redis) when
   * they share the StoreDir.
   */
  constructor(
    readonly dir: string,
    readonly lock: PathLock = createPathLock(),
  ) {}

  dataPath(sha: string): string {
    return path.join(this.dir, sha.slice(0, 2), sha);
  }

  sourceOf(sha: string): string {
    return this.dataPath(sha);
  }

  private infoPath(sha: string): string {
    return `${this.dataPath(sha)}.json`;
  }

  async info(sha: string): Promise<BlobInfo | undefined> {
    try {
      return JSON.parse(await readFile(this.infoPath(sha), 'utf8')) as BlobInfo;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async adopt(sha: string, stagingPath: string, staged: BlobInfo): Promise<BlobInfo & { existed: boolean }> {
    const existing = await this.info(sha);
    if (existing) return { ...existing, existed: true };
    const data = this.dataPath(sha);
    await mkdir(path.dirname(data), { recursive: true, mode: 0o750 });
    // A name without its info is left from an interrupted adopt: replace it.
    await rm(data, { force: true });
    await link(stagingPath, data);
    // The info goes in whole or not at all: a name with a truncated info would break every later adopt.
    const temp = `${this.infoPath(sha)}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await writeFile(temp, JSON.stringify(staged), { mode: 0o640, flag: 'wx' });
      await rename(temp, this.infoPath(sha));
    } catch (err) {
      await rm(data, { force: true });
      throw err;
    } finally {
      await rm(temp, { force: true });
    }
    return { ...staged, existed: false };
  }

  /** Removes the blob's own name and info; paths that still link its bytes keep them. */
  async release(sha: string): Promise<void> {
    await rm(this.infoPath(sha), { force: true });
    await rm(this.dataPath(sha), { force: true });
  }
}
