// Property: against one real server on loopback, generated requests (hostile Range headers, tus headers, raw
// legacy paths and queries) never get a 5xx, never reach outside StoreDir, and leave the server working:
// committed files still download, a normal tus upload still succeeds.
import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { signSlot } from '../../middleware/slot-verifier-hmac.js';
import { grantKey, mintGrant } from '../../middleware/upload-grant.js';
import { encodeSlotPath } from '../../server/cli-sign.js';
import { rawRequest, signedPut, type RawResponse } from '../helpers/http.js';
import { startTestServer, TEST_SECRET, type TestServer } from '../helpers/test-server.js';
import { headerFrom, headerValue, params, Tally, timeoutFor, withDeadline } from '../helpers/fuzz.js';
import { fileShareToken } from '../helpers/jwt.js';

const TUS = { 'Tus-Resumable': '1.0.0' };
const OFFSET_TYPE = 'application/offset+octet-stream';
const DELETE_SECRET = 'fuzz-delete-secret';
const MAX_GRANT = 1024 * 1024;

/** The files committed before the properties run; the fuzzers never generate the segment "known". */
const KNOWN: Record<string, Buffer> = {
  'known/ten-k.bin': randomBytes(10_000),
  'known/empty.bin': Buffer.alloc(0),
  'known/one.txt': Buffer.from('x'),
  'known/notes é.txt': Buffer.from('thirty-seven bytes of plain old text\n'),
};

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const hex32 = fc.stringMatching(/^[0-9a-f]{32}$/);
const tinyBody = fc.oneof({ weight: 4, arbitrary: fc.constant(Buffer.alloc(0)) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 8 }).map((a) => Buffer.from(a)) });
/** A header that is present `present` times to `absent` times absent (shrinking towards absent). */
const maybe = <T>(arb: fc.Arbitrary<T>, present = 1, absent = 1) => fc.oneof({ weight: absent, arbitrary: fc.constant(undefined) }, { weight: present, arbitrary: arb });
const defined = (h: Record<string, string | number | undefined>): Record<string, string | number> =>
  Object.fromEntries(Object.entries(h).filter((e): e is [string, string | number] => e[1] !== undefined));

/** Numbers as a client may write them in Upload-Length, Upload-Offset, Range. */
const numberText = fc.oneof(
  { weight: 4, arbitrary: fc.nat({ max: 64 }).map(String) },
  {
    weight: 2,
    arbitrary: fc.constantFrom('0', '00', '-0', '-1', '+5', '1e3', '0x10', '1.5', ' 7 ', '', 'NaN', 'Infinity', '1,2', '3 3', String(MAX_GRANT), String(MAX_GRANT + 1), '9007199254740993', '99999999999999999999', '18446744073709551616'),
  },
  { weight: 1, arbitrary: headerValue(10) },
);

/** Whether a downloaded answer obeys the media-type rule: one ASCII type, no list, inline only for safe media. */
function checkServedType(res: RawResponse, what: string): void {
  const type = String(res.headers['content-type'] ?? '');
  assert.match(type, /^[\x20-\x7e]*$/, `${what}: Content-Type ${JSON.stringify(type)}`);
  assert.ok(!type.includes(','), `${what}: Content-Type ${JSON.stringify(type)}`);
  if (/^inline/i.test(String(res.headers['content-disposition'] ?? ''))) {
    const essence = type.split(';')[0]!.trim().toLowerCase();
    const [top, sub = ''] = essence.split('/');
    const safe = (top === 'image' && sub !== '' && !sub.includes('svg') && !sub.includes('xml')) || ((top === 'video' || top === 'audio') && sub !== '') || essence === 'text/plain';
    assert.ok(safe, `${what}: ${JSON.stringify(type)} is served inline`);
  }
}

