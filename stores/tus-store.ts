// The tus staging area: @tus/file-store under StoreDir/.hmac/tus (same filesystem as the upload tree, so a
// finished upload is committed by a link), one data file and one <id>.json record per upload:
//
//   StoreDir/.hmac/tus/<id>         the bytes received so far
//   StoreDir/.hmac/tus/<id>.json    tus record: size, metadata (client's filename and type, our owner)
//
// After commit the data file stays, as a second link to the committed file, so HEAD still reports the
// final offset; the sweep removes it (never the committed file) once the upload has expired.
import { FileStore } from '@tus/file-store';
import type { AsyncLocalStorage } from 'node:async_hooks';
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Upload } from '@tus/utils';
import { HttpError, httpError } from '../server/errors.js';
import { fileSink, writeBufferFor } from './file-sink.js';
import { intake } from './intake.js';
import { TusRecords } from './tus-records.js';
import path from 'node:path';
import type { Logger } from '../server/logger.js';
import { cipherFor, keyOf, plaintextStream } from './at-rest.js';
import type { StoredEncryption } from './file-metadata.js';
import type { KeyRing } from './key-ring.js';

/** tus record metadata keys under which an upload's encryption is kept (set at creation). */
export const KEY_ID_KEY = 'hfs_key';
export const IV_KEY = 'hfs_iv';


/** Our naming function's shape (32 lower-case hex); anything else is refused before it reaches the store. */
export const UPLOAD_ID = /^[0-9a-f]{32}$/;

/** Progress the metrics work reads; the store only counts, it knows no metrics registry. */
export interface TusCounters {
  bytesReceived: number;
  created: number;
  finished: number;
  terminated: number;
  /** Unfinished uploads removed by the sweep once TusUploadExpiry passed. */
  expired: number;
}

export function newTusCounters(): TusCounters {
  return { bytesReceived: 0, created: 0, finished: 0, terminated: 0, expired: 0 };
}

/** tus checksum extension: the algorithms a client may name in Upload-Checksum. */
export const CHECKSUM_ALGORITHMS = ['md5', 'sha1', 'sha256'] as const;
export type ChecksumAlgorithm = (typeof CHECKSUM_ALGORITHMS)[number];

/** An Upload-Checksum value: the algorithm and the base64 digest. */
export interface Checksum {
  algorithm: ChecksumAlgorithm;
  /** Base64 digest, as sent. */
  digest: string;
}

/**
 * The checksum a PATCH (or creation-with-upload) announced for its body, set per request around the library's
 * handling: from the Upload-Checksum header, or (checksum-trailer) read from the request's trailer once the
 * body has ended.
 */
export type ExpectedChecksum = Checksum | { trailer: () => string | undefined };

/** Upload-Checksum: "<algorithm> <base64 digest>" (tus checksum extension); a 400 otherwise. */
export function parseChecksum(header: string): Checksum {
  const [algorithm, digest, ...rest] = header.trim().split(/\s+/);
  if (!CHECKSUM_ALGORITHMS.includes(algorithm as ChecksumAlgorithm)) throw httpError('E_BAD_REQUEST', { message: 'Unsupported checksum algorithm' });
  if (!digest || rest.length > 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(digest)) throw httpError('E_BAD_REQUEST', { message: 'Invalid Upload-Checksum' });
  return { algorithm: algorithm as ChecksumAlgorithm, digest };
}

/** @tus/server answers an error thrown by a store with its status_code and body. */
class TusStoreError extends Error {
  constructor(
    readonly status_code: number,
    readonly body: string,
  ) {
    super(body.trim());
  }
}

/** Metadata keys of the server's own (owner, target, key id, IV, …); a client's keys never start so. */
export const INTERNAL_PREFIX = 'hfs_';

/** The metadata as the client sent it: what the library may show in Upload-Metadata. */
export function clientMetadata(metadata: Upload['metadata']): Upload['metadata'] {
  const own = Object.entries(metadata ?? {}).filter(([key]) => !key.startsWith(INTERNAL_PREFIX));
  return own.length > 0 ? Object.fromEntries(own) : undefined;
}

const MAX_RUNNING_DIGESTS = 4096;

/**
 * @tus/file-store with our own write: ChunkSize as the write buffer, a byte count for the metrics, and the
 * checksum extension. A chunk whose Upload-Checksum does not match (or that broke off, so it cannot be
 * checked) is cut off again before the library records a new offset, so the upload stays where it was.
 */
