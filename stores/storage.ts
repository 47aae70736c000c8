// Where committed files live: a backend holds each tenant's files with their metadata and kept versions, the
// dedup blobs, and a listing of every record for the sweeps. Two backends implement it: the file system under
// StoreDir (stores/fs-storage.ts) and an S3-compatible object store (stores/s3-storage.ts). Staging (legacy
// bodies, tus uploads in progress) is always on the file system; the commit path hands a backend a staged file.
import type { Readable } from 'node:stream';
import type { PathLock } from '../hooks/path-lock.js';
import type { FileMetadata, StoredEncryption } from './file-metadata.js';
import type { KeyRing } from './key-ring.js';
import type { FileLayout } from './file-layout.js';
import type { MetadataCache } from './metadata-cache.js';

export interface OpenFile {
  meta: Readonly<FileMetadata>;
  /**
   * Plaintext bytes start..end inclusive, as Range counts them; a whole-file read also checks the recorded
   * digest. Takes over whatever open() holds; close() is then a no-op. A backend that must ask over the
   * network first answers with a promise, which fails before any byte is sent.
   */
  stream(start: number, end: number): Readable | Promise<Readable>;
  /**
   * The same bytes in one read, for a short range of a plain file that needs no digest check; undefined
   * when the stream is needed. Saves a small Range GET the stream machinery. Takes over what open() holds.
   */
  readShort(start: number, end: number): Promise<Buffer> | undefined;
  close(): Promise<void>;
}

export interface ReadPolicy {
  keys: KeyRing;
  /**
   * VerifyPlaintextDownloads: check the digest of whole-file reads of plain files too. Encrypted files are
   * always checked: there the digest is what notices changed ciphertext, which AES-CTR itself cannot.
   */
  verifyPlaintext: boolean;
}

/**
 * Told of every stored copy that was removed (a file or a kept version), after it went: deduplication lets go
 * of its blob, quotas give its bytes back.
 */
export type OnRemoved = (meta: FileMetadata) => Promise<void>;

export interface VersionInfo {
  id: string;
  size: number;
  contentType: string;
  createdAt: string;
}

/** One tenant's committed files: what downloads read, DELETEs remove and the commit path writes. */
export interface CommittedFiles {
  readonly prefix: string;
  /**
   * Whether a staged file must be on disk before its commit: it must when the commit links it into place
   * (the file system); not when the commit copies it to where it is kept (S3) and then removes it.
   */
  readonly durableStaging: boolean;
  exists(slotPath: string): Promise<boolean>;
  /** The committed file at slotPath, or undefined (absent, or its commit has not finished). The caller must stream or close it. */
  open(slotPath: string): Promise<OpenFile | undefined>;
  /** Removes the current file: its metadata, or undefined when there was none. The metadata goes first, so GETs stop at once. */
  remove(slotPath: string): Promise<FileMetadata | undefined>;
  /**
   * Makes the staged bytes at from (or, when meta.blob is set, the blob's bytes) the file at meta.path, visible
   * only once all of it is in place; E_EXISTS when the path is taken, and then nothing of this upload stays.
   */
  place(from: string, meta: FileMetadata): Promise<void>;
  /** Moves the current file into its kept versions; its version id, or undefined when there was none. */
  keepAsVersion(slotPath: string): Promise<string | undefined>;
  /** Puts a version kept by keepAsVersion back as the current file: the new upload did not get placed. */
  restoreVersion(slotPath: string, id: string): Promise<void>;
  /** Removes the oldest versions beyond max; how many went. */
  pruneVersions(slotPath: string, max: number): Promise<number>;
  /** Kept versions, newest first. */
  listVersions(slotPath: string): Promise<VersionInfo[]>;
  openVersion(slotPath: string, id: string): Promise<OpenFile | undefined>;
  removeAllVersions(slotPath: string): Promise<void>;
}

export interface BlobInfo {
  size: number;
  encryption?: StoredEncryption;
}

/** Content-addressed bytes shared by every copy of one plaintext (deduplication). */
export interface Blobs {
  /** Serialises adopt and release per blob: in this process, or across instances (Redis). */
  readonly lock: PathLock;
  /** What place() is given to place a copy of the blob sha. */
  sourceOf(sha: string): string;
  info(sha: string): Promise<BlobInfo | undefined>;
  /**
   * The blob for sha, made from the staged bytes when there is none yet. Call under lock(sha). It says whether
   * the blob existed already (a dedup hit), and the returned info says how the blob's bytes are stored, which
   * may differ from the staged copy (another IV).
   */
  adopt(sha: string, stagingPath: string, staged: BlobInfo): Promise<BlobInfo & { existed: boolean }>;
  /** The last copy that used the blob is gone: the blob goes too. Call under lock(sha). */
  release(sha: string): Promise<void>;
}

/** A record the sweeps see: a committed file, or a kept version (with its own removal). */
export interface StoredRecord {
  meta: FileMetadata;
  version?: { id: string; remove(removed?: OnRemoved): Promise<void> };
}

export interface FilesOptions {
  removed?: OnRemoved;
  /** Shared by every reader in this process (file system only); without one, every open reads the metadata afresh. */
  cache?: MetadataCache;
}

export interface Storage {
  /** "fs" or "s3", for the log. */
  readonly kind: string;
  files(layout: FileLayout, policy: ReadPolicy, options?: FilesOptions): CommittedFiles;
  blobs(lock: PathLock): Blobs;
  /** Every committed file's and kept version's metadata, for expiry and for rebuilding the dedup index. */
  records(): AsyncIterable<StoredRecord>;
  /** For /readyz, when the backend is more than the file system staging is on: true when it answers. */
  check?(): Promise<boolean>;
  close(): void;
}
