// Running out of resources for real: a StoreDir on a small tmpfs that the test fills up (ENOSPC from write,
// and from open, mkdir and link once no inode is left), and a server process whose descriptor limit is
// lowered with prlimit (EMFILE). Whatever runs out, the answer is a clean 507 or 503, nothing half-written
// stays behind, the server lives on, files committed earlier are served unchanged, and uploads work again
// once the resource is back.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type { ConfigInput } from '../server/config-schema.js';
import { encodeSlotPath } from '../server/cli-sign.js';
import { hmacHex, signSlot, versionsMessage } from '../middleware/slot-verifier-hmac.js';
import { startChildServer, type ChildServer } from './helpers/child-server.js';
import { signedPath } from './helpers/http.js';
import { mountTmpfs, type Tmpfs } from './helpers/tmpfs.js';
import { grantFor } from './helpers/tus-client.js';
import { startTestServer, TEST_SECRET, type TestServer } from './helpers/test-server.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const TUS = { 'Tus-Resumable': '1.0.0' };
const DISK_FULL_BODY = 'Insufficient storage\n';

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/**
 * One request on its own connection. A server that refuses an upload halfway answers before it has read the
 * whole body and may then close: an error while we are still sending does not count once an answer arrived.
 */
function send(baseUrl: string, method: string, pathAndQuery: string, headers: Record<string, string | number> = {}, body?: Buffer): Promise<Answer> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = http.request({ host: hostname, port, method, path: pathAndQuery, headers, agent: false }, (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      const done = () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', done);
      res.on('close', done);
      res.on('error', done);
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (!answered) reject(Object.assign(new Error(`${method} ${pathAndQuery.split('?')[0]}: no answer (${err.code ?? err.message})`), { code: err.code }));
    });
    req.end(body);
  });
}

const shown = (res: Answer) => `${res.status} ${JSON.stringify(res.body.toString().slice(0, 200))}`;

function assertInsufficientStorage(res: Answer): void {
  assert.equal(res.status, 507, `expected 507, got ${shown(res)}`);
  assert.match(String(res.headers['content-type']), /^text\/plain/, `content-type ${res.headers['content-type']}`);
  assert.equal(res.body.toString(), DISK_FULL_BODY);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Retries an assertion for a moment: cleanup may still be closing a stream when the answer is out. */
async function eventually(check: () => Promise<void>, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(50);
    }
  }
}

/** Files (not folders) below dir, relative and sorted; [] when dir does not exist. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => !e.isDirectory())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

const meta = (fields: Record<string, string>) =>
  Object.entries(fields)
    .map(([k, v]) => `${k} ${Buffer.from(v).toString('base64')}`)
    .join(',');

// ---------------------------------------------------------------------------------------------------------
// A StoreDir on a 4 MiB tmpfs with 64 inodes, one per test.

const live = new Set<Tmpfs>();

interface Store {
  tmpfs: Tmpfs;
  server: TestServer;
  /** Committed before anything ran out; must be served byte for byte afterwards. */
  earlier: { slot: string; data: Buffer };
  grant: string;
  /** Where this test's log lines start. */
  logFrom: number;
}

interface Snapshot {
  upload: string[];
  staging: string[];
  tus: string[];
  blobs: string[];
  refs: string[];
  versions: string[];
}

function useStoreOnTmpfs(config: Partial<ConfigInput> = {}): Store {
  const store = {} as Store;
  beforeEach(async function () {
    const tmpfs = await mountTmpfs({ sizeBytes: 4 * MiB, inodes: 64 });
    live.add(tmpfs);
    store.tmpfs = tmpfs;
    store.server = await startTestServer({ StoreDir: tmpfs.dir, MaxUploadSize: '8MiB', ...config });
    store.earlier = { slot: 'earlier/kept.bin', data: randomBytes(64 * KiB) };
    const res = await put(store.server, store.earlier.slot, store.earlier.data);
    assert.equal(res.status, 201, shown(res));
    store.grant = await grantFor(store.server, { maxSize: 8 * MiB });
    store.logFrom = store.server.logs.length;
  });
  afterEach(async function () {
    const { server, tmpfs } = store;
    try {
      await server?.close();
    } finally {
      await tmpfs?.unmount();
      live.delete(tmpfs);
      store.server = undefined as unknown as TestServer;
      store.tmpfs = undefined as unknown as Tmpfs;
    }
  });
  return store;
}

