// Three real server processes behind the shipped nginx (round robin), on one StoreDir and one Redis, with
// committed files on that StoreDir or in one S3 bucket (Ceph radosgw): tus uploads go on from instance to
// instance, racing commits have one winner, identical content is one blob, and uploads survive an instance
// killed mid-way.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { grantKey, mintGrant } from '../middleware/upload-grant.js';
import { startChildServer, type ChildServer } from './helpers/child-server.js';
import { rawRequest, signedPut } from './helpers/http.js';
import { startNginx, type RunningNginx } from './helpers/nginx.js';
import { startRedis, type RunningRedis } from './helpers/redis.js';
import { createBucket, startS3, type RunningS3, type TestBucket } from './helpers/ceph.js';
import { tusUpload, type TusTarget } from './helpers/tus-client.js';

const SECRET = 'several-instances-secret';
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** How an app retries when an instance goes away mid-upload. */
const RETRIES = [100, 300, 600, 1000, 2000, 3000, 5000, 5000, 5000];

/** tus-js-client through nginx; resolves with the path of the committed file. */
async function upload(proxy: TusTarget, grant: string, data: Buffer, name: string, chunkSize: number, onChunk?: () => void): Promise<string> {
  const { downloadUrl } = await tusUpload(proxy, data, grant, {
    chunkSize,
    retryDelays: RETRIES,
    metadata: { filename: name, filetype: 'application/octet-stream' },
    ...(onChunk ? { onChunkComplete: () => onChunk() } : {}),
  });
  return new URL(downloadUrl).pathname;
}

/** Upload ids whose PATCHes each instance answered, from its request log. */
async function patchesBy(instances: readonly ChildServer[]): Promise<Array<Set<string>>> {
  return Promise.all(
    instances.map(async (instance) => {
      const ids = new Set<string>();
      for (const line of await instance.logLines()) {
        const match = /http\.request method=PATCH path=\/files\/([0-9a-f]+) status=204/.exec(line);
        if (match) ids.add(match[1]!);
      }
      return ids;
    }),
  );
}

