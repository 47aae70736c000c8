// The tus records, StoreDir/.hmac/tus/<id>.json: the library's KvStore contract, written the way the rest
// of the store is. Each record is owner-only (0600) and replaced atomically (temporary file, then rename), so
// a full disk or a crash mid-write leaves the previous record instead of a truncated one; and only a missing
// record reads as "no such upload": any other failure (no descriptors) is an error, not a 404 that would make
// a client start its upload again.
import { randomBytes } from 'node:crypto';
import { readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { KvStore, Upload } from '@tus/utils';

const RECORD = /^[0-9a-f]{32}\.json$/;

export class TusRecords implements KvStore<Upload> {
  constructor(private readonly directory: string) {}

  private file(id: string): string {
    // Ids reach the store only after the router matched UPLOAD_ID; path.basename is the second fence.
    return path.join(this.directory, `${path.basename(id)}.json`);
  }

  async get(id: string): Promise<Upload | undefined> {
    let text: string;
    try {
      text = await readFile(this.file(id), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    return JSON.parse(text) as Upload;
  }

  async set(id: string, upload: Upload): Promise<void> {
    const staging = path.join(this.directory, `.${path.basename(id)}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      await writeFile(staging, JSON.stringify(upload), { mode: 0o600, flag: 'wx' });
      await rename(staging, this.file(id));
    } finally {
      await rm(staging, { force: true });
    }
  }

  async delete(id: string): Promise<void> {
    await rm(this.file(id), { force: true });
  }

  async list(): Promise<string[]> {
    return (await readdir(this.directory)).filter((name) => RECORD.test(name)).map((name) => name.slice(0, -5));
  }
}