after(async () => {
  for (const tmpfs of live) await tmpfs.unmount().catch(() => undefined);
  live.clear();
});

function put(server: TestServer, slot: string, body: Buffer): Promise<Answer> {
  return send(server.url, 'PUT', signedPath(server, slot, body.length), { 'Content-Length': body.length }, body);
}

async function snapshot(store: Store): Promise<Snapshot> {
  const hmac = path.join(store.server.storeDir, '.hmac');
  return {
    upload: await filesUnder(path.join(store.server.storeDir, 'upload')),
    staging: await filesUnder(path.join(hmac, 'staging')),
    tus: await filesUnder(path.join(hmac, 'tus')),
    blobs: await filesUnder(path.join(hmac, 'blobs')),
    refs: await filesUnder(path.join(hmac, 'refs')),
    versions: await filesUnder(path.join(hmac, 'versions')),
  };
}

/** Nothing the failed request began is left on disk: the listed trees are as they were. */
async function assertNothingLeft(store: Store, before: Snapshot, trees: ReadonlyArray<keyof Snapshot> = ['upload', 'staging', 'tus', 'blobs', 'refs', 'versions']): Promise<void> {
  await eventually(async () => {
    const now = await snapshot(store);
    for (const tree of trees) {
      const root = tree === 'upload' ? path.join(store.server.storeDir, 'upload') : path.join(store.server.storeDir, '.hmac', tree);
      const added = await Promise.all(now[tree].filter((f) => !before[tree].includes(f)).map(async (f) => `${f} (${(await stat(path.join(root, f)).catch(() => undefined))?.size ?? '?'} bytes)`));
      const gone = before[tree].filter((f) => !now[tree].includes(f));
      assert.deepEqual(now[tree], before[tree], `${tree}: left behind [${added.join(', ')}], gone [${gone.join(', ')}]`);
    }
  });
}

/** The server is alive, serves the earlier file unchanged, and logged no unexpected failure. */
async function assertUnharmed(store: Store): Promise<void> {
  const got = await send(store.server.url, 'GET', `/upload/${store.earlier.slot}`);
  assert.equal(got.status, 200, `GET of the earlier file: ${shown(got)}`);
  assert.ok(got.body.equals(store.earlier.data), 'the earlier file changed');
  const lines = store.server.logs.slice(store.logFrom);
  const bad = lines.filter((l) => /uncaught|unhandled/i.test(l) || (/ request\.failed /.test(l) && !/ code=E_DISK_FULL /.test(l)));
  assert.deepEqual(bad, [], 'unexpected failures in the log');
}

/** After free(): a new legacy upload is taken and served. */
async function assertLegacyUploadWorks(store: Store, slot = 'after/fresh.bin'): Promise<void> {
  const fresh = randomBytes(300 * KiB);
  const res = await put(store.server, slot, fresh);
  assert.equal(res.status, 201, `PUT after freeing space: ${shown(res)}`);
  const got = await send(store.server.url, 'GET', `/upload/${slot}`);
  assert.equal(got.status, 200);
  assert.ok(got.body.equals(fresh), 'the new upload is served with other bytes');
}

// tus over raw HTTP with this test's grant.
const tusAuth = (store: Store) => ({ ...TUS, Authorization: `Bearer ${store.grant}` });

function tusPost(store: Store, length: number, extra: Record<string, string | number> = {}, body?: Buffer): Promise<Answer> {
  const withBody: Record<string, string | number> = body ? { 'Content-Type': 'application/offset+octet-stream', 'Content-Length': body.length } : {};
  return send(store.server.url, 'POST', '/files/', { ...tusAuth(store), 'Upload-Length': length, 'Upload-Metadata': meta({ filename: 'f.bin' }), ...withBody, ...extra }, body);
}

