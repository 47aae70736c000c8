import assert from 'node:assert/strict';
import { SignJWT } from 'jose';
import { HmacQueryVerifier, signSlot, type HmacScheme } from '../middleware/slot-verifier-hmac.js';
import { FileShareJwtVerifier } from '../middleware/slot-verifier-jwt.js';
import { verifySlot } from '../middleware/slot-verifier.js';
import { slotVerifierContract } from './contracts/slot-verifier.contract.js';
import { fileShareToken } from './helpers/jwt.js';

const SECRET = 'mysecret';
const SECRETS = ['current', 'previous'];

describe('slot MACs (docs/protocols.md test vectors)', () => {
  it('v signs "<path> <size>"', () => {
    assert.equal(signSlot(SECRET, 'v', 'thomas/abc/catmetal.jpg', 23026, 'ignored'), '7b8879e2d1c733b423a70cde30cecc3a3c64a03f790d1b5bcbb2a6aca52b477e');
  });

  it('v2 and token sign "<path>\\0<size>\\0<content-type>"', () => {
    const expected = '7318cd44d4c40731e3b2ff869f553ab2326eae631868e7b8054db20d4aee1c06';
    assert.equal(signSlot(SECRET, 'v2', 'thomas/abc/catmetal.jpg', 23026, 'image/jpeg'), expected);
    assert.equal(signSlot(SECRET, 'token', 'thomas/abc/catmetal.jpg', 23026, 'image/jpeg'), expected);
  });

  it('accepts either hex case and binds the content type for v2 and token only', async () => {
    const req = { path: 'a/b.jpg', size: 3, contentType: 'image/jpeg', headers: {} };
    for (const scheme of ['v', 'v2', 'token'] as const) {
      const verifier = new HmacQueryVerifier(scheme, [SECRET]);
      const mac = signSlot(SECRET, scheme, req.path, req.size, req.contentType);
      assert.equal((await verifier.verify({ ...req, query: { [scheme]: mac.toUpperCase() } })).verdict, 'valid');
      const otherType = await verifier.verify({ ...req, contentType: 'image/jpeg; charset=utf-8', query: { [scheme]: mac } });
      assert.equal(otherType.verdict, scheme === 'v' ? 'valid' : 'invalid', scheme);
    }
  });

  it('lets the highest version decide when several are present', async () => {
    const verifiers = (['v', 'v2', 'token'] as const).map((s) => new HmacQueryVerifier(s, [SECRET]));
    const req = { path: 'a/b.txt', size: 3, contentType: 'text/plain', headers: {} };
    const v = signSlot(SECRET, 'v', req.path, req.size, req.contentType);
    const v2 = signSlot(SECRET, 'v2', req.path, req.size, req.contentType);
    assert.deepEqual(await verifySlot(verifiers, { ...req, query: { v, v2 } }), { verdict: 'valid', grant: { scheme: 'v2' } });
    // A valid v does not rescue a wrong v2.
    assert.equal((await verifySlot(verifiers, { ...req, query: { v, v2: v } })).verdict, 'invalid');
    assert.equal((await verifySlot(verifiers, { ...req, query: {} })).verdict, 'absent');
  });

  it('names the ejabberd user dir as the owner when the tenant says so', async () => {
    const path = 'a94a8fe5ccb19ba61c4c0873d391e987982fbbd3/Xy12/photo.jpg';
    const mac = signSlot(SECRET, 'v', path, 5, '');
    const result = await new HmacQueryVerifier('v', [SECRET], true).verify({ path, size: 5, contentType: '', headers: {}, query: { v: mac } });
    assert.deepEqual(result, { verdict: 'valid', grant: { scheme: 'v', owner: 'a94a8fe5ccb19ba61c4c0873d391e987982fbbd3' } });
  });
});

for (const scheme of ['v', 'v2', 'token'] as const satisfies readonly HmacScheme[]) {
  slotVerifierContract(scheme, () => ({
    verifier: new HmacQueryVerifier(scheme, SECRETS),
    sign: (secret, r) => Promise.resolve({ query: { [scheme]: signSlot(secret, scheme, r.path, r.size, r.contentType) }, headers: {} }),
    garbage: [
      { query: { [scheme]: '' }, headers: {} },
      { query: { [scheme]: 'zz'.repeat(32) }, headers: {} },
      { query: { [scheme]: '0'.repeat(63) }, headers: {} },
      { query: { [scheme]: ['a', 'b'] }, headers: {} },
    ],
  }));
}