describe('HTTP doors under hostile requests (property)', () => {
  let parent: string;
  let storeDir: string;
  let server: TestServer;
  let grant: string;
  let canary: string;
  let parentBefore: string[];
  const auth = () => ({ Authorization: `Bearer ${grant}` });

  /** A request that must be answered within a deadline; a 5xx fails with the server's logged cause. */
  async function send(method: string, rawPath: string, headers: Record<string, string | number> = {}, body?: Buffer): Promise<RawResponse> {
    const logsBefore = server.logs.length;
    const what = `${method} ${rawPath} ${JSON.stringify(headers)}${body?.length ? ` body ${body.toString('hex')}` : ''}`;
    let res: RawResponse;
    try {
      res = await withDeadline(rawRequest(server.url, method, rawPath, headers, body), 15_000, what);
    } catch (err) {
      // "aborted": the connection ended before the body its Content-Length announced (a broken answer).
      const why = err instanceof Error && err.message === 'aborted' ? 'the answer ended before the body its Content-Length announced' : String(err);
      throw new Error(`${what}: ${why}\n${server.logs.slice(logsBefore).join('\n')}`, { cause: err });
    }
    if (res.status >= 500 || res.status < 100) {
      const logged = server.logs.slice(logsBefore).filter((l) => / error /.test(l));
      assert.fail(`${what} answered ${res.status} ${res.body.toString().trim()}\n${logged.join('\n')}`);
    }
    assert.ok(!res.body.includes(canary), `${what} returned the file outside the store`);
    return res;
  }

  async function assertKnownFilesServed(): Promise<void> {
    for (const [slot, data] of Object.entries(KNOWN)) {
      const res = await send('GET', `/${server.config.UploadSubDir}/${encodeSlotPath(slot)}`);
      assert.equal(res.status, 200, slot);
      assert.ok(res.body.equals(data), slot);
    }
  }

  before(async function () {
    this.timeout(60_000);
    parent = await mkdtemp(path.join(os.tmpdir(), 'hfs-fuzz-'));
    storeDir = path.join(parent, 'store');
    await mkdir(storeDir);
    // Something worth stealing next to the store: no answer may ever contain it, no request may touch it.
    canary = `canary-${randomBytes(12).toString('hex')}`;
    await mkdir(path.join(parent, 'outside'));
    await writeFile(path.join(parent, 'outside', 'secret.txt'), canary);
    server = await startTestServer({ StoreDir: storeDir, DeleteSecret: DELETE_SECRET, LogLevel: 'info' });
    for (const [slot, data] of Object.entries(KNOWN)) {
      const put = await signedPut(server, slot, data, { contentType: slot.endsWith('.txt') ? 'text/plain; charset=utf-8' : 'application/octet-stream' });
      assert.equal(put.status, 201, `${slot}: ${put.body.toString()}`);
    }
    grant = await mintGrant(grantKey(server.config.GrantSecret, server.config.Secret), { subject: 'fuzzer', maxSize: MAX_GRANT, ttlSeconds: 3600 });
    parentBefore = (await readdir(parent)).sort();
  });

  after(async () => {
    await server?.close();
    if (parent) await rm(parent, { recursive: true, force: true });
  });

  describe('Range and If-Range on a committed file', () => {
    it('answer 200 with the whole file, 206 with exactly the slice named, or 416', async function () {
      this.timeout(timeoutFor(800, 30, 120_000));
      const tally = new Tally('Range');
      const validators: Record<string, { etag: string; lastModified: string }> = {};
      for (const slot of Object.keys(KNOWN)) {
        const head = await send('HEAD', `/upload/${encodeSlotPath(slot)}`);
        validators[slot] = { etag: String(head.headers.etag), lastModified: String(head.headers['last-modified']) };
      }
      /** Range headers for a file of size bytes: mostly well-formed, around its edges; then near misses and garbage. */
      const rangeFor = (size: number) => {
        const near = fc.oneof(fc.nat({ max: size + 2 }), fc.constantFrom(0, 1, Math.max(size - 1, 0), size, size + 1)).map(String);
        const n = fc.oneof({ weight: 4, arbitrary: near }, { weight: 1, arbitrary: numberText });
        const spec = fc.oneof(
          { weight: 4, arbitrary: fc.tuple(n, n).map(([x, y]) => `${x}-${y}`) },
          { weight: 2, arbitrary: n.map((x) => `${x}-`) },
          { weight: 2, arbitrary: n.map((y) => `-${y}`) },
          { weight: 1, arbitrary: fc.oneof(n, fc.constantFrom('-', '', ' ', '1-0', '0--1', '--1', '1-2-3')) },
        );
        const specs = fc.tuple(fc.array(spec, { minLength: 1, maxLength: 3 }), fc.constantFrom(',', ',', ', ', ' , ', ',,')).map(([list, sep]) => list.join(sep));
        return fc.oneof(
          { weight: 6, arbitrary: specs.map((list) => `bytes=${list}`) },
          { weight: 2, arbitrary: fc.tuple(fc.constantFrom('BYTES', 'Bytes', 'bytes ', ' bytes', 'items', '', 'byte'), fc.constantFrom('=', ' =', '= ', ':', ''), specs).map(([u, eq, list]) => `${u}${eq}${list}`) },
          { weight: 1, arbitrary: headerFrom(['bytes=', '0', '1', '-', ',', '=', ' ', String(size), '-1']) },
          { weight: 1, arbitrary: headerValue(40) },
        );
      };
      const ifRangeKind = fc.oneof({ weight: 6, arbitrary: fc.constant('none' as const) }, { weight: 3, arbitrary: fc.constantFrom('etag', 'weak', 'date', 'stale-etag', 'stale-date', 'padded', 'garbage') });
      try {
        await fc.assert(
          fc.asyncProperty(fc.constantFrom(...Object.keys(KNOWN)).chain((slot) => fc.tuple(fc.constant(slot), rangeFor(KNOWN[slot]!.length))), ifRangeKind, headerValue(30), async ([slot, rangeHeader], kind, garbage) => {
            const data = KNOWN[slot]!;
            const { etag, lastModified } = validators[slot]!;
            const ifRange = {
              none: undefined,
              etag,
              weak: `W/${etag}`,
              date: lastModified,
              'stale-etag': '"0-0"',
              'stale-date': new Date(Date.parse(lastModified) - 1000).toUTCString(),
              padded: `${etag} `,
              garbage,
            }[kind];
            const headers = defined({ Range: rangeHeader, 'If-Range': ifRange });
            const res = await send('GET', `/upload/${encodeSlotPath(slot)}`, headers);
            const what = `${slot} ${JSON.stringify(headers)}`;
            tally.add(`${res.status}${ifRange === undefined ? '' : ` If-Range ${kind}`}`);
            assert.ok([200, 206, 416].includes(res.status), `${what}: ${res.status}`);
            if (res.status === 200) {
              assert.ok(res.body.equals(data), `${what}: 200 with ${res.body.length} of ${data.length} bytes`);
              assert.equal(res.headers['content-range'], undefined, what);
            } else if (res.status === 206) {
              const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(res.headers['content-range']));
              assert.ok(m, `${what}: Content-Range ${String(res.headers['content-range'])}`);
              const [start, end, total] = [Number(m[1]), Number(m[2]), Number(m[3])];
              assert.ok(total === data.length && start <= end && end < total, `${what}: Content-Range ${m[0]}`);
              assert.ok(res.body.equals(data.subarray(start, end + 1)), `${what}: body is not bytes ${start}-${end}`);
            } else {
              assert.equal(res.headers['content-range'], `bytes */${data.length}`, what);
            }
            assert.equal(Number(res.headers['content-length']), res.body.length, what);
            // RFC 9110 §13.1.5: a validator that does not match exactly (strong comparison) means the whole file.
            const current = ifRange === undefined || ifRange.trim() === etag || ifRange.trim() === lastModified;
            if (!current) assert.equal(res.status, 200, `${what}: stale If-Range still honoured`);
            // One plain satisfiable range is honoured.
            const simple = /^bytes=(\d+)-(\d+)$/.exec(rangeHeader.trim());
            if (current && simple && Number(simple[1]) <= Number(simple[2]) && Number(simple[1]) < data.length) {
              assert.equal(res.status, 206, what);
              assert.equal(res.headers['content-range'], `bytes ${Number(simple[1])}-${Math.min(Number(simple[2]), data.length - 1)}/${data.length}`, what);
            }
          }),
          params(800),
        );
      } finally {
        tally.print();
      }
    });
  });

  describe('tus requests', () => {
    /** Upload-Metadata: pairs of a key (ours, the client's, or odd) and a base64 value of anything, or garbage. */
    const metaKey = fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom('filename', 'filename', 'name', 'filetype', 'filetype', 'type') },
      { weight: 2, arbitrary: fc.constantFrom('hfs_owner', 'hfs_target', 'hfs_committed', 'hfs_partial', 'hfs_key', 'hfs_iv', '__proto__', 'constructor', 'toString', 'FILENAME') },
      { weight: 1, arbitrary: headerValue(8) },
    );
    const metaText = fc.oneof(
      fc.constantFrom('a.txt', 'photo.jpg', '../../etc/passwd', '..', '.', 'a/b.txt', 'a\\b.txt', 'x\u0000.txt', '.hmac', '', ' ', 'é.txt', '\u202etxt.exe', 'x'.repeat(300)),
      fc.constantFrom('text/html', 'image/svg+xml', 'image/png,text/html', 'text/plain; charset=utf-8', 'text/html\r\nX-Evil: 1', 'image/png\u0000', '€', 'IMAGE/PNG', ''),
      fc.string({ unit: 'binary', maxLength: 20 }),
      fc.string({ unit: 'binary-ascii', maxLength: 20 }),
    );
    const metaPair = fc.oneof(
      { weight: 6, arbitrary: fc.tuple(metaKey, metaText).map(([k, v]) => `${k} ${b64(v)}`) },
      { weight: 1, arbitrary: metaKey },
      { weight: 1, arbitrary: fc.tuple(metaKey, headerValue(12)).map(([k, v]) => `${k} ${v}`) },
    );
    const metadata = fc.oneof(
      {
        weight: 6,
        arbitrary: fc
          .tuple(metaText, maybe(metaText, 1, 1), fc.array(metaPair, { maxLength: 1 }))
          .map(([name, type, extra]) => [`filename ${b64(name)}`, ...(type === undefined ? [] : [`filetype ${b64(type)}`]), ...extra].join(',')),
      },
      { weight: 3, arbitrary: fc.tuple(fc.array(metaPair, { minLength: 1, maxLength: 4 }), fc.constantFrom(',', ',', ', ', ',,')).map(([pairs, sep]) => pairs.join(sep)) },
      { weight: 1, arbitrary: headerValue(40) },
    );
    const checksum = fc.oneof(
      fc.tuple(fc.constantFrom('md5', 'sha1', 'sha256', 'SHA1', 'sha512', 'crc32', ''), fc.constantFrom(' ', '  ', '\t'), fc.oneof(fc.base64String({ maxLength: 44 }), headerValue(10))).map(([a, s, d]) => `${a}${s}${d}`),
      fc.constantFrom('sha1', 'sha1 ', 'sha1 !!!', 'sha1 2jmj7l5rSw0yVb/vlWAYkK/YBwk=', 'md5 1B2M2Y8AsgTpgAmY7PhCfg==', 'sha1 a b'),
      headerValue(30),
    );
    const tusResumable = fc.oneof({ weight: 12, arbitrary: fc.constant('1.0.0') }, { weight: 1, arbitrary: fc.constantFrom('0.2.2', '1.0', '', '1.0.0 ') });
    const authorization = (good: () => string) =>
      fc.oneof({ weight: 12, arbitrary: fc.constant('good') }, { weight: 1, arbitrary: fc.constantFrom('Bearer', 'Bearer x.y.z', 'Basic abc') }).map((a) => (a === 'good' ? good() : a));

    /** After a request the server accepted: its Location and download URL still answer without a 5xx, and safely. */
    async function followUp(res: RawResponse, what: string): Promise<void> {
      const location = res.headers.location;
      if (location !== undefined && location.startsWith('/files/')) await send('HEAD', location, { ...TUS, ...auth() });
      const download = res.headers['x-download-url'];
      if (typeof download === 'string') {
        const got = await send('GET', download);
        if (got.status === 200) checkServedType(got, `${what} → GET ${download}`);
      }
    }

    const partials: string[] = [];

    it('POST with arbitrary Upload-Length, -Metadata, -Concat, -Defer-Length and -Checksum never gets a 5xx', async function () {
      this.timeout(timeoutFor(500, 60, 120_000));
      const tally = new Tally('tus POST');
      // Two finished partial uploads, so that some "final;" concatenations name real parts.
      for (const bytes of ['abc', 'def']) {
        const created = await send('POST', '/files/', { ...TUS, ...auth(), 'Upload-Concat': 'partial', 'Upload-Length': 3 });
        assert.equal(created.status, 201, created.body.toString());
        partials.push(created.headers.location!);
        assert.equal((await send('PATCH', created.headers.location!, { ...TUS, ...auth(), 'Upload-Offset': 0, 'Content-Type': OFFSET_TYPE, 'Content-Length': 3 }, Buffer.from(bytes))).status, 204);
      }
      const concat = fc.oneof(
        fc.constantFrom('partial', ' partial ', 'PARTIAL', 'partial;', 'final', 'final;', 'final; ', `final;${partials.join(' ')}`, `final;${partials[0]!}`, `final;${partials.join(' ')} ${partials[0]!}`, `final;http://elsewhere.invalid${partials[0]!}`, 'final;/files/../upload/known/one.txt'),
        hex32.map((id) => `final;/files/${id}`),
        headerFrom(['final;', 'partial', '/files/', ' ', partials[0]!, '%2e%2e/', 'http://x']),
      );
      const post = fc.record(
        {
          path: fc.oneof({ weight: 12, arbitrary: fc.constant('/files/') }, { weight: 1, arbitrary: fc.oneof(fc.constantFrom('/files', '/files//', '/files/?grant=x'), hex32.map((id) => `/files/${id}`)) }),
          tus: tusResumable,
          authorization: authorization(() => `Bearer ${grant}`),
          length: maybe(fc.oneof({ weight: 3, arbitrary: fc.nat({ max: 8 }).map(String) }, { weight: 2, arbitrary: numberText }), 6, 1),
          defer: maybe(fc.oneof(fc.constantFrom('1', '0', 'true'), headerValue(5)), 1, 6),
          metadata: maybe(metadata, 8, 1),
          concat: maybe(concat, 1, 4),
          checksum: maybe(checksum, 1, 3),
          contentType: maybe(fc.oneof({ weight: 4, arbitrary: fc.constant(OFFSET_TYPE) }, { weight: 1, arbitrary: headerValue(30) }), 2, 1),
          override: maybe(fc.constantFrom('PATCH', 'HEAD', 'DELETE', 'GET', 'OPTIONS', 'patch'), 1, 12),
          body: tinyBody,
        },
        { requiredKeys: ['path', 'tus', 'authorization', 'body'] },
      );
      try {
        await fc.assert(
          fc.asyncProperty(post, async (p) => {
            const headers = defined({
              'Tus-Resumable': p.tus,
              Authorization: p.authorization,
              'Upload-Length': p.length,
              'Upload-Defer-Length': p.defer,
              'Upload-Metadata': p.metadata,
              'Upload-Concat': p.concat,
              'Upload-Checksum': p.checksum,
              'Content-Type': p.contentType,
              'X-HTTP-Method-Override': p.override,
              'Content-Length': p.body.length,
            });
            const res = await send('POST', p.path, headers, p.body);
            tally.add(`${res.status}${res.headers['x-download-url'] ? ' committed' : ''} ${res.body.toString().split('\n')[0]!.slice(0, 50)}`);
            await followUp(res, `POST ${JSON.stringify(headers)}`);
          }),
          params(500),
        );
      } finally {
        tally.print();
      }
    });

    it('PATCH and HEAD with arbitrary Upload-Offset, Upload-Checksum and Content-Type never get a 5xx', async function () {
      this.timeout(timeoutFor(500, 60, 120_000));
      const tally = new Tally('tus PATCH/HEAD');
      // Uploads to aim at: a long one in progress, one with its length deferred, a finished one.
      const created = async (extra: Record<string, string | number>) => {
        const res = await send('POST', '/files/', { ...TUS, ...auth(), 'Upload-Metadata': `filename ${b64('fuzz.bin')}`, ...extra });
        assert.equal(res.status, 201, res.body.toString());
        return res.headers.location!;
      };
      const targets = [await created({ 'Upload-Length': MAX_GRANT }), await created({ 'Upload-Defer-Length': 1 }), await created({ 'Upload-Length': 0 })];
      // The offset each upload is at, so that some PATCHes send the right one ("CURRENT").
      const offsets = new Map<string, number>(targets.map((t) => [t, 0]));
      const target = fc.oneof(
        { weight: 8, arbitrary: fc.constantFrom(...targets) },
        { weight: 1, arbitrary: fc.oneof(hex32.map((id) => `/files/${id}`), fc.constantFrom(...partials, '/files/', `${targets[0]!}/`, `${targets[0]!}?grant=${'x'.repeat(10)}`, `${targets[0]!.toUpperCase()}`, '/files/..%2fupload')) },
      );
      const patch = fc.record(
        {
          method: fc.constantFrom('PATCH', 'PATCH', 'PATCH', 'HEAD'),
          target,
          tus: tusResumable,
          authorization: authorization(() => `Bearer ${grant}`),
          offset: maybe(fc.oneof({ weight: 3, arbitrary: fc.constant('CURRENT') }, { weight: 2, arbitrary: numberText }), 6, 1),
          length: maybe(numberText, 1, 5),
          checksum: maybe(fc.oneof(checksum, fc.constant('SHA1-OF-BODY')), 1, 2),
          contentType: maybe(fc.oneof({ weight: 4, arbitrary: fc.constant(OFFSET_TYPE) }, { weight: 1, arbitrary: fc.constantFrom(`${OFFSET_TYPE}; x=1`, 'APPLICATION/OFFSET+OCTET-STREAM', 'text/plain') }, { weight: 1, arbitrary: headerValue(30) }), 6, 1),
          body: tinyBody,
        },
        { requiredKeys: ['method', 'target', 'tus', 'authorization', 'body'] },
      );
      try {
        await fc.assert(
          fc.asyncProperty(patch, async (p) => {
            const body = p.method === 'PATCH' ? p.body : Buffer.alloc(0);
            const headers = defined({
              'Tus-Resumable': p.tus,
              Authorization: p.authorization,
              'Upload-Offset': p.offset === 'CURRENT' ? (offsets.get(p.target) ?? 0) : p.offset,
              'Upload-Length': p.length,
              'Upload-Checksum': p.checksum === 'SHA1-OF-BODY' ? `sha1 ${createHash('sha1').update(body).digest('base64')}` : p.checksum,
              'Content-Type': p.contentType,
              ...(p.method === 'PATCH' ? { 'Content-Length': body.length } : {}),
            });
            const res = await send(p.method, p.target, headers, p.method === 'PATCH' ? body : undefined);
            tally.add(`${p.method} ${res.status}`);
            const offset = res.headers['upload-offset'];
            if (offsets.has(p.target) && typeof offset === 'string' && /^\d+$/.test(offset)) offsets.set(p.target, Number(offset));
            await followUp(res, `${p.method} ${p.target} ${JSON.stringify(headers)}`);
          }),
          params(500),
        );
      } finally {
        tally.print();
      }
    });

    it('after all that, a normal tus upload still succeeds and the committed files still download', async function () {
      this.timeout(30_000);
      const created = await send('POST', '/files/', { ...TUS, ...auth(), 'Upload-Length': 5, 'Upload-Metadata': `filename ${b64('after.txt')},filetype ${b64('text/plain')}` });
      assert.equal(created.status, 201, created.body.toString());
      const patched = await send('PATCH', created.headers.location!, { ...TUS, ...auth(), 'Upload-Offset': 0, 'Content-Type': OFFSET_TYPE, 'Content-Length': 5 }, Buffer.from('hello'));
      assert.equal(patched.status, 204, patched.body.toString());
      const got = await send('GET', String(patched.headers['x-download-url']));
      assert.equal(got.status, 200);
      assert.equal(got.body.toString(), 'hello');
      await assertKnownFilesServed();
    });
  });

  describe('declared media types', () => {
    const declaredType = fc.oneof(
      fc.constantFrom('€', 'text/html', 'image/svg+xml', 'image/png,text/html', ',text/html', 'image/png;,text/html', 'text/plain; charset="utf-8"', 'IMAGE/PNG', 'image/png; charset=€', 'vidéo/mp4', '', ' ', 'foo', 'text/html\r\nX: 1', 'x'.repeat(300)),
      fc.string({ unit: 'binary', maxLength: 30 }),
      fc.array(fc.constantFrom('image/png', 'text/html', 'video/mp4', ',', ';', ' ', 'charset=', '"', '€', 'é', '\t', '\u2028'), { minLength: 1, maxLength: 5 }).map((p) => p.join('')),
    );

    it('whatever type an uploader declares (tus filetype, file-share filetype), the download never gets a 5xx and announces a safe type', async function () {
      this.timeout(timeoutFor(300, 80, 120_000));
      const tally = new Tally('declared media types');
      try {
        await fc.assert(
          fc.asyncProperty(fc.constantFrom('tus', 'jwt'), declaredType, hex32, async (door, type, id) => {
            let download: string | undefined;
            let res: RawResponse;
            if (door === 'tus') {
              const headers = { ...TUS, ...auth(), 'Upload-Length': 1, 'Upload-Metadata': `filename ${b64('t.bin')},filetype ${b64(type)}`, 'Content-Type': OFFSET_TYPE, 'Content-Length': 1 };
              res = await send('POST', '/files/', headers, Buffer.from('x'));
              if (typeof res.headers['x-download-url'] === 'string') download = res.headers['x-download-url'];
            } else {
              const token = await fileShareToken(TEST_SECRET, { slot: id, filename: 't.bin', filesize: 1, filetype: type });
              res = await send('PUT', `/upload/${id}/t.bin`, { Authorization: `Bearer ${token}`, 'Content-Length': 1 }, Buffer.from('x'));
              if (res.status === 201) download = `/upload/${id}/t.bin`;
            }
            tally.add(`${door} ${res.status}${download ? ' committed' : ''}`);
            if (download === undefined) return;
            const got = await send('GET', download);
            assert.equal(got.status, 200, `${door} upload of type ${JSON.stringify(type)}: GET ${download} answered ${got.status}`);
            checkServedType(got, `${door} upload of type ${JSON.stringify(type)}`);
          }),
          params(300),
        );
      } finally {
        tally.print();
      }
    });
  });

  describe('the legacy door', () => {
    // Raw path pieces as a client can put them on the request line (Node sends U+0021–U+00FF only).
    const RAW_SEGMENTS = [
      '..', '.', '%2e%2e', '%2E%2E', '%2e.', '.%2e', '%2f', '%2F', '%252e%252e', '%252f', '%00', '%0a', '%0d%0a', '%7f', '\\', '%5c', '..\\', '..%5c',
      '', '%', '%zz', '%e0%a4%a', '%c0%ae%c0%ae', '%c0%af', '%ed%a0%80', '%ff', '\xe9', '\xff', '%C3%A9', '.hmac', '.hmac%2fmeta', 'outside', '%2e%2e%2foutside%2fsecret.txt',
      ';', ';a=b', '~', '*', 'a', 'f.txt', 'CON', '%20', '+', '&', '=', '%3f', '%23', '?', '#', 'x'.repeat(300),
    ];
    /** Names that look dangerous but are ordinary: a signed PUT to them is stored exactly there. */
    const TRICKY_SEGMENTS = ['...', '..a', '.a', 'a..', '%252e%252e', '%2e%2e%2e', '%25', 'a%2fb', '%ef%bc%8f', '%C3%A9', '\xe9', 'meta', 'staging', 'upload', '~', ';', '%20', '+', '%3f', '%23', 'CON', 'f.txt'];
    const rawSegment = fc.oneof(
      { weight: 5, arbitrary: fc.constantFrom(...RAW_SEGMENTS) },
      { weight: 4, arbitrary: fc.constantFrom(...TRICKY_SEGMENTS) },
      { weight: 2, arbitrary: fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 10 }) },
      { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 10 }).map((s) => encodeURIComponent(s)) },
    );
    const rawRest = fc.array(rawSegment, { minLength: 0, maxLength: 6 }).map((s) => s.join('/'));
    const prefix = fc.oneof(
      { weight: 10, arbitrary: fc.constant('/upload/') },
      { weight: 1, arbitrary: fc.constantFrom('/', '/upload', '//upload/', '/UPLOAD/', '/upload//', '/upload/./', '/upload/../', '/files/../upload/', '/%75pload/', '/upload%2f', '/upload\\', 'http://127.0.0.1/upload/', '*', '/.hmac/') },
    );
    const queryPair = fc.oneof(
      fc.tuple(fc.constantFrom('v', 'v2', 'token', 'versions', 'id', 'grant', 'v[]', 'v2[x]', '__proto__', 'constructor', 'x'), fc.oneof(fc.stringMatching(/^[0-9a-f]{64}$/), fc.constantFrom('', '1', '..', '%00', '%zz', 'a&b')))
        .map(([k, v]) => `${k}=${v}`),
      fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 12 }),
    );
    const request = fc.record({
      method: fc.constantFrom('GET', 'HEAD', 'PUT', 'PUT', 'DELETE', 'OPTIONS'),
      prefix,
      rest: rawRest,
      query: fc.array(queryPair, { maxLength: 3 }),
      /** With a MAC that is right for what the server decodes: the request then reaches the file system. */
      sign: fc.boolean(),
      body: fc.uint8Array({ maxLength: 3 }).map((a) => Buffer.from(a)),
      contentType: maybe(fc.constantFrom('text/plain', 'image/png,text/html', 'image/svg+xml', 'text/html', 'video/mp4; charset="x,y"')),
    });

    /** Every entry below dir, as paths relative to it, refusing any that resolves outside root. */
    async function walk(dir: string, root: string): Promise<string[]> {
      const out: string[] = [];
      for (const entry of await readdir(dir, { withFileTypes: true })) {
        const full = path.join(dir, entry.name);
        assert.ok(!entry.isSymbolicLink(), `symlink ${full} in the store`);
        const real = await realpath(full);
        assert.ok(real.startsWith(root + path.sep), `${full} resolves to ${real}`);
        out.push(path.relative(root, full));
        if (entry.isDirectory()) out.push(...(await walk(full, root)));
      }
      return out;
    }

    it('arbitrary paths and queries for GET, HEAD, PUT, DELETE and OPTIONS never get a 5xx or reach outside StoreDir', async function () {
      this.timeout(timeoutFor(1000, 40, 120_000));
      const tally = new Tally('legacy door');
      const storeTopBefore = (await readdir(storeDir)).sort();
      try {
        await fc.assert(
          fc.asyncProperty(request, async (r) => {
            const query = [...r.query];
            // What the server will decode and sign-check: the path below the mount point, before "?" and "#".
            const slotPart = r.rest.split(/[?#]/)[0]!;
            let decoded = slotPart;
            try {
              decoded = decodeURIComponent(slotPart);
            } catch {
              // a malformed escape: the server refuses it before any MAC is checked
            }
            const contentType = r.contentType ?? 'application/octet-stream';
            if (r.sign && r.prefix === '/upload/') {
              if (r.method === 'PUT') query.push(`v2=${signSlot(TEST_SECRET, 'v2', decoded, r.body.length, contentType)}`);
              if (r.method === 'DELETE') query.push(`token=${createHmac('sha256', TEST_SECRET).update(`${decoded}\0${DELETE_SECRET}`).digest('hex')}`);
              if (r.method === 'GET' || r.method === 'HEAD') query.push(`versions=${createHmac('sha256', TEST_SECRET).update(`versions\0${decoded}`).digest('hex')}`);
            }
            const rawPath = `${r.prefix}${r.rest}${query.length > 0 ? `?${query.join('&')}` : ''}`;
            const headers: Record<string, string | number> = r.method === 'PUT' ? { 'Content-Length': r.body.length, ...(r.contentType ? { 'Content-Type': r.contentType } : {}) } : {};
            const res = await send(r.method, rawPath, headers, r.method === 'PUT' ? r.body : undefined);
            tally.add(`${r.method} ${res.status}${r.sign && r.prefix === '/upload/' ? ' signed' : ''}`);
            if (res.status === 200 && r.method === 'GET' && res.headers['content-disposition'] !== undefined) checkServedType(res, `GET ${rawPath}`);
            // A stored upload is exactly where its decoded path says, inside the upload tree.
            if (r.method === 'PUT' && res.status === 201) {
              const stored = path.join(storeDir, 'upload', ...decoded.split('/'));
              assert.ok(stored.startsWith(path.join(storeDir, 'upload') + path.sep), `PUT ${rawPath} stored ${stored}`);
              assert.ok((await readFile(stored)).equals(r.body), `PUT ${rawPath}: ${stored} does not hold the body`);
            }
          }),
          params(1000),
        );
      } finally {
        tally.print();
      }
      assert.deepEqual((await readdir(parent)).sort(), parentBefore, 'something appeared next to the store');
      assert.deepEqual(await readdir(path.join(parent, 'outside')), ['secret.txt']);
      assert.equal(await readFile(path.join(parent, 'outside', 'secret.txt'), 'utf8'), canary);
      assert.deepEqual((await readdir(storeDir)).sort(), storeTopBefore, 'a new entry at the top of StoreDir');
      const root = await realpath(storeDir);
      const entries = await walk(root, root);
      for (const entry of entries) assert.ok(entry === 'upload' || entry.startsWith(`upload${path.sep}`) || entry === '.hmac' || entry.startsWith(`.hmac${path.sep}`), entry);
      await assertKnownFilesServed();
    });
  });
});
