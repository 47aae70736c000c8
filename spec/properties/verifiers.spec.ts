// Property: the slot verifiers of the legacy door (HMAC query MACs, Prosody file-share JWT) and the upload
// grants of the tus door never throw, whatever a client sends, and say "valid" only for what was signed with
// a secret the server holds, over exactly this request.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import { HmacQueryVerifier, signSlot, type HmacScheme } from '../../middleware/slot-verifier-hmac.js';
import { FileShareJwtVerifier } from '../../middleware/slot-verifier-jwt.js';
import type { SlotRequest, SlotResult } from '../../middleware/slot-verifier.js';
import { GRANT_AUDIENCE, grantKey, grantTokenOf, verifyGrant, type GrantCheck } from '../../middleware/upload-grant.js';
import { anyString, params, queryObject, timeoutFor } from '../helpers/fuzz.js';

/** A tenant's current and previous secret: both verify (rotation). */
const SECRETS = ['current-secret', 'previous-secret'] as const;
const SCHEMES = ['v', 'v2', 'token'] as const satisfies readonly HmacScheme[];
const NOW = () => Math.floor(Date.now() / 1000);

const scheme = fc.constantFrom(...SCHEMES);
const secretIndex = fc.constantFrom(0, 1);
/**
 * A secret the tenant does not hold (a near-miss of its own ones, or anything). HMAC pads a short key with
 * zero bytes, so "secret" and "secret\0" are one key: such a "stranger" holds the secret and is left out.
 */
const strangerSecret = fc
  .oneof(fc.constantFrom('current-secre', 'current-secret ', 'Current-secret', 'previous-secret\u0001', 'test-secret'), anyString(20))
  .filter((s) => s !== '' && !(SECRETS as readonly string[]).includes(s.replace(/\0+$/, '')));
/** Sizes as a verifier might be handed them; the server only passes integers, but a verifier must not care. */
const anySize = fc.oneof(fc.nat(), fc.integer(), fc.double(), fc.constantFrom(0, -0, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, 1e21));
/** Header values as Node delivers them: absent, one string or (for a repeated header) several. */
const headerSlot = fc.oneof(fc.constant(undefined), anyString(60), fc.array(anyString(30), { maxLength: 3 }));
const BEARERISH = ['Bearer ', 'bearer ', 'BEARER\t', 'Bearer', 'Basic ', 'Bearer  ', 'eyJhbGciOiJIUzI1NiJ9', '.', '..', 'e30', 'eyJ9', ' ', '\t'];
const authorization = fc.oneof(
  headerSlot,
  fc.array(fc.oneof(fc.constantFrom(...BEARERISH), anyString(12)), { minLength: 1, maxLength: 6 }).map((p) => p.join('')),
  fc.tuple(fc.constantFrom('Bearer ', 'bearer  '), fc.array(fc.base64String({ maxLength: 40 }), { minLength: 1, maxLength: 4 })).map(([b, parts]) => `${b}${parts.join('.').replace(/=/g, '')}`),
);
const headers = fc.record({ authorization, 'content-type': headerSlot }, { requiredKeys: [] }).chain((known) =>
  fc.dictionary(fc.string({ maxLength: 12 }), headerSlot, { maxKeys: 3 }).map((other) => ({ ...other, ...known })),
);

/** What a verifier is asked about: a path, a declared size and a content type, all arbitrary. */
const slotRequest = () => fc.record({ path: anyString(60), size: anySize, contentType: anyString(40) });

/** A verify() that throws or rejects fails the property with the input, instead of being taken for a refusal. */
async function verdictOf(verify: () => Promise<SlotResult>): Promise<SlotResult> {
  let result: SlotResult;
  try {
    result = await verify();
  } catch (err) {
    assert.fail(`verify threw ${String(err)}`);
  }
  assert.ok(['absent', 'invalid', 'valid'].includes(result.verdict), JSON.stringify(result));
  return result;
}

/** A compact JWS built by hand, so the header (alg, crit, …) and the claims can be anything at all. */
function jws(header: unknown, payload: unknown, key: string | Uint8Array | undefined, hash: 'sha256' | 'sha512' = 'sha256'): string {
  const part = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
  const input = `${part(header)}.${part(payload)}`;
  const signature = key === undefined ? '' : createHmac(hash, key).update(input).digest('base64url');
  return `${input}.${signature}`;
}

/** One hex digit of mac replaced by another value (not just another case): the MAC is wrong. */
const macMutation = fc.record({ index: fc.integer({ min: 0, max: 63 }), delta: fc.integer({ min: 1, max: 15 }) });
function mutate(mac: string, { index, delta }: { index: number; delta: number }): string {
  const digit = ((parseInt(mac[index]!, 16) + delta) % 16).toString(16);
  return mac.slice(0, index) + digit + mac.slice(index + 1);
}

