import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { derivedKey, encryptionKey, keyRingFrom } from '../stores/key-ring.js';
import { cipherAt, counterBlock, type EncryptionKey } from '../stores/seekable-cipher.js';

async function run(key: EncryptionKey, iv: Buffer, offset: number, data: Buffer, chunk = 1000): Promise<Buffer> {
  const parts = Array.from({ length: Math.ceil(data.length / chunk) }, (_, i) => data.subarray(i * chunk, (i + 1) * chunk));
  return buffer(Readable.from(parts).pipe(cipherAt(key, iv, offset)));
}

describe('seekable ciphers', () => {
  it('AES-256-CTR matches the NIST SP 800-38A F.5.5 vector', async () => {
    const key = encryptionKey('aes', Buffer.from('603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4', 'hex'));
    const iv = Buffer.from('f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff', 'hex');
    const out = await run(key, iv, 0, Buffer.from('6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51', 'hex'));
    assert.equal(out.toString('hex'), '601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5');
  });

  for (const method of ['aes', 'xor'] as const) {
    it(`${method}: starting at any offset gives exactly the slice of a whole-file pass, whatever the chunking`, async () => {
      const key = derivedKey(method, 'secret');
      const iv = randomBytes(16);
      const data = randomBytes(10_000);
      const whole = await run(key, iv, 0, data, 10_000);
      for (const offset of [0, 1, 15, 16, 17, 31, 4095, 4096, 9999]) {
        for (const chunk of [1, 7, 16, 1000]) {
          assert.deepEqual(await run(key, iv, offset, data.subarray(offset), chunk), whole.subarray(offset), `${method} offset ${offset} chunk ${chunk}`);
        }
      }
      // Applying it twice gives the plaintext back.
      assert.deepEqual(await run(key, iv, 0, whole), data);
    });
  }

  it('wraps the 128-bit counter', () => {
    const iv = Buffer.alloc(16, 0xff);
    assert.equal(counterBlock(iv, 0).toString('hex'), 'f'.repeat(32));
    assert.equal(counterBlock(iv, 16).toString('hex'), '0'.repeat(32));
    assert.equal(counterBlock(iv, 47).toString('hex'), `${'0'.repeat(31)}1`);
  });

  it('derives different keys per method and names them without revealing them', () => {
    const aes = derivedKey('aes', 'secret');
    const xor = derivedKey('xor', 'secret');
    assert.notDeepEqual(aes.key, xor.key);
    assert.match(aes.id, /^aes-[0-9a-f]{16}$/);
    assert.ok(!aes.key.toString('hex').includes(aes.id.slice(4)));
    assert.equal(derivedKey('aes', 'secret').id, aes.id);
    assert.notEqual(derivedKey('aes', 'other').id, aes.id);
  });

  it('keeps every key that may have written a file in the ring', () => {
    const old = randomBytes(32).toString('hex');
    const current = randomBytes(32).toString('hex');
    const ring = keyRingFrom({ Secret: 's', AESEnabled: true, XOREnabled: false, Method: 'aes', AESKey: current, XORKey: '', PreviousAESKeys: [old], PreviousXORKeys: [] });
    assert.equal(ring.current?.id, encryptionKey('aes', Buffer.from(current, 'hex')).id);
    assert.ok(ring.byId(encryptionKey('aes', Buffer.from(old, 'hex')).id));
    assert.ok(ring.byId(derivedKey('xor', 's').id));
    const off = keyRingFrom({ Secret: 's', AESEnabled: false, XOREnabled: false, Method: 'aes', AESKey: current, XORKey: '', PreviousAESKeys: [], PreviousXORKeys: [] });
    assert.equal(off.current, undefined);
    assert.ok(off.byId(ring.current.id));
  });
});
