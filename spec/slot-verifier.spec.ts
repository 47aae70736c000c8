import assert from 'node:assert/strict';
import { hmacVerifiers, signSlot, verifySlot, type HmacScheme } from '../middleware/slot-verifier-hmac.js';
import { slotVerifierContract } from './contracts/slot-verifier.contract.js';

const SECRET = 'mysecret';

describe('slot MACs (PROTOCOL.md test vectors)', () => {
  it('v signs "<path> <size>"', () => {
    assert.equal(signSlot(SECRET, 'v', 'thomas/abc/catmetal.jpg', 23026, 'ignored'), '7b8879e2d1c733b423a70cde30cecc3a3c64a03f790d1b5bcbb2a6aca52b477e');
  });

  it('v2 and token sign "<path>\\0<size>\\0<content-type>"', () => {
    const expected = '7318cd44d4c40731e3b2ff869f553ab2326eae631868e7b8054db20d4aee1c06';
    assert.equal(signSlot(SECRET, 'v2', 'thomas/abc/catmetal.jpg', 23026, 'image/jpeg'), expected);
    assert.equal(signSlot(SECRET, 'token', 'thomas/abc/catmetal.jpg', 23026, 'image/jpeg'), expected);
  });

  it('lets the highest version decide when several are present', () => {
    const req = { path: 'a/b.txt', size: 3, contentType: 'text/plain', headers: {} };
    const v = signSlot(SECRET, 'v', req.path, req.size, req.contentType);
    const v2 = signSlot(SECRET, 'v2', req.path, req.size, req.contentType);
    assert.deepEqual(verifySlot(hmacVerifiers(SECRET), { ...req, query: { v, v2 } }), { verdict: 'valid', scheme: 'v2' });
    // A valid v does not rescue a wrong v2.
    assert.equal(verifySlot(hmacVerifiers(SECRET), { ...req, query: { v, v2: v } }).verdict, 'invalid');
    assert.equal(verifySlot(hmacVerifiers(SECRET), { ...req, query: {} }).verdict, 'absent');
  });
});

for (const scheme of ['v', 'v2', 'token'] as const satisfies readonly HmacScheme[]) {
  slotVerifierContract(scheme, () => ({
    verifier: hmacVerifiers(SECRET).find((v) => v.scheme === scheme)!,
    sign: (r) => ({ [scheme]: signSlot(SECRET, scheme, r.path, r.size, r.contentType) }),
    signsType: scheme !== 'v',
  }));
}