describe('HMAC slot verifiers under hostile input (property)', () => {
  it('never throw and never accept a query nobody signed', async function () {
    this.timeout(timeoutFor(5_000, 0.2, 20_000));
    await fc.assert(
      fc.asyncProperty(scheme, fc.boolean(), slotRequest(), queryObject([...SCHEMES]), headers, async (s, userDir, request, query, hdrs) => {
        const result = await verdictOf(() => new HmacQueryVerifier(s, SECRETS, userDir).verify({ ...request, query, headers: hdrs }));
        assert.notEqual(result.verdict, 'valid');
        assert.equal(result.verdict === 'absent', query[s] === undefined);
        if (result.verdict === 'invalid') assert.deepEqual([result.code, result.scheme], ['E_MAC_INVALID', s]);
      }),
      params(5_000),
    );
  });

  it('accept a slot signed with the current or the previous secret, in either hex case', async function () {
    this.timeout(timeoutFor(3_000, 0.2, 20_000));
    await fc.assert(
      fc.asyncProperty(scheme, secretIndex, fc.boolean(), slotRequest(), queryObject(['grant', 'x']), fc.boolean(), async (s, i, userDir, request, noise, upper) => {
        const mac = signSlot(SECRETS[i], s, request.path, request.size, request.contentType);
        const query = { ...noise, [s]: upper ? mac.toUpperCase() : mac };
        const result = await verdictOf(() => new HmacQueryVerifier(s, SECRETS, userDir).verify({ ...request, query, headers: {} }));
        assert.equal(result.verdict, 'valid', JSON.stringify(result));
        const owner = userDir ? request.path.split('/')[0] : undefined;
        assert.deepEqual(result.verdict === 'valid' && result.grant, { scheme: s, ...(owner ? { owner } : {}) });
      }),
      params(3_000),
    );
  });

  it('refuse a MAC made with another secret or with one hex digit changed', async function () {
    this.timeout(timeoutFor(3_000, 0.3, 20_000));
    await fc.assert(
      fc.asyncProperty(scheme, secretIndex, strangerSecret, slotRequest(), macMutation, async (s, i, stranger, request, mutation) => {
        const verifier = new HmacQueryVerifier(s, SECRETS);
        const verify = (mac: string) => verdictOf(() => verifier.verify({ ...request, query: { [s]: mac }, headers: {} }));
        const forged = signSlot(stranger, s, request.path, request.size, request.contentType);
        assert.equal((await verify(forged)).verdict, 'invalid', `a MAC under ${JSON.stringify(stranger)} was accepted`);
        const mutated = mutate(signSlot(SECRETS[i], s, request.path, request.size, request.contentType), mutation);
        assert.equal((await verify(mutated)).verdict, 'invalid', `mutated MAC ${mutated} was accepted`);
      }),
      params(3_000),
    );
  });

  it('do not carry a valid MAC over to another path, size or (v2, token) content type', async function () {
    this.timeout(timeoutFor(3_000, 0.3, 20_000));
    // What the server can hand a verifier: NUL never survives path validation, and Node refuses it in headers.
    const noNul = (max: number) => anyString(max).filter((x) => !x.includes('\0'));
    const signed = fc.record({ path: noNul(40), size: fc.nat(), contentType: noNul(30) });
    const change = fc.oneof(
      fc.record({ path: noNul(40) }, { requiredKeys: ['path'] }),
      fc.record({ size: fc.nat() }, { requiredKeys: ['size'] }),
      fc.record({ contentType: noNul(30) }, { requiredKeys: ['contentType'] }),
    );
    await fc.assert(
      fc.asyncProperty(scheme, secretIndex, signed, change, async (s, i, request, over) => {
        const other = { ...request, ...over };
        const mac = signSlot(SECRETS[i], s, request.path, request.size, request.contentType);
        const result = await verdictOf(() => new HmacQueryVerifier(s, SECRETS).verify({ ...other, query: { [s]: mac }, headers: {} }));
        const same = other.path === request.path && other.size === request.size && (s === 'v' || other.contentType === request.contentType);
        assert.equal(result.verdict, same ? 'valid' : 'invalid', JSON.stringify({ request, other }));
      }),
      params(3_000),
    );
  });
});

