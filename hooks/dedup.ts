// Commit stage: deduplication. The plaintext SHA-256 (computed while the bytes streamed in) names a blob; the
// first upload of some content becomes that blob, later ones link to it and drop their own bytes. References
// live in a DedupIndex (embedded or Redis). When the index cannot answer (Redis down), uploads are stored
// without dedup and nothing waits; when it answers again, it is rebuilt from the stored metadata.
import { randomBytes } from 'node:crypto';
import { HttpError } from '../server/errors.js';
import type { Logger } from '../server/logger.js';
import type { DedupIndex } from '../stores/dedup-index.js';
import type { BlobRef, StoredEncryption } from '../stores/file-metadata.js';
import type { Blobs, StoredRecord } from '../stores/storage.js';
import type { StagedUpload } from './commit-upload.js';

export interface Adopted {
  /** What the backend places: the blob's bytes. */
  from: string;
  /** How those bytes are stored (the blob's IV, when encrypted). */
  encryption?: StoredEncryption;
  blob: BlobRef;
}

export interface Dedup {
  /** Adopts the staged bytes as, or onto, their blob; undefined when the index is unavailable. */
  adopt(upload: StagedUpload): Promise<Adopted | undefined>;
  /** A stored copy that held blob is gone; the last one takes the blob's name with it. */
  release(blob: BlobRef): Promise<void>;
  /** Checks the index and rebuilds it after an outage; also runs every healthIntervalMs. */
  check(): Promise<boolean>;
  healthy(): boolean;
  /** Uploads whose content was stored already, and the bytes that did not have to be stored again. */
  counters: DedupCounters;
  stop(): void;
}

export interface DedupCounters {
  hits: number;
  bytesSaved: number;
}

export interface DedupDeps {
  blobs: Blobs;
  index: DedupIndex & { ping?(): Promise<boolean> };
  /** Every committed file and kept version, whose metadata may hold blob references. */
  records: () => AsyncIterable<StoredRecord>;
  healthIntervalMs: number;
  logger: Logger;
  /** false for an index over the network: nothing is deduplicated until its first check (and rebuild) passed. */
  startHealthy: boolean;
}

export function createDedup(deps: DedupDeps): Dedup {
  let up = deps.startHealthy;
  const counters: DedupCounters = { hits: 0, bytesSaved: 0 };
  const down = (err: unknown) => {
    if (up) deps.logger.warn('dedup.unavailable', { cause: err instanceof Error ? err.message : String(err), note: 'storing without deduplication' });
    up = false;
  };

  const check = async (): Promise<boolean> => {
    const answers = deps.index.ping ? await deps.index.ping().catch(() => false) : true;
    if (answers && !up) {
      // The index may have lost references while it was away (a Redis restarted empty): put back every
      // reference the stored metadata holds, then take new uploads again.
      let restored = 0;
      try {
        for await (const { meta } of deps.records()) {
          if (!meta.blob) continue;
          await deps.index.addRef(meta.blob.sha, meta.blob.ref);
          restored += 1;
        }
      } catch (err) {
        down(err);
        return false;
      }
      up = true;
      deps.logger.info('dedup.reconciled', { references: restored });
    } else if (!answers) {
      down(new Error('no answer to PING'));
    }
    return up;
  };
  const timer = deps.healthIntervalMs > 0 ? setInterval(() => void check(), deps.healthIntervalMs).unref() : undefined;

  return {
    async adopt(upload) {
      if (!up || upload.sha256 === undefined) return undefined;
      const sha = upload.sha256;
      const blob: BlobRef = { sha, ref: randomBytes(12).toString('hex') };
      const adopted = deps.blobs.lock(sha, async () => {
        // A failure of the blob store is the disk's (a full disk): the commit fails as it would without
        // dedup. Only the index going away means "store without dedup for now".
        const info = await deps.blobs.adopt(sha, upload.stagingPath, { size: upload.size, ...(upload.encryption ? { encryption: upload.encryption } : {}) });
        try {
          await deps.index.addRef(sha, blob.ref);
        } catch (err) {
          down(err);
          return undefined;
        }
        if (info.existed) {
          counters.hits += 1;
          counters.bytesSaved += upload.size;
        }
        return { from: deps.blobs.sourceOf(sha), ...(info.encryption ? { encryption: info.encryption } : {}), blob };
      });
      // The blob lock lives where the index does (Redis): while it cannot be had, store without dedup too.
      return adopted.catch((err: unknown) => {
        if (!(err instanceof HttpError) || err.code !== 'E_COORDINATION_DOWN') throw err;
        down(err);
        return undefined;
      });
    },

    async release(blob) {
      try {
        await deps.blobs.lock(blob.sha, async () => {
          if (await deps.index.removeRef(blob.sha, blob.ref)) await deps.blobs.release(blob.sha);
        });
      } catch (err) {
        // The blob's name stays until the index answers again; no byte anyone uses is lost.
        down(err);
      }
    },

    check,
    healthy: () => up,
    counters,
    stop: () => clearInterval(timer),
  };
}