export class CountingFileStore extends FileStore {
  constructor(
    storeDir: string,
    private readonly options: {
      /** Upload-Expires and the 410 for PATCHes after it; deleting is sweepTusUploads' job. */
      expirationMs: number;
      chunkSize: number;
      /** How many upload bodies are being received now (the admission's count), for the write buffer's size. */
      activeUploads: () => number;
      counters: TusCounters;
      checksums: AsyncLocalStorage<ExpectedChecksum>;
      keys: KeyRing;
      /** UploadStallTimeout in ms: a PATCH body that does not move for this long is cut (0 = never). */
      stallMs: number;
      /** Told of every upload removed (terminated, expired, refused), with its record: quotas give its charge back. */
      discarded?: (record: Upload) => Promise<void>;
    },
  ) {
    const directory = path.join(storeDir, '.hmac', 'tus');
    super({ directory, configstore: new TusRecords(directory), expirationPeriodInMilliseconds: options.expirationMs });
    // Concatenation is done by our router (the library answers 501); checksums here.
    this.extensions = [...this.extensions, 'checksum', 'checksum-trailer', 'concatenation', 'concatenation-unfinished'];
  }

  /** Running plaintext SHA-256 per upload, as long as its chunks arrive in order in this process (at most MAX_RUNNING_DIGESTS). */
  private readonly digests = new Map<string, { offset: number; hash: Hash }>();

  /** Set once at creation and never changed: read from the tus record once per upload, not per PATCH. */
  private readonly encryptions = new Map<string, StoredEncryption | null>();

  /** How an upload's bytes are encrypted on disk, from its tus record; undefined when stored plainly. */
  async encryptionOf(id: string): Promise<StoredEncryption | undefined> {
    let encryption = this.encryptions.get(id);
    if (encryption === undefined) {
      const metadata = (await this.configstore.get(id))?.metadata ?? {};
      const keyId = metadata[KEY_ID_KEY];
      const iv = metadata[IV_KEY];
      encryption = keyId && iv ? { method: keyId.startsWith('xor-') ? 'xor' : 'aes', keyId, iv } : null;
      this.encryptions.set(id, encryption);
    }
    if (!encryption) return undefined;
    keyOf(this.options.keys, encryption, `tus upload ${id}`);
    return encryption;
  }

  /** How many bytes of an upload have arrived (one stat), or undefined when its file is gone. */
  received(id: string): Promise<number | undefined> {
    return stat(path.join(this.directory, id)).then(
      (s) => s.size,
      () => undefined,
    );
  }

  /** The plaintext of an upload's staging bytes (for concatenation and for a digest after a restart). */
  async plaintextOf(id: string): Promise<Readable> {
    const encryption = await this.encryptionOf(id);
    const key = encryption ? keyOf(this.options.keys, encryption, `tus upload ${id}`) : undefined;
    return plaintextStream(createReadStream(path.join(this.directory, id)), { key, encryption, start: 0, what: `tus upload ${id}` });
  }

  /** Hex SHA-256 of a finished upload's plaintext: from the running hash, or by reading it once more. */
  async digestOf(id: string, size: number): Promise<string> {
    const running = this.digests.get(id);
    this.digests.delete(id);
    if (running?.offset === size) return running.hash.digest('hex');
    const hash = createHash('sha256');
    for await (const chunk of await this.plaintextOf(id)) hash.update(chunk as Buffer);
    return hash.digest('hex');
  }

  /** Like the library's, but owner-only (0600) and never over an existing file. */
  override async create(upload: Upload): Promise<Upload> {
    const file = path.join(this.directory, upload.id);
    await writeFile(file, '', { mode: 0o600, flag: 'wx' });
    try {
      await this.configstore.set(upload.id, upload);
    } catch (err) {
      await rm(file, { force: true });
      throw err;
    }
    upload.storage = { type: 'file', path: file };
    return upload;
  }

  /**
   * What the library sees of an upload, and so what HEAD shows: the client's own metadata only. Our code
   * reads the whole record from configstore.
   */
  override async getUpload(id: string): Promise<Upload> {
    const upload = await super.getUpload(id);
    upload.metadata = clientMetadata(upload.metadata);
    return upload;
  }

  override async remove(id: string): Promise<void> {
    this.digests.delete(id);
    this.encryptions.delete(id);
    const record = this.options.discarded ? await this.configstore.get(id).catch(() => undefined) : undefined;
    await super.remove(id);
    if (record) await this.options.discarded?.(record);
  }