describe('file-share JWT verifier under hostile input (property)', () => {
  const verifier = new FileShareJwtVerifier(SECRETS);

  it('never throws and never accepts a header nobody signed', async function () {
    this.timeout(timeoutFor(5_000, 0.3, 20_000));
    await fc.assert(
      fc.asyncProperty(slotRequest(), headers, queryObject(['v', 'jwt']), async (request, hdrs, query) => {
        const result = await verdictOf(() => verifier.verify({ ...request, query, headers: hdrs }));
        assert.notEqual(result.verdict, 'valid');
        if (result.verdict === 'invalid') assert.equal(result.scheme, 'jwt');
      }),
      params(5_000),
    );
  });

  // A token for a request: each claim either right for it, wrong, missing or of the wrong type; signed with
  // one of the tenant's secrets (HS256), a stranger's, HS512, or not at all. The verdict must be "valid"
  // exactly when the signature is HS256 under a held secret, the token is current, and slot, file name and
  // size are this request's.
  const slotSegment = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }).filter((x) => !x.includes('/'));
  const fileRequest = fc.record({ slot: slotSegment, rest: fc.array(slotSegment, { minLength: 1, maxLength: 2 }), size: fc.nat() });
  const signing = fc.oneof(
    fc.record({ alg: fc.constant('HS256'), key: secretIndex.map((i) => SECRETS[i]), held: fc.constant(true) }),
    fc.record({ alg: fc.constant('HS256'), key: strangerSecret, held: fc.constant(false) }),
    fc.record({ alg: fc.constantFrom('HS512', 'none', 'hs256', 'RS256', 'ES256'), key: secretIndex.map((i) => SECRETS[i]), held: fc.constant(false) }),
  );
  type Choice<T> = { value: T | undefined; good: boolean };
  const claim = <T>(good: fc.Arbitrary<T | undefined>, bad: fc.Arbitrary<unknown>): fc.Arbitrary<Choice<unknown>> =>
    fc.oneof({ weight: 3, arbitrary: good.map((value) => ({ value, good: true })) }, { weight: 1, arbitrary: bad.map((value) => ({ value, good: false })) });

  it('accepts exactly the tokens signed over this slot, name and size with a held secret', async function () {
    this.timeout(timeoutFor(3_000, 1, 20_000));
    const token = fileRequest.chain((req) => {
      const name = req.rest.join('/');
      return fc.record({
        req: fc.constant(req),
        signing,
        slot: claim(fc.constant(req.slot), fc.oneof(slotSegment.filter((x) => x !== req.slot), fc.constant(undefined), fc.constant(7))),
        filename: claim(fc.oneof(fc.constant(name), fc.constant(undefined), fc.constant(42)), fc.string().filter((x) => x !== name)),
        filesize: claim(fc.constant(req.size), fc.oneof(fc.nat().filter((n) => n !== req.size), fc.constant(String(req.size)), fc.constant(undefined))),
        exp: claim(fc.integer({ min: 60, max: 86_400 }), fc.oneof(fc.integer({ min: -86_400, max: -5 }), fc.constant('1h'), fc.constant(undefined), fc.constant(null))),
        nbf: claim(fc.oneof(fc.constant(undefined), fc.integer({ min: -86_400, max: -5 })), fc.integer({ min: 120, max: 86_400 })),
        sub: fc.oneof(fc.constant(undefined), fc.string({ maxLength: 20 }), fc.constant(5)),
        filetype: fc.oneof(fc.constant(undefined), fc.constant(''), anyString(30)),
        expires: fc.oneof(fc.constant(undefined), fc.integer({ min: 0, max: 2 ** 31 }), fc.constant('soon')),
      });
    });
    await fc.assert(
      fc.asyncProperty(token, async (t) => {
        const now = NOW();
        const relative = (c: Choice<unknown>) => ({ ...c, value: typeof c.value === 'number' ? now + c.value : c.value });
        const exp = relative(t.exp);
        const nbf = relative(t.nbf);
        const payload = Object.fromEntries(
          Object.entries({ slot: t.slot.value, filename: t.filename.value, filesize: t.filesize.value, exp: exp.value, nbf: nbf.value, sub: t.sub, filetype: t.filetype, expires: t.expires, iat: now }).filter(([, v]) => v !== undefined),
        );
        const { alg, key } = t.signing;
        const jwt = jws({ alg, typ: 'JWT' }, payload, alg === 'none' ? undefined : key, alg === 'HS512' ? 'sha512' : 'sha256');
        const request: SlotRequest = { path: `${t.req.slot}/${t.req.rest.join('/')}`, size: t.req.size, contentType: 'application/octet-stream', query: {}, headers: { authorization: `Bearer ${jwt}` } };
        const result = await verdictOf(() => verifier.verify(request));
        const expected = t.signing.held && [t.slot, t.filename, t.filesize, t.exp, t.nbf].every((c) => c.good);
        assert.equal(result.verdict, expected ? 'valid' : 'invalid', JSON.stringify({ payload, alg, result }));
        if (result.verdict === 'valid') {
          assert.deepEqual(result.grant, {
            scheme: 'jwt',
            ...(typeof t.filetype === 'string' && t.filetype !== '' ? { contentType: t.filetype } : {}),
            ...(typeof t.sub === 'string' ? { owner: t.sub } : {}),
            ...(typeof t.expires === 'number' ? { expiresAt: new Date(t.expires * 1000) } : {}),
          });
        }
      }),
      params(3_000),
    );
  });
});

