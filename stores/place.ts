// Commit stage: atomic placement. The staged file is hard-linked to its final path (link fails with EEXIST
// when the path is taken, so of two racing uploads exactly one wins), then its metadata is renamed into place.
// A GET needs both, so it never sees a file whose commit has not finished.
import { link, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { httpError } from '../server/errors.js';
import type { FileLayout } from './file-layout.js';
import { writeMetadata, type FileMetadata } from './file-metadata.js';

const TAKEN = new Set(['EEXIST', 'ENOTDIR', 'EISDIR']);

function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * Creates the folders of a slot path one at a time below the upload root, checking each before going into
 * it: a symlink planted in the tree that points elsewhere stops the walk before anything is made out there.
 */
async function makeFolders(layout: FileLayout, slotPath: string): Promise<void> {
  let dir = layout.uploadRoot;
  for (const segment of slotPath.split('/').slice(0, -1)) {
    dir = path.join(dir, segment);
    try {
      await mkdir(dir, { mode: 0o750 });
    } catch (err) {
      // EEXIST: already there (a folder, or a symlink the check below judges); ENOTDIR: a file stands where
      // a folder of this path would go.
      if (errnoOf(err) === 'ENOTDIR') throw httpError('E_EXISTS', { cause: err });
      if (errnoOf(err) !== 'EEXIST') throw err;
    }
    await layout.assertInside(dir).catch((err: unknown) => {
      if (errnoOf(err) === 'ENOTDIR') throw httpError('E_EXISTS', { cause: err });
      throw err;
    });
  }
}

export async function placeFile(layout: FileLayout, stagingPath: string, meta: FileMetadata): Promise<void> {
  const target = layout.dataPath(meta.path);
  await makeFolders(layout, meta.path);
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
