// The contract of a virus scanner used by the commit pipeline: it reads the plaintext once, as a stream,
// and says clean or infected (naming the signature). It throws ScannerUnavailable when it cannot give a
// verdict (service down, too slow) and ScanTooLarge when the file exceeds what the scanner accepts.
// Implementations: ClamdScanner (clamd over a unix socket or TCP) and "disabled" (no scanner configured).
import type { Readable } from 'node:stream';

export type ScanVerdict = { infected: false } | { infected: true; signature: string };

export interface Scanner {
  scan(plaintext: Readable): Promise<ScanVerdict>;
  /** True when the scanner answers a health check now. */
  ping(): Promise<boolean>;
}

export class ScannerUnavailable extends Error {
  override readonly name = 'ScannerUnavailable';
}

export class ScanTooLarge extends Error {
  override readonly name = 'ScanTooLarge';
}
