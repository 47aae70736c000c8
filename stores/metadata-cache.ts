// Parsed metadata of recently served files. A download (a Range GET above all) would otherwise open, read,
// parse and close a JSON file each time. An entry is used only while the data file it describes is the very
// inode it was read with, unchanged since (device, inode, size, link count, ctime): every commit links a
// data file and every removal, versioning or restore unlinks or renames one, and each of those changes
// the inode's ctime and usually its link count, so a change made by another instance sharing StoreDir is
// seen at once. What this process changes it also drops explicitly (forget), which covers a change within
// one tick of the file system's clock.
import type { Stats } from 'node:fs';
import { readMetadata, type FileMetadata } from './file-metadata.js';

interface Entry {
  identity: string;
  meta: Readonly<FileMetadata>;
}

/** What names one state of a data file; from an fstat of the open file. */
export function identityOf(info: Stats): string {
  return `${info.dev}:${info.ino}:${info.size}:${info.nlink}:${info.ctimeMs}`;
}

function deepFreeze<T extends object>(value: T): T {
  for (const child of Object.values(value)) if (typeof child === 'object' && child !== null) deepFreeze(child as object);
  return Object.freeze(value);
}

export class MetadataCache {
  // A Map iterates in insertion order: re-inserting on a hit keeps the least recently used entry first.
  private readonly entries = new Map<string, Entry>();

  /** capacity: how many files' metadata is kept (a few hundred bytes each); 0 turns the cache off. */
  constructor(private readonly capacity = 4096) {}

  /**
   * The metadata at metaPath of the data file whose identity is given (frozen: shared between requests), or
   * undefined when there is none (not committed, or being removed).
   */
  async read(metaPath: string, identity: string): Promise<Readonly<FileMetadata> | undefined> {
    const cached = this.entries.get(metaPath);
    this.entries.delete(metaPath);
    if (cached?.identity === identity) {
      this.entries.set(metaPath, cached);
      return cached.meta;
    }
    const meta = await readMetadata(metaPath);
    if (!meta || this.capacity === 0) return meta;
    const entry = { identity, meta: deepFreeze(meta) };
    this.entries.set(metaPath, entry);
    if (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value!);
    return entry.meta;
  }

  /** Drops what is known of metaPath: this process is about to change or has just changed it. */
  forget(metaPath: string): void {
    this.entries.delete(metaPath);
  }
}
