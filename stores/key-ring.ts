// The keys of encryption at rest. Every key that may have written a file stays in the ring (the AES and XOR
// keys given or derived, and the PreviousAESKeys / PreviousXORKeys), so files stay readable after encryption is
// switched off, switched to the other method, or rotated; new files use the current key, if any.
// A key given as empty hex is derived from Secret with HKDF-SHA256, one label per method.
import { createHash, hkdfSync } from 'node:crypto';
import type { Config } from '../server/config.js';
import type { CipherMethod, EncryptionKey } from './seekable-cipher.js';

const LABELS: Record<CipherMethod, string> = {
  aes: 'hmac-file-server aes-256-ctr v1',
  xor: 'hmac-file-server xor v1',
};

export function encryptionKey(method: CipherMethod, key: Buffer): EncryptionKey {
  return { id: `${method}-${createHash('sha256').update(key).digest('hex').slice(0, 16)}`, method, key };
}

export function derivedKey(method: CipherMethod, secret: string): EncryptionKey {
  return encryptionKey(method, Buffer.from(hkdfSync('sha256', secret, '', LABELS[method], 32)));
}

export class KeyRing {
  private readonly keys = new Map<string, EncryptionKey>();

  constructor(
    keys: readonly EncryptionKey[],
    /** The key new files are written with; undefined when encryption is off. */
    readonly current: EncryptionKey | undefined,
  ) {
    for (const key of keys) this.keys.set(key.id, key);
    if (current) this.keys.set(current.id, current);
  }

  byId(id: string): EncryptionKey | undefined {
    return this.keys.get(id);
  }
}

type KeyConfig = Pick<Config, 'Secret' | 'AESEnabled' | 'XOREnabled' | 'Method' | 'AESKey' | 'XORKey' | 'PreviousAESKeys' | 'PreviousXORKeys'>;

/** Which method new files use: the one switched on, or Method when both are. */
function activeMethod(config: Pick<KeyConfig, 'AESEnabled' | 'XOREnabled' | 'Method'>): CipherMethod | undefined {
  if (config.AESEnabled && config.XOREnabled) return config.Method;
  if (config.AESEnabled) return 'aes';
  if (config.XOREnabled) return 'xor';
  return undefined;
}

export function keyRingFrom(config: KeyConfig): KeyRing {
  const aes = config.AESKey ? encryptionKey('aes', Buffer.from(config.AESKey, 'hex')) : derivedKey('aes', config.Secret);
  const xor = config.XORKey ? encryptionKey('xor', Buffer.from(config.XORKey, 'hex')) : derivedKey('xor', config.Secret);
  const previous = [
    ...config.PreviousAESKeys.map((hex) => encryptionKey('aes', Buffer.from(hex, 'hex'))),
    ...config.PreviousXORKeys.map((hex) => encryptionKey('xor', Buffer.from(hex, 'hex'))),
  ];
  const method = activeMethod(config);
  return new KeyRing([aes, xor, ...previous], method === 'aes' ? aes : method === 'xor' ? xor : undefined);
}
