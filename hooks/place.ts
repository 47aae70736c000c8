// Commit stage: atomic placement. The staged file is hard-linked to its final path (link fails with EEXIST
// when the path is taken, so of two racing uploads exactly one wins), then its metadata is renamed into place.
// A GET needs both, so it never sees a file whose commit has not finished.
import { link, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { httpError } from '../server/errors.js';
import type { FileLayout } from '../stores/file-layout.js';
import { writeMetadata, type FileMetadata } from '../stores/file-metadata.js';

const TAKEN = new Set(['EEXIST', 'ENOTDIR', 'EISDIR']);

function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

export async function placeFile(layout: FileLayout, stagingPath: string, meta: FileMetadata): Promise<void> {
  const target = layout.dataPath(meta.path);
  try {
    await mkdir(path.dirname(target), { recursive: true, mode: 0o750 });
  } catch (err) {
    // A file already stands where a directory of this path would go.
    if (TAKEN.has(errnoOf(err) ?? '')) throw httpError('E_EXISTS', { cause: err });
    throw err;
  }
  await layout.assertInside(path.dirname(target));
  try {
    await link(stagingPath, target);
  } catch (err) {
    if (TAKEN.has(errnoOf(err) ?? '')) throw httpError('E_EXISTS', { cause: err });
    throw err;
  }
  try {
    await writeMetadata(layout.metaPath(meta.path), meta, layout.newStagingPath('.json'));
  } catch (err) {
    await rm(target, { force: true });
    throw err;
  }
}
