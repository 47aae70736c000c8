// Seekable stream ciphers for encryption at rest. Both can start at any byte offset without touching the
// bytes before it, so a tus PATCH resumes mid-file and a Range GET decrypts only what it sends:
//   aes  AES-256-CTR: counter block = IV + floor(offset / 16), then offset % 16 bytes of keystream skipped
//   xor  repeating-key XOR, key index = absolute offset % key length (never restarted at a chunk boundary)
// Encryption and decryption are the same operation for both.
import { createCipheriv } from 'node:crypto';
import { Transform } from 'node:stream';

export type CipherMethod = 'aes' | 'xor';

export interface EncryptionKey {
  /** Stable, non-secret name of the key, recorded with each file: "<method>-<16 hex of sha256(key)>". */
  id: string;
  method: CipherMethod;
  key: Buffer;
}

export const IV_BYTES = 16;
const BLOCK = 16n;
const COUNTER_MODULUS = 1n << 128n;

/** The CTR counter block for a byte offset: IV + offset / 16, as a 128-bit big-endian integer. */
export function counterBlock(iv: Buffer, offset: number): Buffer {
  const counter = (BigInt(`0x${iv.toString('hex')}`) + BigInt(offset) / BLOCK) % COUNTER_MODULUS;
  return Buffer.from(counter.toString(16).padStart(32, '0'), 'hex');
}

function xorStream(key: Buffer, offset: number): Transform {
  let position = offset;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      const out = Buffer.allocUnsafe(chunk.length);
      for (let i = 0; i < chunk.length; i++) out[i] = chunk[i]! ^ key[(position + i) % key.length]!;
      position += chunk.length;
      callback(null, out);
    },
  });
}

/** A transform that en- or decrypts the bytes of a file from byte `offset` on. */
export function cipherAt(key: EncryptionKey, iv: Buffer, offset: number): Transform {
  if (key.method === 'xor') return xorStream(key.key, offset);
  const cipher = createCipheriv('aes-256-ctr', key.key, counterBlock(iv, offset));
  const skip = offset % Number(BLOCK);
  if (skip > 0) cipher.update(Buffer.alloc(skip));
  return cipher;
}