  override async write(readable: Readable, id: string, offset: number): Promise<number> {
    const expected = this.options.checksums.getStore();
    // A trailer names its algorithm only at the end: every one it may name is computed.
    const algorithms: readonly ChecksumAlgorithm[] = expected === undefined ? [] : 'trailer' in expected ? CHECKSUM_ALGORITHMS : [expected.algorithm];
    const checksums = algorithms.map((algorithm) => ({ algorithm, hash: createHash(algorithm) }));
    const running = this.digests.get(id);
    const digest = offset === 0 ? createHash('sha256') : running?.offset === offset ? running.hash.copy() : undefined;
    const encryption = await this.encryptionOf(id);
    const key = encryption ? keyOf(this.options.keys, encryption, `tus upload ${id}`) : undefined;
    let received = 0;
    const watch = intake({
      stallMs: this.options.stallMs,
      onChunk: (chunk) => {
        received += chunk.length;
        for (const checksum of checksums) checksum.hash.update(chunk);
        digest?.update(chunk);
      },
    });
    // Ids reach the store only after the router matched UPLOAD_ID, so this stays inside the directory.
    const file = path.join(this.directory, id);
    // Not durable per PATCH: the commit syncs the finished file (syncFile) before it links it.
    const sink = fileSink(file, { flags: 'r+', start: offset, durable: false, highWaterMark: writeBufferFor(this.options.chunkSize, this.options.activeUploads()) });
    let sinkError: unknown;
    sink.once('error', (err) => (sinkError ??= err));
    try {
      await pipeline([readable, watch, ...cipherFor(key, encryption, offset), sink]);
    } catch (err) {
      if (expected) await truncate(file, offset);
      this.digests.delete(id);
      // What reached the disk stays and is the new offset (a HEAD says so), unless a checksum was announced.
      // A failure of the disk keeps its errno (507 for a full disk, 503 without descriptors); a stall its own
      // answer; anything else is the body breaking off.
      if (sinkError !== undefined) throw sinkError as Error;
      if (err instanceof HttpError) throw err;
      throw httpError('E_INCOMPLETE', { cause: err });
    }
    if (expected) {
      // "In the first two cases [an unsupported algorithm, a mismatch] the uploaded chunk MUST be discarded, and
      // the upload and its offset MUST NOT be updated": so is a trailer that was announced and never came.
      let wanted: Checksum;
      try {
        if ('trailer' in expected) {
          const trailer = expected.trailer();
          if (trailer === undefined) throw httpError('E_BAD_REQUEST', { message: 'Upload-Checksum trailer announced but not sent' });
          wanted = parseChecksum(trailer);
        } else {
          wanted = expected;
        }
      } catch (err) {
        await truncate(file, offset);
        this.digests.delete(id);
        throw err;
      }
      if (checksums.find((checksum) => checksum.algorithm === wanted.algorithm)!.hash.digest('base64') !== wanted.digest) {
        await truncate(file, offset);
        this.digests.delete(id);
        throw new TusStoreError(460, 'Checksum Mismatch\n');
      }
    }
    this.options.counters.bytesReceived += received;
    this.digests.delete(id);
    if (digest) this.digests.set(id, { offset: offset + received, hash: digest });
    // Uploads that went on and finished on another instance never come back here to drop theirs: the
    // oldest go first (a missing running hash only means the commit reads the file once more).
    if (this.digests.size > MAX_RUNNING_DIGESTS) this.digests.delete(this.digests.keys().next().value!);
    return offset + received;
  }
}

/**
 * Removes tus uploads older than maxAgeMs: abandoned ones lose their bytes, finished ones only their
 * staging link and record (the committed file is another link and stays). Returns how many went.
 */
export async function sweepTusUploads(store: FileStore, maxAgeMs: number, logger: Logger, now = Date.now()): Promise<number> {
  let removed = 0;
  let names: string[];
  try {
    names = await readdir(store.directory);
  } catch {
    return 0;
  }
  for (const name of names) {
    const id = name.endsWith('.json') ? name.slice(0, -5) : '';
    if (!UPLOAD_ID.test(id)) continue;
    try {
      const record = await store.configstore.get(id);
      const created = record?.creation_date ? Date.parse(record.creation_date) : (await stat(path.join(store.directory, name))).mtimeMs;
      if (now - created <= maxAgeMs) continue;
      await store.remove(id).catch(() => store.configstore.delete(id));
      removed += 1;
      logger.info('tus.expired', { id });
    } catch (err) {
      logger.warn('tus.sweep_failed', { id, cause: err instanceof Error ? err.message : String(err) });
    }
  }
  return removed;
}
