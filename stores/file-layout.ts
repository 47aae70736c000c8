// The on-disk layout under StoreDir. Everything lives on one filesystem so placement is a link, never a copy:
//
//   StoreDir/
//     <tenant prefix>/<slot path>              committed files (prefix: UploadSubDir or a tenant's Prefix)
//     .hmac/staging/<random>.part              bytes being received; never served
//     .hmac/meta/<h[0..2]>/<h>.json            metadata of a committed file, h = sha256(prefix/slot path)
//     .hmac/versions/<h>/<version id>{,.json}  earlier versions of that path (EnableVersioning)
//
// Metadata is keyed by a hash so no slot path can collide with it or with another path's metadata.
import { createHash, randomBytes } from 'node:crypto';
import { readlinkSync } from 'node:fs';
import { mkdir, realpath } from 'node:fs/promises';
import path from 'node:path';
import { httpError } from '../server/errors.js';

const MAX_SEGMENT_BYTES = 255;
const MAX_PATH_BYTES = 1024;
// C0 controls, DEL and the backslash are never part of a legitimate slot path; NUL would truncate it.
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const FORBIDDEN = /[\u0000-\u001f\u007f\\]/;
// A lone UTF-16 surrogate (possible in a JWT's JSON strings, never in a URL) has no UTF-8 form: the file
// system would store U+FFFD, so two different names would meet in one file.
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/**
 * Checks a percent-decoded slot path. Relative, '/'-separated, no empty, "." or ".." segment, no
 * control characters or backslashes, and names a filesystem accepts: so it can never leave the upload tree.
 */
export function validateSlotPath(decoded: string): string {
  const bad = (why: string) => httpError('E_BAD_PATH', { message: `Invalid upload path: ${why}` });
  if (decoded.length === 0) throw bad('empty');
  if (FORBIDDEN.test(decoded)) throw bad('control character or backslash');
  if (LONE_SURROGATE.test(decoded)) throw bad('not valid Unicode');
  if (Buffer.byteLength(decoded) > MAX_PATH_BYTES) throw bad('too long');
  for (const segment of decoded.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') throw bad('empty, "." or ".." segment');
    if (Buffer.byteLength(segment) > MAX_SEGMENT_BYTES) throw bad('name too long');
  }
  return decoded;
}

/** Percent-decodes a URL path exactly once (the legacy door routes on the result); a malformed escape is a 400. */
export function decodeUrlPath(encoded: string): string {
  try {
    return decodeURIComponent(encoded);
  } catch {
    throw httpError('E_BAD_PATH', { message: 'Invalid upload path: malformed percent-encoding' });
  }
}

/** What the legacy door does to the part of a URL below a tenant prefix: decode once, then validate. */
export function decodeSlotPath(encoded: string): string {
  return validateSlotPath(decodeUrlPath(encoded));
}

/** The layout of one tenant's tree; all tenants share StoreDir's staging and metadata folders. */
export class FileLayout {
  readonly uploadRoot: string;
  readonly stagingDir: string;
  readonly metaDir: string;
  readonly versionsDir: string;
  /** tus uploads in progress (stores/tus-store.ts). */
  readonly tusDir: string;
  private realUploadRoot = '';

  /**
   * excluded: the prefixes of tenants nested below this one, relative to it (tenant "upload/a.example.org"
   * under "upload" gives "a.example.org"); their trees are theirs alone, whatever the URL's encoding.
   */
  constructor(
    storeDir: string,
    readonly prefix: string,
    private readonly excluded: readonly string[] = [],
  ) {
    this.uploadRoot = path.join(storeDir, ...prefix.split('/'));
    this.stagingDir = path.join(storeDir, '.hmac', 'staging');
    this.metaDir = path.join(storeDir, '.hmac', 'meta');
    this.versionsDir = path.join(storeDir, '.hmac', 'versions');
    this.tusDir = path.join(storeDir, '.hmac', 'tus');
  }

  async init(): Promise<void> {
    // Created here with owner and group only, before a library can create them with its own mode.
    for (const dir of [this.uploadRoot, this.stagingDir, this.metaDir, this.tusDir]) await mkdir(dir, { recursive: true, mode: 0o750 });
    this.realUploadRoot = await realpath(this.uploadRoot);
  }

  /** A decoded slot path that is valid and lies in this tenant's own tree, not a nested tenant's. */
  claim(decoded: string): string {
    const slotPath = validateSlotPath(decoded);
    for (const nested of this.excluded) {
      if (slotPath === nested || slotPath.startsWith(`${nested}/`)) throw httpError('E_BAD_PATH', { message: "Invalid upload path: inside another tenant's tree" });
    }
    return slotPath;
  }

  /** Where a committed file lives. The slot path must have passed claim(). */
  dataPath(slotPath: string): string {
    return path.join(this.uploadRoot, ...slotPath.split('/'));
  }

  /**
   * The name of a path's records (metadata, versions; the object keys of the S3 backend too): keyed by the
   * full path below StoreDir, so nested tenant prefixes agree on one file's metadata.
   */
  recordKey(slotPath: string): string {
    return createHash('sha256').update(`${this.prefix}/${slotPath}`, 'utf8').digest('hex');
  }

  metaPath(slotPath: string): string {
    const h = this.recordKey(slotPath);
    return path.join(this.metaDir, h.slice(0, 2), `${h}.json`);
  }

  /** Where the earlier versions of a path are kept. */
  versionDir(slotPath: string): string {
    return path.join(this.versionsDir, this.recordKey(slotPath));
  }

  newStagingPath(suffix = '.part'): string {
    return path.join(this.stagingDir, `${randomBytes(16).toString('hex')}${suffix}`);
  }

  /**
   * Refuses a directory that resolves outside the upload tree: an operator's (or an attacker's) symlink
   * inside StoreDir must not turn into a way out.
   */
  async assertInside(dir: string): Promise<void> {
    const real = await realpath(dir);
    if (real !== this.realUploadRoot && !real.startsWith(this.realUploadRoot + path.sep)) {
      throw httpError('E_BAD_PATH', { message: 'Invalid upload path: outside the store' });
    }
  }

  /**
   * Whether a file already open at filePath lies in the upload tree, judged by what its descriptor refers to
   * (Linux's /proc/self/fd): one call instead of a walk of the path, and no folder swapped for a symlink
   * between the open and the check can mislead it. Without /proc, the file's folder is walked.
   */
  async isOpenedInside(fd: number, filePath: string): Promise<boolean> {
    let real: string;
    try {
      // Synchronous: /proc answers from memory, and a trip through the thread pool costs more than the call.
      real = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      real = path.join(await realpath(path.dirname(filePath)), path.basename(filePath));
    }
    return real.startsWith(this.realUploadRoot + path.sep);
  }
}