describe('upload grants under hostile input (property)', () => {
  const key = grantKey('', 'test-secret');
  const REASONS = ['missing', 'expired', 'invalid', 'malformed'];

  async function checkOf(token: string | undefined): Promise<GrantCheck> {
    let check: GrantCheck;
    try {
      check = await verifyGrant(key, token);
    } catch (err) {
      assert.fail(`verifyGrant threw ${String(err)}`);
    }
    if (!check.ok) assert.ok(REASONS.includes(check.reason), JSON.stringify(check));
    return check;
  }

  const goodClaims = {
    aud: fc.constantFrom(GRANT_AUDIENCE, [GRANT_AUDIENCE], ['other', GRANT_AUDIENCE]),
    sub: fc.string({ minLength: 1, maxLength: 20 }),
    exp: fc.integer({ min: 60, max: 86_400 }),
    max_size: fc.oneof(fc.integer({ min: 1, max: 2 ** 31 }), fc.constant(Number.MAX_SAFE_INTEGER), fc.constant(1)),
    filename: fc.oneof(fc.constant(undefined), fc.string({ minLength: 1, maxLength: 20 }).filter((x) => !x.includes('/'))),
    prefix: fc.oneof(fc.constant(undefined), fc.constantFrom('team', 'team/alice', 'a.b/c-d', 'é')),
  };
  const badClaims = {
    aud: fc.constantFrom(undefined, 'other', 'hmac-file-server:TUS', ' hmac-file-server:tus', ['other'], 7),
    sub: fc.constantFrom(undefined, '', 5, null, ['alice']),
    exp: fc.oneof(fc.integer({ min: -86_400, max: -5 }), fc.constantFrom(undefined, '1h', null)),
    // 0 allows no upload at all; a grant that allows nothing is a mistake, not a grant.
    max_size: fc.oneof(
      fc.constantFrom(undefined, 0, -0, -1, 0.5, 1.5, Number.MAX_SAFE_INTEGER + 1, 2 ** 53 + 2, 1e300, '10', null, true, [10]),
      fc.integer({ min: -(2 ** 31), max: -1 }),
      fc.double({ noNaN: true, noInteger: true }),
    ),
    filename: fc.constantFrom('a/b', '/', 7, null, ['a']),
    prefix: fc.constantFrom('', '..', 'a/../b', '/abs', 'a//b', 'a\\b', 'a\u0000b', 'a/', 7, null),
  };
  type ClaimName = keyof typeof goodClaims;
  const NAMES = Object.keys(goodClaims) as ClaimName[];

  /** Claims with the given ones bad and the rest good; exp is relative to now. */
  const claims = (bad: readonly ClaimName[]) =>
    fc.record(Object.fromEntries(NAMES.map((n) => [n, bad.includes(n) ? badClaims[n] : goodClaims[n]])) as { [K in ClaimName]: fc.Arbitrary<unknown> });
  const payloadOf = (c: Record<string, unknown>, now: number): Record<string, unknown> =>
    Object.fromEntries(Object.entries({ ...c, exp: typeof c.exp === 'number' ? now + c.exp : c.exp, iat: now }).filter(([, v]) => v !== undefined));

  it('never throws and never grants anything for an arbitrary string', async function () {
    this.timeout(timeoutFor(5_000, 0.2, 20_000));
    const jwtish = fc.array(fc.oneof(fc.base64String({ maxLength: 40 }).map((b) => b.replace(/=/g, '')), fc.constantFrom('eyJhbGciOiJIUzI1NiJ9', 'e30', 'eyJhbGciOiJub25lIn0', '')), { minLength: 1, maxLength: 5 }).map((p) => p.join('.'));
    await fc.assert(
      fc.asyncProperty(fc.oneof(anyString(200), jwtish, fc.constant(undefined)), async (token) => {
        const check = await checkOf(token);
        assert.equal(check.ok, false, JSON.stringify(check));
      }),
      params(5_000),
    );
  });

  it('refuses grants that are forged: another key, alg none, HS512, a lower-case or asymmetric alg', async function () {
    this.timeout(timeoutFor(3_000, 0.5, 20_000));
    const forgery = fc.oneof(
      fc.record({ alg: fc.constant('HS256'), key: strangerSecret.map((s) => new TextEncoder().encode(s)), hash: fc.constant<'sha256'>('sha256') }),
      fc.record({ alg: fc.constant('HS256'), key: fc.constant(new TextEncoder().encode('test-secret')), hash: fc.constant<'sha256'>('sha256') }),
      fc.record({ alg: fc.constant('HS512'), key: fc.constant(key), hash: fc.constant<'sha512'>('sha512') }),
      fc.record({ alg: fc.constantFrom('none', 'None', 'NONE'), key: fc.constant(undefined), hash: fc.constant<'sha256'>('sha256') }),
      fc.record({ alg: fc.constantFrom('hs256', 'RS256', 'ES256', 'PS256', 'EdDSA', ''), key: fc.constant(key), hash: fc.constant<'sha256'>('sha256') }),
    );
    await fc.assert(
      fc.asyncProperty(forgery, claims([]), async (f, c) => {
        const token = jws({ alg: f.alg, typ: 'JWT' }, payloadOf(c, NOW()), f.key, f.hash);
        const check = await checkOf(token);
        assert.equal(check.ok, false, `forged grant accepted: alg ${f.alg}, ${JSON.stringify(c)}`);
      }),
      params(3_000),
    );
  });

  it('refuses a correctly signed grant when a claim is missing, expired or out of range (max_size 0 included)', async function () {
    this.timeout(timeoutFor(5_000, 0.5, 20_000));
    const someBad = fc.subarray(NAMES, { minLength: 1 }).chain((bad) => claims(bad).map((c) => ({ bad, c })));
    await fc.assert(
      fc.asyncProperty(someBad, async ({ bad, c }) => {
        const token = jws({ alg: 'HS256', typ: 'JWT' }, payloadOf(c, NOW()), key);
        const check = await checkOf(token);
        assert.equal(check.ok, false, `grant accepted with bad ${bad.join(', ')}: ${JSON.stringify(c)}`);
      }),
      params(5_000),
    );
  });

  it('refuses a correctly signed, current grant whose max_size is 0, negative, fractional, huge or not a number', async function () {
    this.timeout(timeoutFor(2_000, 0.5, 20_000));
    await fc.assert(
      fc.asyncProperty(claims(['max_size']), async (c) => {
        const check = await checkOf(jws({ alg: 'HS256', typ: 'JWT' }, payloadOf(c, NOW()), key));
        assert.equal(check.ok, false, `grant accepted with max_size ${JSON.stringify(c.max_size)}`);
      }),
      params(2_000),
    );
  });

  it('accepts a correctly signed, current grant and reports its claims', async function () {
    this.timeout(timeoutFor(2_000, 0.5, 20_000));
    await fc.assert(
      fc.asyncProperty(claims([]), async (c) => {
        const now = NOW();
        const check = await checkOf(jws({ alg: 'HS256', typ: 'JWT' }, payloadOf(c, now), key));
        assert.ok(check.ok, JSON.stringify({ c, check }));
        assert.deepEqual(check.grant, {
          subject: c.sub,
          expiresAt: new Date((now + (c.exp as number)) * 1000),
          maxSize: c.max_size,
          ...(c.filename !== undefined ? { filename: c.filename } : {}),
          ...(c.prefix !== undefined ? { prefix: c.prefix } : {}),
        });
      }),
      params(2_000),
    );
  });

  it('takes the grant from a Bearer header, else from ?grant=, and never throws', function () {
    this.timeout(timeoutFor(10_000, 0.05, 20_000));
    const header = fc.oneof(fc.constant(undefined), anyString(60), fc.array(fc.oneof(fc.constantFrom(...BEARERISH), anyString(10)), { minLength: 1, maxLength: 5 }).map((p) => p.join('')));
    fc.assert(
      fc.property(header, queryObject(['grant']), (authorizationHeader, query) => {
        const token = grantTokenOf({ authorization: authorizationHeader }, query);
        const bearer = /^Bearer\s+(\S+)\s*$/i.exec(authorizationHeader ?? '');
        if (bearer) assert.equal(token, bearer[1]);
        else assert.equal(token, typeof query.grant === 'string' ? query.grant : undefined);
        if (token !== undefined) assert.equal(typeof token, 'string');
      }),
      params(10_000),
    );
  });
});