slotVerifierContract('jwt (Prosody mod_http_file_share)', () => ({
  verifier: new FileShareJwtVerifier(SECRETS),
  sign: async (secret, r) => {
    const [slot, ...name] = r.path.split('/');
    const token = await fileShareToken(secret, { slot: slot!, filename: name.join('/'), filesize: r.size, filetype: r.contentType });
    return { query: {}, headers: { authorization: `Bearer ${token}` } };
  },
  garbage: [
    { query: {}, headers: { authorization: 'Bearer ' + 'x'.repeat(40) } },
    { query: {}, headers: { authorization: 'Bearer a.b.c' } },
    { query: {}, headers: { authorization: 'Bearer eyJhbGciOiJub25lIn0.eyJzbG90IjoiMCJ9.' } },
  ],
}));

describe('file-share JWT refusals', () => {
  const slot = '6a1f0e2c-5b4d-4e3f-8a7b-9c0d1e2f3a4b';
  const req = (token: string, size = 42, path = `${slot}/notes.txt`) => ({
    path,
    size,
    contentType: 'text/plain',
    query: {},
    headers: { authorization: `Bearer ${token}` },
  });
  const verifier = new FileShareJwtVerifier(SECRETS);
  const claims = { slot, filename: 'notes.txt', filesize: 42, filetype: 'text/plain' };

  const refusals: Array<[string, () => Promise<string>, string, string]> = [
    ['an expired exp', () => fileShareToken('current', claims, { expiresIn: -10 }), 'E_SLOT_EXPIRED', 'Upload slot expired'],
    ['a forged signature', () => fileShareToken('forged', claims), 'E_MAC_INVALID', 'Invalid upload token'],
    ['alg none', () => Promise.resolve(`${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...claims, exp: now() + 300 })}.`), 'E_MAC_INVALID', 'Invalid upload token'],
    ['HS512', () => new SignJWT({ ...claims }).setProtectedHeader({ alg: 'HS512' }).setExpirationTime('5m').sign(new TextEncoder().encode('current')), 'E_MAC_INVALID', 'Invalid upload token'],
    ['no alg at all', async () => {
      const [, payload, signature] = (await fileShareToken('current', claims)).split('.');
      return `${b64({ typ: 'JWT' })}.${payload}.${signature}`;
    }, 'E_MAC_INVALID', 'Invalid upload token'],
    ['no exp', () => new SignJWT({ ...claims }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode('current')), 'E_MAC_INVALID', 'Upload token without expiry'],
  ];
  for (const [what, token, code, reason] of refusals) {
    it(`refuses ${what}: ${code}, "${reason}"`, async () => {
      assert.deepEqual(await verifier.verify(req(await token())), { verdict: 'invalid', code, reason, scheme: 'jwt' });
    });
  }

  it('refuses another slot, another file name and another size with their reasons', async () => {
    const token = await fileShareToken('current', claims);
    assert.deepEqual(await verifier.verify(req(token, 42, `other/notes.txt`)), { verdict: 'invalid', code: 'E_SLOT_MISMATCH', reason: 'Upload slot does not match the URL', scheme: 'jwt' });
    assert.deepEqual(await verifier.verify(req(token, 42, `${slot}/other.txt`)), { verdict: 'invalid', code: 'E_SLOT_MISMATCH', reason: 'File name does not match the upload slot', scheme: 'jwt' });
    assert.deepEqual(await verifier.verify(req(token, 41)), { verdict: 'invalid', code: 'E_SIZE_MISMATCH', reason: 'Size does not match the upload slot', scheme: 'jwt' });
  });

  it('grants the token type, uploader and file expiry', async () => {
    const expires = now() + 3600;
    const token = await fileShareToken('previous', { ...claims, filetype: 'text/plain; charset=utf-8', expires }, { sub: 'alice@example.test' });
    assert.deepEqual(await verifier.verify(req(token)), {
      verdict: 'valid',
      grant: { scheme: 'jwt', contentType: 'text/plain; charset=utf-8', owner: 'alice@example.test', expiresAt: new Date(expires * 1000) },
    });
  });
});

function now(): number {
  return Math.floor(Date.now() / 1000);
}

function b64(value: object): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}