function tusPatch(store: Store, location: string, offset: number, body: Buffer): Promise<Answer> {
  return send(store.server.url, 'PATCH', location, { ...tusAuth(store), 'Upload-Offset': offset, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': body.length }, body);
}

const tusHead = (store: Store, location: string) => send(store.server.url, 'HEAD', location, tusAuth(store));
const idOf = (location: string) => location.split('/').pop()!;

/** After free(): a whole tus upload (POST, PATCH) goes through and is served. */
async function assertTusUploadWorks(store: Store): Promise<void> {
  const data = randomBytes(300 * KiB);
  const created = await tusPost(store, data.length);
  assert.equal(created.status, 201, `tus POST after freeing space: ${shown(created)}`);
  const done = await tusPatch(store, created.headers.location!, 0, data);
  assert.equal(done.status, 204, `tus PATCH after freeing space: ${shown(done)}`);
  const got = await send(store.server.url, 'GET', String(done.headers['x-download-url']));
  assert.ok(got.body.equals(data), 'the new tus upload is served with other bytes');
}

describe('resources: a full disk under the legacy PUT (tmpfs StoreDir)', function () {
  this.timeout(30_000);
  const store = useStoreOnTmpfs();

  it('answers 507 to a file larger than the free space and keeps nothing of it', async () => {
    const before = await snapshot(store);
    assert.equal(await store.tmpfs.fill(256 * KiB), 256 * KiB);
    const res = await put(store.server, 'full/big.bin', randomBytes(MiB));
    assertInsufficientStorage(res);
    await assertNothingLeft(store, before);
    assert.equal((await send(store.server.url, 'GET', '/upload/full/big.bin')).status, 404);
    await assertUnharmed(store);
    await store.tmpfs.free();
    await assertLegacyUploadWorks(store);
  });

  it('answers 507 when the bytes fit but their metadata does not, and keeps nothing', async () => {
    const before = await snapshot(store);
    // Exactly the data's pages are left: the staging file fits, the metadata written after it cannot.
    assert.equal(await store.tmpfs.fill(128 * KiB), 128 * KiB);
    const res = await put(store.server, 'full/exact.bin', randomBytes(128 * KiB));
    assertInsufficientStorage(res);
    await assertNothingLeft(store, before);
    assert.equal((await send(store.server.url, 'GET', '/upload/full/exact.bin')).status, 404);
    await assertUnharmed(store);
    await store.tmpfs.free();
    await assertLegacyUploadWorks(store);
  });

  it('answers 507 when no inode is left (the staging file cannot be created)', async () => {
    const before = await snapshot(store);
    assert.equal(await store.tmpfs.fillInodes(0), 0);
    const res = await put(store.server, 'inodes/none.bin', randomBytes(10 * KiB));
    assertInsufficientStorage(res);
    await assertNothingLeft(store, before);
    await assertUnharmed(store);
    await store.tmpfs.free();
    await assertLegacyUploadWorks(store);
  });

  it('answers 507 when the last inode goes to the staging file and placing it needs another', async () => {
    const before = await snapshot(store);
    assert.equal(await store.tmpfs.fillInodes(1), 1);
    // earlier/ exists, so only the hard link into it (which tmpfs counts as an inode) is missing.
    const res = await put(store.server, 'earlier/second.bin', randomBytes(10 * KiB));
    assertInsufficientStorage(res);
    await assertNothingLeft(store, before);
    await assertUnharmed(store);
    await store.tmpfs.free();
    await assertLegacyUploadWorks(store);
  });
});

describe('resources: a full disk under tus (tmpfs StoreDir)', function () {
  this.timeout(30_000);
  const store = useStoreOnTmpfs();

  for (const [what, exhaust] of [
    ['no inode is left', (tmpfs: Tmpfs) => tmpfs.fillInodes(0)],
    ['one inode is left (the data file fits, its record does not)', (tmpfs: Tmpfs) => tmpfs.fillInodes(1)],
    ['no byte is left (the empty data file fits, its record does not)', (tmpfs: Tmpfs) => tmpfs.fill(0)],
  ] as const) {
    it(`answers 507 to a creation when ${what}, and creates nothing`, async () => {
      const before = await snapshot(store);
      await exhaust(store.tmpfs);
      const res = await tusPost(store, 1000);
      assertInsufficientStorage(res);
      await assertNothingLeft(store, before);
      await assertUnharmed(store);
      await store.tmpfs.free();
      await assertTusUploadWorks(store);
    });
  }

  it('answers 507 to a creation-with-upload larger than the free space under a quota, and gives its charge back', async function () {
    // Its own server: the quota is counted in that process.
    await store.server.close();
    store.server = await startTestServer({ StoreDir: store.tmpfs.dir, MaxUploadSize: '8MiB', MaxBytesPerUser: '8MiB' });
    assert.equal(await store.tmpfs.fill(256 * KiB), 256 * KiB);
    const res = await tusPost(store, MiB, {}, randomBytes(MiB));
    assertInsufficientStorage(res);
    assert.deepEqual(await store.server.running.quotas!.usage('upload', 'alice'), { bytes: 0, files: 0, today: 0 });
  });

  for (const [what, exhaust] of [
    ['no inode is left', (tmpfs: Tmpfs) => tmpfs.fillInodes(0)],
    ['no byte is left (the empty data file fits, its record does not)', (tmpfs: Tmpfs) => tmpfs.fill(0)],
  ] as const) {
    it(`gives the quota charge of a creation back when ${what}`, async () => {
      await store.server.close();
      store.server = await startTestServer({ StoreDir: store.tmpfs.dir, MaxUploadSize: '8MiB', MaxBytesPerUser: '8MiB' });
      await exhaust(store.tmpfs);
      assertInsufficientStorage(await tusPost(store, 1000));
      assert.deepEqual(await store.server.running.quotas!.usage('upload', 'alice'), { bytes: 0, files: 0, today: 0 });
    });
  }

  it('answers 507 to a PATCH larger than the free space; HEAD reports the bytes on disk and the upload resumes from there', async () => {
    const data = randomBytes(MiB);
    const created = await tusPost(store, data.length);
    assert.equal(created.status, 201, shown(created));
    const location = created.headers.location!;
    const first = 100 * KiB;
    assert.equal((await tusPatch(store, location, 0, data.subarray(0, first))).status, 204);
    const before = await snapshot(store);
    assert.equal(await store.tmpfs.fill(256 * KiB), 256 * KiB);

    const res = await tusPatch(store, location, first, data.subarray(first));
    assertInsufficientStorage(res);
    await assertNothingLeft(store, before, ['upload', 'staging']);
    const head = await tusHead(store, location);
    assert.equal(head.status, 200, `HEAD after the refused PATCH: ${head.status}`);
    const offset = Number(head.headers['upload-offset']);
    const onDisk = await readFile(path.join(store.server.storeDir, '.hmac', 'tus', idOf(location)));
    assert.equal(offset, onDisk.length, 'Upload-Offset is not what is on disk');
    assert.ok(offset >= first && offset < data.length, `offset ${offset}`);
    assert.ok(onDisk.equals(data.subarray(0, offset)), 'the bytes on disk are not the upload so far');
    await assertUnharmed(store);

    await store.tmpfs.free();
    const done = await tusPatch(store, location, offset, data.subarray(offset));
    assert.equal(done.status, 204, `PATCH from ${offset} after freeing space: ${shown(done)}`);
    const got = await send(store.server.url, 'GET', String(done.headers['x-download-url']));
    assert.equal(got.status, 200);
    assert.ok(got.body.equals(data), 'the resumed upload is served with other bytes');
  });

  it('answers 507 to a creation-with-upload larger than the free space, and leaves no upload nobody can resume', async () => {
    const before = await snapshot(store);
    assert.equal(await store.tmpfs.fill(256 * KiB), 256 * KiB);
    const data = randomBytes(MiB);
    const res = await tusPost(store, data.length, {}, data);
    assertInsufficientStorage(res);
    await assertNothingLeft(store, before, ['upload', 'staging']);
    const tusDir = path.join(store.server.storeDir, '.hmac', 'tus');
    const created = (await filesUnder(tusDir)).filter((name) => !before.tus.includes(name));
    if (res.headers.location === undefined) {
      const sizes = await Promise.all(created.map(async (f) => `${f} (${(await stat(path.join(tusDir, f))).size} bytes)`));
      assert.deepEqual(created, [], `tus files left behind without a Location to resume them: ${sizes.join(', ')}`);
    } else {
      const onDisk = await readFile(path.join(tusDir, idOf(res.headers.location)));
      const head = await tusHead(store, res.headers.location);
      assert.equal(Number(head.headers['upload-offset']), onDisk.length, 'Upload-Offset is not what is on disk');
      assert.ok(onDisk.equals(data.subarray(0, onDisk.length)));
    }
    await assertUnharmed(store);
    await store.tmpfs.free();
    const again = await tusPost(store, data.length, {}, data);
    assert.equal(again.status, 201, `creation-with-upload after freeing space: ${shown(again)}`);
    const got = await send(store.server.url, 'GET', again.headers.location!);
    assert.ok(got.body.equals(data), 'the upload is served with other bytes');
  });

  it('answers 507 to Upload-Concat: final when the joined file does not fit, commits nothing and keeps the partials whole or removes them', async () => {
    const parts = [randomBytes(700 * KiB), randomBytes(700 * KiB)];
    const locations: string[] = [];
    for (const part of parts) {
      const created = await tusPost(store, part.length, { 'Upload-Concat': 'partial' });
      assert.equal(created.status, 201, shown(created));
      assert.equal((await tusPatch(store, created.headers.location!, 0, part)).status, 204);
      locations.push(created.headers.location!);
    }
    const before = await snapshot(store);
    assert.equal(await store.tmpfs.fill(256 * KiB), 256 * KiB);
    const finalHeaders = { ...tusAuth(store), 'Upload-Concat': `final;${locations.join(' ')}`, 'Upload-Metadata': meta({ filename: 'joined.bin' }) };
    const res = await send(store.server.url, 'POST', '/files/', finalHeaders);
    assertInsufficientStorage(res);
    await assertNothingLeft(store, before, ['upload', 'staging']);

    const tusDir = path.join(store.server.storeDir, '.hmac', 'tus');
    const kept: boolean[] = [];
    for (const [i, location] of locations.entries()) {
      const head = await tusHead(store, location);
      const id = idOf(location);
      if (head.status === 200) {
        assert.equal(head.headers['upload-offset'], String(parts[i]!.length), `partial ${i} lost bytes`);
        assert.ok((await readFile(path.join(tusDir, id))).equals(parts[i]!), `partial ${i} changed`);
        kept.push(true);
      } else {
        assert.equal(head.status, 404, `HEAD of partial ${i}: ${head.status}`);
        kept.push(false);
      }
    }
    // Only (what is left of) the partials: no record or bytes of the final upload.
    const partialFiles = locations.flatMap((l, i) => (kept[i] ? [idOf(l), `${idOf(l)}.json`] : []));
    await eventually(async () => assert.deepEqual(await filesUnder(tusDir), partialFiles.sort(), 'tus files besides the partials'));
    await assertUnharmed(store);

    await store.tmpfs.free();
    if (kept.every(Boolean)) {
      const joined = await send(store.server.url, 'POST', '/files/', finalHeaders);
      assert.equal(joined.status, 201, `the same final after freeing space: ${shown(joined)}`);
      const got = await send(store.server.url, 'GET', String(joined.headers['x-download-url']));
      assert.ok(got.body.equals(Buffer.concat(parts)), 'the joined file has other bytes');
    } else {
      await assertTusUploadWorks(store);
    }
  });
});

describe('resources: a full disk with EnableVersioning (tmpfs StoreDir)', function () {
  this.timeout(30_000);
  const store = useStoreOnTmpfs({ EnableVersioning: true, MaxVersions: 3 });
  const versionsUrl = (slot: string, extra = '') => `/upload/${encodeSlotPath(slot)}?versions=${hmacHex(TEST_SECRET, versionsMessage(slot))}${extra}`;
  const versionsOf = async (slot: string) => {
    const res = await send(store.server.url, 'GET', versionsUrl(slot));
    assert.equal(res.status, 200, shown(res));
    return JSON.parse(res.body.toString()) as Array<{ id: string; size: number }>;
  };

  async function reuploadWhenFull(leave: number, size: number): Promise<void> {
    const { slot, data } = store.earlier;
    const before = await snapshot(store);
    assert.deepEqual(await versionsOf(slot), []);
    assert.equal(await store.tmpfs.fill(leave), leave);
    assertInsufficientStorage(await put(store.server, slot, randomBytes(size)));
    // The path still serves the previous file, which did not turn into a version.
    await assertUnharmed(store);
    await assertNothingLeft(store, before);
    assert.deepEqual(await versionsOf(slot), []);

    await store.tmpfs.free();
    const next = randomBytes(100 * KiB);
    const res = await put(store.server, slot, next);
    assert.equal(res.status, 201, `re-upload after freeing space: ${shown(res)}`);
    assert.ok((await send(store.server.url, 'GET', `/upload/${slot}`)).body.equals(next));
    const versions = await versionsOf(slot);
    assert.equal(versions.length, 1);
    assert.ok((await send(store.server.url, 'GET', versionsUrl(slot, `&id=${versions[0]!.id}`))).body.equals(data), 'the kept version has other bytes');
  }

  it('answers 507 to a re-upload larger than the free space and still serves the previous file', () => reuploadWhenFull(256 * KiB, MiB));

  it('answers 507 to a re-upload whose bytes fit but whose metadata does not, and still serves the previous file', () => reuploadWhenFull(128 * KiB, 128 * KiB));
});

describe('resources: a full disk with DeduplicationEnabled (tmpfs StoreDir)', function () {
  this.timeout(30_000);
  const store = useStoreOnTmpfs({ DeduplicationEnabled: true });
  const inodeOf = async (slot: string) => (await stat(path.join(store.server.storeDir, 'upload', ...slot.split('/')))).ino;

  /** A second path with the earlier content: deduplicated onto the same bytes. */
  async function twin(): Promise<string> {
    const slot = 'earlier/twin.bin';
    assert.equal((await put(store.server, slot, store.earlier.data)).status, 201);
    assert.equal(await inodeOf(slot), await inodeOf(store.earlier.slot), 'the twin is not deduplicated to begin with');
    return slot;
  }

  async function assertTwinServed(slot: string): Promise<void> {
    const got = await send(store.server.url, 'GET', `/upload/${slot}`);
    assert.equal(got.status, 200);
    assert.ok(got.body.equals(store.earlier.data), 'the deduplicated twin changed');
  }

  it('answers 507 to new content larger than the free space and still serves the deduplicated files', async () => {
    const copy = await twin();
    const before = await snapshot(store);
    assert.equal(await store.tmpfs.fill(256 * KiB), 256 * KiB);
    assertInsufficientStorage(await put(store.server, 'full/new.bin', randomBytes(MiB)));
    await assertNothingLeft(store, before);
    await assertUnharmed(store);
    await assertTwinServed(copy);
    await store.tmpfs.free();
    await assertLegacyUploadWorks(store);
  });

  it('answers 507 to new content that fits but whose blob record and metadata do not, and leaves no half-made blob', async () => {
    const copy = await twin();
    const before = await snapshot(store);
    assert.equal(await store.tmpfs.fill(128 * KiB), 128 * KiB);
    assertInsufficientStorage(await put(store.server, 'full/exact.bin', randomBytes(128 * KiB)));
    await assertNothingLeft(store, before);
    await assertUnharmed(store);
    await assertTwinServed(copy);
    await store.tmpfs.free();
    await assertLegacyUploadWorks(store);
  });

  it('deduplicates again as soon as space is back after a full disk inside the commit', async () => {
    await twin();
    await store.tmpfs.fill(128 * KiB);
    assertInsufficientStorage(await put(store.server, 'full/exact.bin', randomBytes(128 * KiB)));
    await store.tmpfs.free();
    const slot = 'again/copy.bin';
    assert.equal((await put(store.server, slot, store.earlier.data)).status, 201);
    const off = store.server.logs.filter((l) => / dedup\.unavailable /.test(l));
    assert.equal(await inodeOf(slot), await inodeOf(store.earlier.slot), `the same content was stored again, not linked to its blob (${off.join(' | ') || 'no dedup.unavailable line'})`);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Out of descriptors: the real CLI in a child process whose RLIMIT_NOFILE is lowered once it listens (under
// `prlimit --nofile=40:40` from the start, Node's module loader itself fails with EMFILE before listening).

describe('resources: out of file descriptors (child process under prlimit)', function () {
  this.timeout(60_000);
  const LIMIT = 40;
  const MAX_SOCKETS = 100;
  let child: ChildServer | undefined;
  const sockets: net.Socket[] = [];

  afterEach(async () => {
    for (const socket of sockets) socket.destroy();
    sockets.length = 0;
    await child?.stop();
    child = undefined;
  });

  const childPath = (server: ChildServer, slot: string, size: number) => `/upload/${encodeSlotPath(slot)}?v2=${signSlot(server.secret, 'v2', slot, size, 'application/octet-stream')}`;
  const childPut = (server: ChildServer, slot: string, body: Buffer) => send(server.url, 'PUT', childPath(server, slot, body.length), { 'Content-Length': body.length }, body);

  type Outcome = { answer: Answer } | { refused: string };
  const outcomeOf = (pending: Promise<Answer>): Promise<Outcome> => pending.then((answer) => ({ answer }), (err: NodeJS.ErrnoException) => ({ refused: err.code ?? err.message }));
  const outcomeText = (o: Outcome) => ('answer' in o ? String(o.answer.status) : o.refused);

  /** A connection that sends nothing and stays open; records whether the server closed it. */
  function idle(url: string): Promise<{ socket: net.Socket; closedByServer: () => boolean }> {
    const { hostname, port } = new URL(url);
    return new Promise((resolve) => {
      let closed = false;
      const socket = net.connect(Number(port), hostname);
      sockets.push(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => (closed = true));
      const settle = () => resolve({ socket, closedByServer: () => closed });
      socket.once('connect', settle);
      socket.once('close', settle);
      setTimeout(settle, 1000).unref();
    });
  }

  /** The CLI in a child, warmed up (tsx compiles on first use) while descriptors are plenty, then limited. */
  async function limitedServer(): Promise<{ server: ChildServer; inUse: () => Promise<number>; baseline: number }> {
    child = await startChildServer();
    const server = child;
    const warm = randomBytes(1000);
    assert.equal((await childPut(server, 'warm/a.bin', warm)).status, 201);
    assert.ok((await send(server.url, 'GET', '/upload/warm/a.bin')).body.equals(warm));
    assert.equal((await childPut(server, 'warm/a.bin', warm)).status, 409);
    await server.limitDescriptors(LIMIT);
    // RLIMIT_NOFILE bounds descriptor numbers: only those below the limit can be handed out.
    const inUse = async () => (await server.descriptors()).filter((fd) => fd < LIMIT).length;
    const baseline = await inUse();
    assert.ok(baseline <= LIMIT - 3, `the server already holds ${baseline} descriptors below ${LIMIT}`);
    return { server, inUse, baseline };
  }

  const assertAlive = (server: ChildServer, when: string) =>
    assert.ok(server.alive(), `the server exited ${when}: ${JSON.stringify(server.exit)} ${server.stderr.slice(-8).join(' | ')}`);

  /** The load is gone: descriptors come back, a normal upload is taken and served, nothing went to stderr. */
  async function assertRecovers(server: ChildServer, inUse: () => Promise<number>, baseline: number): Promise<void> {
    for (const socket of sockets) socket.destroy();
    sockets.length = 0;
    await eventually(async () => assert.ok((await inUse()) <= baseline + 1, `still ${await inUse()} descriptors in use`), 5000);
    const body = randomBytes(50_000);
    const res = await childPut(server, 'fd/after.bin', body);
    assert.equal(res.status, 201, `PUT after the load: ${shown(res)}`);
    const got = await send(server.url, 'GET', '/upload/fd/after.bin');
    assert.equal(got.status, 200);
    assert.ok(got.body.equals(body), 'the upload after the load is served with other bytes');
    assertAlive(server, 'after the load');
    assert.deepEqual(server.stderr.filter((l) => /uncaught|EMFILE|ENFILE/i.test(l)), [], 'errors on stderr');
  }

  it('answers 503 with Retry-After to a PUT that finds no descriptor for its file, and takes uploads again afterwards', async () => {
    const started = Date.now();
    const { server, inUse, baseline } = await limitedServer();
    // Idle connections until exactly one descriptor is left: the PUT's socket takes it, its file finds none.
    while (sockets.length < MAX_SOCKETS && Date.now() - started < 20_000 && LIMIT - (await inUse()) > 1) {
      const held = await inUse();
      await idle(server.url);
      // A message of its own: without one, assert would read and parse this source file for every failed try.
      await eventually(async () => assert.ok((await inUse()) > held, 'the server has not taken the connection yet'), 500).catch(() => undefined);
    }
    assert.equal(LIMIT - (await inUse()), 1, 'could not bring the server to one free descriptor');
    const last = await outcomeOf(childPut(server, 'fd/last.bin', randomBytes(1000)));
    assert.ok('answer' in last, `the PUT got no answer: ${outcomeText(last)}`);
    assert.equal(last.answer.status, 503, `PUT with one descriptor left: ${shown(last.answer)}`);
    assert.match(String(last.answer.headers['retry-after']), /^\d+$/, 'no Retry-After');
    assert.doesNotMatch(last.answer.body.toString(), /EMFILE|ENFILE|\/hfs-/, 'internal details in the body');
    await sleep(200);
    assertAlive(server, 'after the 503');
    await assertRecovers(server, inUse, baseline);
    assert.equal((await send(server.url, 'GET', '/upload/fd/last.bin')).status, 404, 'the refused PUT was stored');
  });

  it('survives more connections and parallel PUTs than it has descriptors: 503 with Retry-After or refused at accept, never an exit', async () => {
    const started = Date.now();
    const { server, inUse, baseline } = await limitedServer();
    // Close to the limit first, so that some PUTs are accepted and then find no descriptor for their files,
    // and others find none for their sockets.
    const first: Array<Awaited<ReturnType<typeof idle>>> = [];
    while (first.length < LIMIT && Date.now() - started < 20_000 && LIMIT - (await inUse()) > 6) {
      const held = await inUse();
      first.push(await idle(server.url));
      // A message of its own: without one, assert would read and parse this source file for every failed try.
      await eventually(async () => assert.ok((await inUse()) > held, 'the server has not taken the connection yet'), 500).catch(() => undefined);
    }
    const puts = Array.from({ length: 10 }, (_, i) => outcomeOf(childPut(server, `fd/over-${i}.bin`, randomBytes(20_000))));
    const more = await Promise.all(Array.from({ length: MAX_SOCKETS - first.length - 10 }, () => idle(server.url)));
    const outcomes = await Promise.all(puts);
    await sleep(500);
    const refusedAtAccept = [...first, ...more].filter((e) => e.closedByServer()).length;
    const summary = `PUTs: ${outcomes.map(outcomeText).join(',')}; idle connections closed by the server: ${refusedAtAccept}`;
    assertAlive(server, `over the limit (${summary})`);
    for (const [i, outcome] of outcomes.entries()) {
      if ('refused' in outcome) {
        assert.match(outcome.refused, /^(ECONNRESET|EPIPE|ECONNREFUSED|socket hang up)$/, `PUT ${i}: ${summary}`);
        continue;
      }
      const { answer } = outcome;
      assert.ok(answer.status === 201 || answer.status === 503, `PUT ${i} over the limit: ${shown(answer)}; ${summary}`);
      if (answer.status === 503) assert.match(String(answer.headers['retry-after']), /^\d+$/, `PUT ${i}: 503 without Retry-After`);
    }
    // The load really went over the limit: something was refused.
    assert.ok(refusedAtAccept > 0 || outcomes.some((o) => 'refused' in o || o.answer.status === 503), `nothing was refused: ${summary}`);
    await assertRecovers(server, inUse, baseline);
    assert.ok(Date.now() - started < 30_000, 'took too long');
  });
});
