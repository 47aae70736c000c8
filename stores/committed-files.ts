// Read and remove access to committed files: the data under the upload tree plus its metadata. Opening
// refuses symlinks and anything whose commit has not finished (no metadata yet).
import { constants, createReadStream, type ReadStream } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { FileLayout } from './file-layout.js';
import { readMetadata, removeMetadata, type FileMetadata } from './file-metadata.js';

export interface OpenFile {
  meta: FileMetadata;
  /** Bytes start..end inclusive, as Range counts them. Takes over the handle; close() is then a no-op. */
  stream(start: number, end: number): ReadStream;
  close(): Promise<void>;
}

const MISSING = new Set(['ENOENT', 'ENOTDIR', 'ELOOP', 'EISDIR']);

export class CommittedFiles {
  constructor(private readonly layout: FileLayout) {}

  async exists(slotPath: string): Promise<boolean> {
    return (await readMetadata(this.layout.metaPath(slotPath))) !== undefined;
  }

  /** The committed file at slotPath, or undefined. The caller must stream or close it. */
  async open(slotPath: string): Promise<OpenFile | undefined> {
    const meta = await readMetadata(this.layout.metaPath(slotPath));
    if (!meta) return undefined;
    const dataPath = this.layout.dataPath(slotPath);
    let handle: FileHandle;
    try {
      // O_NOFOLLOW: the final component must be the file we placed, not a symlink planted later.
      handle = await open(dataPath, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (err) {
      if (MISSING.has((err as NodeJS.ErrnoException).code ?? '')) return undefined;
      throw err;
    }
    try {
      await this.layout.assertInside(path.dirname(dataPath));
    } catch (err) {
      await handle.close();
      throw err;
    }
    let taken = false;
    return {
      meta,
      stream: (start, end) => {
        taken = true;
        return createReadStream('', { fd: handle, start, end, autoClose: true });
      },
      close: async () => {
        if (!taken) await handle.close();
      },
    };
  }

  /** Removes a committed file; false when there was none. Metadata goes first so GETs stop at once. */
  async remove(slotPath: string): Promise<boolean> {
    const metaPath = this.layout.metaPath(slotPath);
    if (!(await readMetadata(metaPath))) return false;
    await removeMetadata(metaPath);
    await rm(this.layout.dataPath(slotPath), { force: true });
    return true;
  }
}
