// Encryption at rest as the stores use it: a fresh IV under the current key for each new file, the key of a
// stored file found by its recorded id, and readers that decrypt from any offset and check what they read.
import { createHash, randomBytes } from 'node:crypto';
import { pipeline, Transform, type Readable } from 'node:stream';
import { httpError } from '../server/errors.js';
import type { StoredEncryption } from './file-metadata.js';
import type { KeyRing } from './key-ring.js';
import { cipherAt, IV_BYTES, type EncryptionKey } from './seekable-cipher.js';

export interface NewEncryption {
  key: EncryptionKey;
  stored: StoredEncryption;
}

/** How a new file is written: under the ring's current key with a random IV, or plainly (undefined). */
export function newEncryption(ring: KeyRing): NewEncryption | undefined {
  const key = ring.current;
  if (!key) return undefined;
  return { key, stored: { method: key.method, keyId: key.id, iv: randomBytes(IV_BYTES).toString('hex') } };
}

/** The key that wrote a file; a file from a key the ring no longer holds is a server error, never garbage. */
export function keyOf(ring: KeyRing, encryption: StoredEncryption, what: string): EncryptionKey {
  const key = ring.byId(encryption.keyId);
  if (!key || key.method !== encryption.method) {
    throw httpError('E_KEY_UNKNOWN', { cause: new Error(`${what} was written with key ${encryption.keyId}, which is not configured (AESKey, XORKey, PreviousAESKeys, PreviousXORKeys)`) });
  }
  return key;
}

/** En- or decrypts from byte `offset` on, or passes the bytes through for a plain file. */
export function cipherFor(key: EncryptionKey | undefined, encryption: StoredEncryption | undefined, offset: number): Transform[] {
  return key && encryption ? [cipherAt(key, Buffer.from(encryption.iv, 'hex'), offset)] : [];
}

/**
 * Fails the stream at its end when the bytes it carried do not hash to the recorded digest. The last chunk
 * is held back until the digest is known, so a damaged file never reaches a client complete: the transfer
 * ends short of its Content-Length and the client sees an error, not plausible garbage.
 */
function verifyDigest(expectedHex: string, what: string): Transform {
  const hash = createHash('sha256');
  let held: Buffer | undefined;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      const previous = held;
      held = chunk;
      callback(null, previous);
    },
    flush(callback) {
      const actual = hash.digest('hex');
      if (actual === expectedHex) callback(null, held);
      else callback(httpError('E_INTEGRITY', { cause: new Error(`${what}: sha256 ${actual} does not match the recorded ${expectedHex}`) }));
    },
  });
}

/** Plaintext bytes start..end of a stored file; a whole-file read is also checked against its digest. */
export function plaintextStream(raw: Readable, options: { key?: EncryptionKey; encryption?: StoredEncryption; start: number; wholeFileDigest?: string; what: string }): Readable {
  const stages: Transform[] = cipherFor(options.key, options.encryption, options.start);
  if (options.wholeFileDigest) stages.push(verifyDigest(options.wholeFileDigest, options.what));
  if (stages.length === 0) return raw;
  // pipeline destroys every stage, the returned last one included, on the first error: the reader sees it.
  pipeline([raw, ...stages], () => undefined);
  return stages.at(-1)!;
}
