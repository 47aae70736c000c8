// Per-file metadata, one JSON document per committed file (location: FileLayout.metaPath).
// Later stages add fields (encryption, digest, blob, versions); readers ignore what they do not know.
import { readFile, rename, rm, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';

export interface FileMetadata {
  /** The slot path, so a sweep over the metadata tree knows which file each entry describes. */
  path: string;
  /** The tenant prefix the path is below (UploadSubDir or a tenant's Prefix). */
  prefix?: string;
  size: number;
  /** The uploader's Content-Type, verbatim; served back on GET. */
  contentType: string;
  /** ISO 8601 time of the commit. */
  createdAt: string;
  /** The uploader, when the signature named one (JWT sub, ejabberd user dir); never logged at info. */
  owner?: string;
  /** ISO 8601 time after which this file is gone (a file-share JWT's "expires"). */
  expiresAt?: string;
  /** Hex SHA-256 of the plaintext, computed while the bytes streamed in. */
  sha256?: string;
  /** How the bytes on disk are encrypted; absent for a file stored plainly. */
  encryption?: StoredEncryption;
  /** DeduplicationEnabled: the blob this copy's bytes are shared with, and this copy's reference to it. */
  blob?: BlobRef;
  /** StorageBackend "s3": the object that holds the bytes (written once, never overwritten). */
  object?: string;
}

export interface BlobRef {
  /** Hex SHA-256 of the plaintext, the blob's name. */
  sha: string;
  /** This stored copy's reference in the dedup index. */
  ref: string;
}

export interface StoredEncryption {
  method: 'aes' | 'xor';
  /** Which key of the ring (KeyRing.byId) wrote it. */
  keyId: string;
  /** Hex IV, random per file. */
  iv: string;
}

export function isMetadata(value: unknown): value is FileMetadata {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v.path === 'string' && typeof v.size === 'number' && typeof v.contentType === 'string' && typeof v.createdAt === 'string';
}

/** The metadata at metaPath, or undefined when the file is not (or not yet) committed. */
export async function readMetadata(metaPath: string): Promise<FileMetadata | undefined> {
  let text: string;
  try {
    text = await readFile(metaPath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const parsed: unknown = JSON.parse(text);
  if (!isMetadata(parsed)) throw new Error(`malformed metadata in ${metaPath}`);
  return parsed;
}

/** Writes metadata to a staging name and renames it into place, so readers see all of it or nothing. */
export async function writeMetadata(metaPath: string, meta: FileMetadata, stagingPath: string): Promise<void> {
  await mkdir(path.dirname(metaPath), { recursive: true, mode: 0o750 });
  try {
    await writeFile(stagingPath, JSON.stringify(meta), { mode: 0o640, flag: 'wx', flush: true });
    await rename(stagingPath, metaPath);
  } finally {
    await rm(stagingPath, { force: true });
  }
}

export async function removeMetadata(metaPath: string): Promise<void> {
  await rm(metaPath, { force: true });
}
