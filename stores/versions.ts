// Earlier versions of a path (EnableVersioning). When a path is uploaded again, its current data and metadata
// move, by rename on the same filesystem, to
//
//   StoreDir/.hmac/versions/<h>/<version id>        the bytes, as they were stored (encrypted or not)
//   StoreDir/.hmac/versions/<h>/<version id>.json   their metadata
//
// with h as in the metadata tree and version id = zero-padded commit time in ms + "-" + 8 random hex, so ids
// sort oldest first. Only the newest MaxVersions are kept; pruning removes exactly the surplus.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { FileLayout } from './file-layout.js';
import { readMetadata, type FileMetadata } from './file-metadata.js';
import type { OnRemoved, VersionInfo } from './storage.js';

const VERSION_ID = /^\d{15}-[0-9a-f]{8}$/;

export function isVersionId(id: string): boolean {
  return VERSION_ID.test(id);
}

/** A new version id for a file committed at createdAt: ids sort oldest first. */
export function newVersionId(createdAt: string): string {
  return `${String(Date.parse(createdAt)).padStart(15, '0')}-${randomBytes(4).toString('hex')}`;
}

/** Moves the current file of slotPath into its versions; returns the version id, undefined when there was none. */
export async function keepAsVersion(layout: FileLayout, slotPath: string): Promise<string | undefined> {
  const metaPath = layout.metaPath(slotPath);
  const meta = await readMetadata(metaPath);
  if (!meta) return undefined;
  const dir = layout.versionDir(slotPath);
  await mkdir(dir, { recursive: true, mode: 0o750 });
  const id = newVersionId(meta.createdAt);
  // Metadata first: from here on the path reads as free, and the bytes follow it.
  await rename(metaPath, path.join(dir, `${id}.json`));
  await rename(layout.dataPath(slotPath), path.join(dir, id));
  return id;
}

/** Puts a version kept by keepAsVersion back as the current file: the new upload did not get placed. */
export async function restoreVersion(layout: FileLayout, slotPath: string, id: string): Promise<void> {
  const dir = layout.versionDir(slotPath);
  // Bytes first, metadata last: a GET sees the file again only once both are back.
  await rename(path.join(dir, id), layout.dataPath(slotPath));
  await rename(path.join(dir, `${id}.json`), layout.metaPath(slotPath));
}

/** Version ids of slotPath, oldest first. */
async function versionIds(layout: FileLayout, slotPath: string): Promise<string[]> {
  const names = await readdir(layout.versionDir(slotPath)).catch(() => [] as string[]);
  return names.filter(isVersionId).sort();
}

export async function listVersions(layout: FileLayout, slotPath: string): Promise<VersionInfo[]> {
  const list: VersionInfo[] = [];
  for (const id of (await versionIds(layout, slotPath)).reverse()) {
    const meta = await readMetadata(path.join(layout.versionDir(slotPath), `${id}.json`));
    if (meta) list.push({ id, size: meta.size, contentType: meta.contentType, createdAt: meta.createdAt });
  }
  return list;
}

export async function versionMeta(layout: FileLayout, slotPath: string, id: string): Promise<{ meta: FileMetadata; dataPath: string } | undefined> {
  if (!isVersionId(id)) return undefined;
  const dir = layout.versionDir(slotPath);
  const meta = await readMetadata(path.join(dir, `${id}.json`));
  return meta ? { meta, dataPath: path.join(dir, id) } : undefined;
}

export async function removeVersion(layout: FileLayout, slotPath: string, id: string, removed?: OnRemoved): Promise<void> {
  const dir = layout.versionDir(slotPath);
  const meta = await readMetadata(path.join(dir, `${id}.json`)).catch(() => undefined);
  await rm(path.join(dir, `${id}.json`), { force: true });
  await rm(path.join(dir, id), { force: true });
  if (meta && removed) await removed(meta);
}

/** Removes the oldest versions beyond max; returns how many went. */
export async function pruneVersions(layout: FileLayout, slotPath: string, max: number, removed?: OnRemoved): Promise<number> {
  const ids = await versionIds(layout, slotPath);
  const surplus = ids.slice(0, Math.max(0, ids.length - max));
  for (const id of surplus) await removeVersion(layout, slotPath, id, removed);
  return surplus.length;
}

export async function removeAllVersions(layout: FileLayout, slotPath: string, removed?: OnRemoved): Promise<void> {
  for (const id of await versionIds(layout, slotPath)) await removeVersion(layout, slotPath, id, removed);
  await rm(layout.versionDir(slotPath), { recursive: true, force: true });
}