async function blobsIn(storeDir: string): Promise<string[]> {
  const entries = await readdir(path.join(storeDir, '.hmac', 'blobs'), { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile() && !e.name.endsWith('.json')).map((e) => e.name);
}

for (const backend of ['fs', 's3'] as const) describe(`several instances behind nginx, one StoreDir and one Redis, files ${backend === 'fs' ? 'on StoreDir' : 'in S3'}`, function () {
  this.timeout(180_000);
  let s3: RunningS3 | undefined;
  let bucket: TestBucket | undefined;
  /** The blobs stored, by sha256. */
  const blobs = async () => (bucket ? (await bucket.keys('blobs/')).filter((k) => !k.endsWith('.json')).map((k) => k.slice('blobs/'.length)) : blobsIn(storeDir));
  let redis: RunningRedis;
  let storeDir: string;
  let instances: ChildServer[];
  let nginx: RunningNginx;
  let base: string;
  /** nginx, as the helpers address a server. */
  let proxy: TusTarget & { config: { UploadSubDir: string } };
  let grant: string;
  const direct = (instance: ChildServer) => ({ url: instance.url, config: { UploadSubDir: 'upload' } });

  before(async function () {
    this.timeout(600_000);
    redis = await startRedis();
    if (backend === 's3') {
      s3 = await startS3();
      bucket = await createBucket(s3);
    }
    storeDir = await mkdtemp(path.join(os.tmpdir(), 'hfs-shared-'));
    instances = await Promise.all(
      ['a', 'b', 'c'].map((name) =>
        startChildServer({
          startTimeoutMs: 60_000,
          config: { Secret: SECRET, StoreDir: storeDir, RedisEnabled: true, RedisAddr: redis.addr, DeduplicationEnabled: true, InstanceID: `files-${name}`, MaxUploadSize: '64MiB', ...bucket?.config },
        }),
      ),
    );
    // Plain HTTP to nginx: what is under test is the spreading over instances, not TLS.
    nginx = await startNginx(
      instances.map((i) => Number(new URL(i.url).port)),
      { edit: (site) => site.replace(/listen (\S+) ssl;/, 'listen $1;') },
    );
    base = `http://127.0.0.1:${nginx.port}`;
    proxy = { url: base, config: { TusPath: '/files/', UploadSubDir: 'upload' } };
    grant = await mintGrant(grantKey('', SECRET), { subject: 'alice', maxSize: 64 * 1024 * 1024, ttlSeconds: 3600 });
  });

  after(async () => {
    await nginx?.stop();
    await Promise.all((instances ?? []).map((i) => i.stop()));
    await redis?.dispose();
    bucket?.dispose();
    await s3?.dispose();
    if (storeDir) await rm(storeDir, { recursive: true, force: true });
  });

  it('says which instance it is in its start-up line', async () => {
    for (const [i, name] of ['files-a', 'files-b', 'files-c'].entries()) {
      assert.ok((await instances[i]!.logLines()).some((l) => l.includes('server.listening') && l.includes(`instance=${name}`)));
    }
  });

  it('takes 20 parallel tus uploads whose chunks land on different instances, each file whole through every instance', async () => {
    const files = Array.from({ length: 20 }, (_, i) => ({ name: `spread-${i}.bin`, data: randomBytes(400_000 + i * 1000) }));
    const paths = await Promise.all(files.map((f) => upload(proxy, grant, f.data, f.name, 64 * 1024)));
    const by = await patchesBy(instances);
    for (const [i, ids] of by.entries()) assert.ok(ids.size > 0, `instance ${i} answered no PATCH`);
    const all = new Set(by.flatMap((ids) => [...ids]));
    const spread = [...all].filter((id) => by.filter((ids) => ids.has(id)).length >= 2);
    assert.ok(spread.length >= 15, `only ${spread.length} of ${all.size} uploads had chunks on more than one instance`);
    for (const [i, file] of files.entries()) {
      for (const instance of instances) {
        const got = await rawRequest(instance.url, 'GET', paths[i]!);
        assert.equal(got.status, 200, `${file.name} through ${instance.url}`);
        assert.equal(sha256(got.body), sha256(file.data), `${file.name} through ${instance.url}`);
      }
    }
  });

  it('gives exactly one 201 to 20 racing PUTs of one path across the instances', async () => {
    const slot = 'race/one.bin';
    const bodies = Array.from({ length: 20 }, () => randomBytes(50_000));
    const answers = await Promise.all(
      bodies.map((body) => signedPut(proxy, slot, body, { secret: SECRET, contentType: 'application/octet-stream' })),
    );
    const statuses = answers.map((a) => a.status);
    assert.equal(statuses.filter((s) => s === 201).length, 1, statuses.join(','));
    assert.equal(statuses.filter((s) => s === 409).length, 19, statuses.join(','));
    const winner = bodies[statuses.indexOf(201)]!;
    for (const instance of instances) assert.equal(sha256((await rawRequest(instance.url, 'GET', `/upload/${slot}`)).body), sha256(winner));
  });

  it('stores identical files put through different instances at once as one blob', async () => {
    // A few rounds: two instances adopting one blob at the same moment is what the shared blob lock is for.
    for (let round = 0; round < 4; round++) {
      const data = randomBytes(200_000);
      const before = await blobs();
      const objectsBefore = bucket ? (await bucket.keys('data/')).length : 0;
      const slots = Array.from({ length: 9 }, (_, i) => `same/${round}/${i}.bin`);
      const answers = await Promise.all(
        slots.map((slot, i) => signedPut(direct(instances[i % 3]!), slot, data, { secret: SECRET, contentType: 'application/octet-stream' })),
      );
      assert.deepEqual(
        answers.map((a) => a.status),
        Array<number>(9).fill(201),
      );
      const added = (await blobs()).filter((b) => !before.includes(b));
      assert.deepEqual(added, [sha256(data)]);
      if (bucket) {
        assert.equal((await bucket.keys('data/')).length, objectsBefore, `round ${round}: a copy was stored beside the blob`);
      } else {
        const inodes = new Set(await Promise.all(slots.map(async (slot) => (await stat(path.join(storeDir, 'upload', slot))).ino)));
        assert.equal(inodes.size, 1, `round ${round}: the paths do not all share the blob's bytes`);
      }
      for (const slot of slots) assert.equal(sha256((await rawRequest(base, 'GET', `/upload/${slot}`)).body), sha256(data));
    }
  });

  it('joins a final upload created on one instance when its last partial finishes on another, with no HEAD', async () => {
    const tus = { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${grant}` };
    const [a, b, c] = instances as [ChildServer, ChildServer, ChildServer];
    const parts = [randomBytes(30_000), randomBytes(20_000)];
    const urls: string[] = [];
    for (const part of parts) {
      const created = await rawRequest(a.url, 'POST', '/files/', { ...tus, 'Upload-Concat': 'partial', 'Upload-Length': part.length });
      assert.equal(created.status, 201);
      urls.push(new URL(created.headers.location!).pathname);
    }
    const final = await rawRequest(a.url, 'POST', '/files/', { ...tus, 'Upload-Concat': `final;${urls.join(' ')}`, 'Upload-Metadata': `filename ${Buffer.from('joined.bin').toString('base64')}` });
    assert.equal(final.status, 201);
    const finalId = new URL(final.headers.location!).pathname.split('/').pop()!;
    for (const [i, part] of parts.entries()) {
      const patch = await rawRequest(b.url, 'PATCH', urls[i]!, { ...tus, 'Upload-Offset': 0, 'Content-Type': 'application/offset+octet-stream' }, part);
      assert.equal(patch.status, 204);
    }
    // Nobody asks about the final upload: the instance that took the last byte joined it.
    const whole = Buffer.concat(parts);
    const deadline = Date.now() + 10_000;
    let got = await rawRequest(c.url, 'GET', `/upload/${finalId}/joined.bin`);
    while (got.status !== 200 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      got = await rawRequest(c.url, 'GET', `/upload/${finalId}/joined.bin`);
    }
    assert.equal(got.status, 200, 'the final upload was never joined');
    assert.equal(sha256(got.body), sha256(whole));
    // Its partials are gone once joined.
    for (const url of urls) assert.equal((await rawRequest(c.url, 'HEAD', url, tus)).status, 404);
  });

  it('finishes every upload through the other instances when one is killed mid-way', async () => {
    const files = Array.from({ length: 20 }, (_, i) => ({ name: `survive-${i}.bin`, data: randomBytes(1_500_000 + i * 1000) }));
    let chunks = 0;
    let killed: Promise<void> | undefined;
    const victim = instances[2]!;
    const victimBefore = (await patchesBy([victim]))[0]!.size;
    const paths = await Promise.all(
      files.map((f) =>
        upload(proxy, grant, f.data, f.name, 128 * 1024, () => {
          chunks += 1;
          // About a third of the way: every upload is under way, several on the victim.
          if (chunks === 80) killed = (async () => {
            process.kill(victim.pid, 'SIGKILL');
            await victim.waitForExit();
          })();
        }),
      ),
    );
    await killed;
    assert.equal(victim.exit?.signal, 'SIGKILL');
    assert.ok((await patchesBy([victim]))[0]!.size > victimBefore, 'the killed instance had taken no chunk of these uploads');
    for (const [i, file] of files.entries()) {
      for (const instance of instances.slice(0, 2)) {
        const got = await rawRequest(instance.url, 'GET', paths[i]!);
        assert.equal(got.status, 200, `${file.name} through ${instance.url}`);
        assert.equal(sha256(got.body), sha256(file.data), `${file.name} through ${instance.url}`);
      }
    }
  });
});
