// Commit stage: the virus scan. Runs on the plaintext of the staged file (decrypted on the fly when encryption
// is on) before anything is placed, at most NumScanWorkers at a time; up to UploadQueueSize more wait, the rest
// are turned away. Infected: 422 and a fail2ban line. No verdict (clamd down, too slow, file over its stream
// limit): refused by default (fail-closed), or let through and logged as unscanned with ClamAVFailOpen.
import { createReadStream } from 'node:fs';
import pLimit from 'p-limit';
import { httpError } from '../server/errors.js';
import type { Logger } from '../server/logger.js';
import { keyOf, plaintextStream } from '../stores/at-rest.js';
import type { KeyRing } from '../stores/key-ring.js';
import type { StagedUpload } from './commit-upload.js';
import { ScanTooLarge, ScannerUnavailable, type Scanner } from './scanner.js';

/** What the metrics work reads (infected_files_total and friends). */
export interface ScanCounters {
  scanned: number;
  infected: number;
  unscanned: number;
}

export interface ScanHealth {
  /** undefined until the first health check has run. */
  healthy: boolean | undefined;
  checkedAt: Date | undefined;
}

export interface ScanGate {
  stage: (upload: StagedUpload) => Promise<void>;
  /** Scans running now and uploads waiting for a worker. */
  queue(): { active: number; waiting: number };
  health(): ScanHealth;
  /** Pings clamd now (the readiness check) and records the answer. */
  check(): Promise<boolean>;
  counters: ScanCounters;
  stop(): void;
}

export interface ScanGateDeps {
  scanner: Scanner;
  workers: number;
  queueLimit: number;
  failOpen: boolean;
  healthIntervalMs: number;
  keys: KeyRing;
  logger: Logger;
  /** Told how long each scan took and how it ended (the scan duration histogram). */
  observeScan?: (seconds: number, verdict: 'clean' | 'infected' | 'none') => void;
}

const RETRY_AFTER_SECONDS = '30';

export function createScanGate(deps: ScanGateDeps): ScanGate {
  const limit = pLimit(deps.workers);
  const counters: ScanCounters = { scanned: 0, infected: 0, unscanned: 0 };
  const health: ScanHealth = { healthy: undefined, checkedAt: undefined };
  const check = async () => {
    const healthy = await deps.scanner.ping();
    if (healthy !== health.healthy) deps.logger[healthy ? 'info' : 'warn']('scan.health', { healthy });
    Object.assign(health, { healthy, checkedAt: new Date() });
    return healthy;
  };
  void check();
  const timer = deps.healthIntervalMs > 0 ? setInterval(() => void check(), deps.healthIntervalMs).unref() : undefined;

  const noVerdict = (upload: StagedUpload, err: ScannerUnavailable | ScanTooLarge): void => {
    if (deps.failOpen) {
      counters.unscanned += 1;
      deps.logger.warn('scan.skipped', { client: upload.client, path: upload.path, reason: err.message, note: 'stored unscanned (ClamAVFailOpen)' });
      return;
    }
    // Retrying cannot make a file smaller: that refusal is a 413, not a 503.
    if (err instanceof ScanTooLarge) throw httpError('E_SCAN_TOO_LARGE', { cause: err });
    throw httpError('E_SCANNER_DOWN', { cause: err, headers: { 'Retry-After': RETRY_AFTER_SECONDS } });
  };

  return {
    stage: async (upload) => {
      if (deps.queueLimit > 0 && limit.pendingCount >= deps.queueLimit) {
        throw httpError('E_SCAN_QUEUE_FULL', { headers: { 'Retry-After': RETRY_AFTER_SECONDS } });
      }
      const key = upload.encryption ? keyOf(deps.keys, upload.encryption, upload.path) : undefined;
      let verdict;
      let started = 0;
      const seconds = () => (performance.now() - started) / 1000;
      try {
        verdict = await limit(() => {
          started = performance.now();
          return deps.scanner.scan(plaintextStream(createReadStream(upload.stagingPath), { key, encryption: upload.encryption, start: 0, what: upload.path }));
        });
      } catch (err) {
        if (started > 0) deps.observeScan?.(seconds(), 'none');
        if (err instanceof ScannerUnavailable || err instanceof ScanTooLarge) return noVerdict(upload, err);
        throw err;
      }
      deps.observeScan?.(seconds(), verdict.infected ? 'infected' : 'clean');
      counters.scanned += 1;
      if (verdict.infected) {
        counters.infected += 1;
        deps.logger.warn('scan.infected', { client: upload.client, signature: verdict.signature, path: upload.path });
        throw httpError('E_INFECTED');
      }
    },
    queue: () => ({ active: limit.activeCount, waiting: limit.pendingCount }),
    health: () => ({ ...health }),
    check,
    counters,
    stop: () => clearInterval(timer),
  };
}
