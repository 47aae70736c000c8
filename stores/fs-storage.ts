// The file-system backend: committed files, metadata, versions and blobs under StoreDir, on the same file
// system as staging, so a commit is a link and never a copy (layout: stores/file-layout.ts).
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { PathLock } from '../hooks/path-lock.js';
import { BlobStore } from './blobs.js';
import { FsCommittedFiles } from './committed-files.js';
import { readMetadata } from './file-metadata.js';
import type { FileLayout } from './file-layout.js';
import type { Storage, StoredRecord } from './storage.js';

/** The JSON files below dir, with their paths; a folder that is not there has none. */
async function* jsonFiles(dir: string): AsyncGenerator<string> {
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])) {
    if (entry.isFile() && entry.name.endsWith('.json')) yield path.join(entry.parentPath, entry.name);
  }
}

/** layout: any tenant's (all share StoreDir's metadata, versions and blobs folders). */
export function fsStorage(layout: FileLayout): Storage {
  const hmacDir = path.dirname(layout.metaDir);
  return {
    kind: 'fs',
    files: (tenantLayout, policy, options) => new FsCommittedFiles(tenantLayout, policy, options),
    blobs: (lock: PathLock) => new BlobStore(path.join(hmacDir, 'blobs'), lock),
    async *records(): AsyncGenerator<StoredRecord> {
      for await (const metaPath of jsonFiles(layout.metaDir)) {
        const meta = await readMetadata(metaPath).catch(() => undefined);
        if (meta) yield { meta };
      }
      for await (const metaPath of jsonFiles(layout.versionsDir)) {
        const meta = await readMetadata(metaPath).catch(() => undefined);
        if (!meta) continue;
        const dataPath = metaPath.slice(0, -'.json'.length);
        yield {
          meta,
          version: {
            id: path.basename(dataPath),
            remove: async (removed) => {
              await rm(metaPath, { force: true });
              await rm(dataPath, { force: true });
              if (removed) await removed(meta);
            },
          },
        };
      }
    },
    close: () => undefined,
  };
}
