// Quotas: bytes and files per user, bytes per user per day, bytes per tenant; charged before the body is read,
// so parallel uploads at the edge never end above a quota, and the refused ones leave nothing behind; deletions
// and pruned versions give bytes back; the counts are made again from the metadata (a restart, a lost counter);
// two instances sharing Redis enforce one quota.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { hmacHex } from '../middleware/slot-verifier-hmac.js';
import type { ConfigInput } from '../server/config-schema.js';
import { rawRequest, signedPath, signedPut, type PutTarget } from './helpers/http.js';
import { exchange, head } from './helpers/socket.js';
import { startRedis, type RunningRedis } from './helpers/redis.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';
import { grantFor } from './helpers/tus-client.js';

const KiB = 1024;
/** An ejabberd-style tenant: the first path segment is the uploader. */
const EJ = { Prefix: 'ej', Secret: 'ej-secret', UserDirInPath: true };
const ej = (server: TestServer): PutTarget => ({ url: server.url, config: { UploadSubDir: 'ej' } });
const user = (name: string) => createHash('sha1').update(name).digest('hex');
const putAs = (server: TestServer, who: string, name: string, body: Buffer) => signedPut(ej(server), `${user(who)}/${name}`, body, { secret: EJ.Secret });

async function filesBelow(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

describe('quotas', function () {
  this.timeout(60_000);
  const servers: TestServer[] = [];
  const start = async (overrides: Partial<ConfigInput>, now?: () => Date) => {
    const server = await startTestServer(overrides, now ? { now } : {});
    servers.push(server);
    return server;
  };
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });

  it('lets 20 parallel PUTs of one user end at the quota, not above it, and the refused ones leave nothing', async () => {
    const server = await start({ AuditLogFile: 'audit.log', Tenants: [{ ...EJ, MaxBytesPerUser: '100KiB' }] });
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => putAs(server, 'alice@example.org', `f${i}.bin`, randomBytes(10 * KiB))));
    const statuses = answers.map((a) => a.status).sort();
    assert.deepEqual(statuses, [...Array<number>(10).fill(201), ...Array<number>(10).fill(413)]);
    const refused = answers.find((a) => a.status === 413)!;
    assert.equal(refused.body.toString(), 'Quota exceeded: 100 KiB of 100 KiB used\n');
    assert.deepEqual(await server.running.quotas!.usage('ej', user('alice@example.org')), { bytes: 100 * KiB, files: 10, today: 100 * KiB });
    assert.equal((await filesBelow(path.join(server.storeDir, 'ej'))).length, 10);
    assert.deepEqual(await filesBelow(path.join(server.storeDir, '.hmac', 'staging')), []);
    // Another user has a quota of their own.
    assert.equal((await putAs(server, 'bob@example.org', 'b.bin', randomBytes(10 * KiB))).status, 201);
    // Each refusal is an audit line.
    const audit = (await readFile(path.join(server.storeDir, 'audit.log'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const refusals = audit.filter((l) => l.action === 'quota_refused');
    assert.equal(refusals.length, 10);
    assert.deepEqual(
      [...new Set(refusals.map((l) => [l.tenant, l.user, l.size, l.door, l.client, l.limit].join(' ')))],
      [`ej ${user('alice@example.org')} ${10 * KiB} legacy 127.0.0.1 user-bytes`],
    );
    assert.ok(refusals.every((l) => typeof l.path === 'string' && l.path.startsWith(user('alice@example.org'))));
  });

  it('gives the charge of an upload that is not stored back (a body cut short)', async () => {
    const server = await start({ Tenants: [{ ...EJ, MaxBytesPerUser: '20KiB' }] });
    const slot = `${user('alice')}/short.bin`;
    await exchange(server.url, [head('PUT', signedPath(ej(server), slot, 15 * KiB, { secret: EJ.Secret }), { 'Content-Length': 15 * KiB }), randomBytes(KiB), 100], { end: true });
    assert.ok(await server.waitForLog(/request\.rejected code=E_INCOMPLETE/));
    assert.deepEqual(await server.running.quotas!.usage('ej', user('alice')), { bytes: 0, files: 0, today: 0 });
    assert.equal((await putAs(server, 'alice', 'whole.bin', randomBytes(15 * KiB))).status, 201);
  });

  it('counts files per user, and a deletion gives its bytes and its file back', async () => {
    const server = await start({ DeleteSecret: 'delete-me', Tenants: [{ ...EJ, MaxFilesPerUser: 3 }] });
    for (const name of ['1', '2', '3']) assert.equal((await putAs(server, 'alice', `${name}.txt`, Buffer.from(name))).status, 201);
    const fourth = await putAs(server, 'alice', '4.txt', Buffer.from('4'));
    assert.equal(fourth.status, 413);
    assert.equal(fourth.body.toString(), 'Quota exceeded: 3 of 3 files stored\n');
    const slot = `${user('alice')}/1.txt`;
    assert.equal((await rawRequest(server.url, 'DELETE', `/ej/${slot}?token=${hmacHex(EJ.Secret, `${slot}\0delete-me`)}`)).status, 204);
    assert.equal((await putAs(server, 'alice', '4.txt', Buffer.from('4'))).status, 201);
  });

  it('counts uploads that name no user against their tenant, with 507', async () => {
    const server = await start({ MaxBytesPerTenant: '50KiB' });
    assert.equal((await signedPut(server, 'a.bin', randomBytes(40 * KiB))).status, 201);
    const over = await signedPut(server, 'b.bin', randomBytes(20 * KiB));
    assert.equal(over.status, 507);
    assert.equal(over.body.toString(), 'Storage quota exceeded: 40 KiB of 50 KiB used\n');
    assert.equal((await rawRequest(server.url, 'GET', '/upload/b.bin')).status, 404);
    assert.equal((await signedPut(server, 'c.bin', randomBytes(10 * KiB))).status, 201, 'what still fits');
  });

  it('counts the bytes a user uploads per day, and starts again the next day', async () => {
    let clock = new Date('2026-12-03T23:59:00Z');
    const server = await start({ DeleteSecret: 'delete-me', Tenants: [{ ...EJ, MaxBytesPerUserPerDay: '30KiB' }] }, () => clock);
    assert.equal((await putAs(server, 'alice', 'a.bin', randomBytes(20 * KiB))).status, 201);
    const slot = `${user('alice')}/a.bin`;
    // Deleting does not give the day's bytes back: they were uploaded.
    assert.equal((await rawRequest(server.url, 'DELETE', `/ej/${slot}?token=${hmacHex(EJ.Secret, `${slot}\0delete-me`)}`)).status, 204);
    const over = await putAs(server, 'alice', 'b.bin', randomBytes(20 * KiB));
    assert.equal(over.status, 413);
    assert.equal(over.body.toString(), 'Quota exceeded: 20 KiB of 30 KiB uploaded today\n');
    clock = new Date('2026-12-04T00:01:00Z');
    assert.equal((await putAs(server, 'alice', 'b.bin', randomBytes(20 * KiB))).status, 201);
  });

  it("counts each user's own copies of shared content (dedup), and gives back pruned versions", async () => {
    const server = await start({ DeduplicationEnabled: true, EnableVersioning: true, MaxVersions: 1, Tenants: [{ ...EJ, MaxBytesPerUser: '1MiB' }] });
    const data = randomBytes(30 * KiB);
    assert.equal((await putAs(server, 'alice', 'same.bin', data)).status, 201);
    assert.equal((await putAs(server, 'bob', 'same.bin', data)).status, 201);
    assert.equal((await server.running.quotas!.usage('ej', user('alice'))).bytes, 30 * KiB);
    assert.equal((await server.running.quotas!.usage('ej', user('bob'))).bytes, 30 * KiB);
    for (let i = 0; i < 3; i++) assert.equal((await putAs(server, 'carol', 'v.bin', randomBytes(10 * KiB))).status, 201);
    // The current file and one kept version; the pruned one gave its bytes back.
    assert.deepEqual(await server.running.quotas!.usage('ej', user('carol')), { bytes: 20 * KiB, files: 2, today: 30 * KiB });
  });

  it('shows refusals by code and what each tenant stores in the metrics', async () => {
    const server = await start({ MetricsEnabled: true, MetricsPort: 0, MaxBytesPerTenant: '30KiB', Tenants: [{ ...EJ, MaxFilesPerUser: 1 }] });
    assert.equal((await signedPut(server, 'a.bin', randomBytes(20 * KiB))).status, 201);
    assert.equal((await signedPut(server, 'b.bin', randomBytes(20 * KiB))).status, 507);
    assert.equal((await putAs(server, 'alice', '1.bin', randomBytes(KiB))).status, 201);
    assert.equal((await putAs(server, 'alice', '2.bin', randomBytes(KiB))).status, 413);
    assert.equal((await putAs(server, 'alice', '3.bin', randomBytes(KiB))).status, 413);
    const text = await (await fetch(`${server.running.metricsAddress!}/metrics`)).text();
    assert.match(text, /^file_server_quota_refusals_total\{code="E_QUOTA"\} 2$/m);
    assert.match(text, /^file_server_quota_refusals_total\{code="E_TENANT_QUOTA"\} 1$/m);
    assert.match(text, new RegExp(`^file_server_quota_used_bytes\\{tenant="upload"\\} ${20 * KiB}$`, 'm'));
    assert.match(text, new RegExp(`^file_server_quota_used_bytes\\{tenant="ej"\\} ${KiB}$`, 'm'));
    assert.match(text, /^file_server_quota_used_files\{tenant="ej"\} 1$/m);
  });

  it('counts again from the metadata after a restart', async () => {
    const storeDir = await mkdtemp(path.join(os.tmpdir(), 'hfs-quota-'));
    try {
      const config = { StoreDir: storeDir, Tenants: [{ ...EJ, MaxBytesPerUser: '50KiB' }] };
      const first = await start(config);
      for (let i = 0; i < 4; i++) assert.equal((await putAs(first, 'alice', `${i}.bin`, randomBytes(10 * KiB))).status, 201);
      await first.close();
      servers.splice(servers.indexOf(first), 1);
      const again = await start(config);
      assert.equal((await again.running.quotas!.usage('ej', user('alice'))).bytes, 40 * KiB);
      assert.equal((await putAs(again, 'alice', 'more.bin', randomBytes(20 * KiB))).status, 413);
      assert.equal((await putAs(again, 'alice', 'last.bin', randomBytes(10 * KiB))).status, 201);
    } finally {
      await Promise.all(servers.splice(0).map((s) => s.close()));
      await rm(storeDir, { recursive: true, force: true });
    }
  });

  describe('through tus', () => {
    const tus = (grant: string) => ({ 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${grant}` });
    const create = (server: TestServer, grant: string, headers: Record<string, string | number>) => rawRequest(server.url, 'POST', '/files/', { ...tus(grant), 'Upload-Metadata': `filename ${Buffer.from('f.bin').toString('base64')}`, ...headers });
    const patch = (server: TestServer, grant: string, location: string, offset: number, body: Buffer, headers: Record<string, string | number> = {}) =>
      rawRequest(server.url, 'PATCH', new URL(location).pathname, { ...tus(grant), 'Upload-Offset': offset, 'Content-Type': 'application/offset+octet-stream', ...headers }, body);

    it('charges 20 parallel creations before any byte, so they end at the quota; a terminated upload gives its charge back', async () => {
      const server = await start({ MaxBytesPerUser: '100KiB' });
      const grant = await grantFor(server, { subject: 'alice@example.org' });
      const created = await Promise.all(Array.from({ length: 20 }, () => create(server, grant, { 'Upload-Length': 10 * KiB })));
      assert.deepEqual(created.map((c) => c.status).sort(), [...Array<number>(10).fill(201), ...Array<number>(10).fill(413)]);
      assert.match(created.find((c) => c.status === 413)!.body.toString(), /^Quota exceeded: 100 KiB of 100 KiB used\n$/);
      const locations = created.filter((c) => c.status === 201).map((c) => c.headers.location!);
      // The refused creations left no upload behind.
      assert.equal((await readdir(path.join(server.storeDir, '.hmac', 'tus'))).filter((n) => n.endsWith('.json')).length, 10);
      for (const location of locations.slice(1)) assert.equal((await patch(server, grant, location, 0, randomBytes(10 * KiB))).status, 204);
      assert.deepEqual(await server.running.quotas!.usage('upload', 'alice@example.org'), { bytes: 100 * KiB, files: 10, today: 100 * KiB });
      // The one never sent is terminated: its charge comes back, and another upload fits.
      assert.equal((await rawRequest(server.url, 'DELETE', new URL(locations[0]!).pathname, tus(grant))).status, 204);
      assert.equal((await server.running.quotas!.usage('upload', 'alice@example.org')).bytes, 90 * KiB);
      assert.equal((await create(server, grant, { 'Upload-Length': 10 * KiB })).status, 201);
    });

    it('stops an upload of deferred length as its bytes arrive, and charges it at its commit', async () => {
      const server = await start({ MaxBytesPerUser: '20KiB' });
      const grant = await grantFor(server, { subject: 'bob' });
      const created = await create(server, grant, { 'Upload-Defer-Length': 1 });
      assert.equal(created.status, 201);
      const location = created.headers.location!;
      assert.equal((await patch(server, grant, location, 0, randomBytes(15 * KiB))).status, 204);
      // 25 KiB would not fit: refused before the bytes are written, and the upload stays where it was.
      const over = await patch(server, grant, location, 15 * KiB, randomBytes(10 * KiB));
      assert.equal(over.status, 413);
      assert.equal(over.body.toString(), 'Quota exceeded: 0 bytes of 20 KiB used\n');
      const head = await rawRequest(server.url, 'HEAD', new URL(location).pathname, tus(grant));
      assert.equal(head.headers['upload-offset'], String(15 * KiB));
      assert.equal((await patch(server, grant, location, 15 * KiB, randomBytes(10 * KiB), { 'Upload-Length': 25 * KiB })).status, 413);
      // What fits is stored, and charged.
      assert.equal((await patch(server, grant, location, 15 * KiB, randomBytes(3 * KiB), { 'Upload-Length': 18 * KiB })).status, 204);
      assert.deepEqual(await server.running.quotas!.usage('upload', 'bob'), { bytes: 18 * KiB, files: 1, today: 18 * KiB });
    });

    it('refuses at its commit a deferred upload that another one filled the room of meanwhile, and keeps nothing of it', async () => {
      const server = await start({ MaxBytesPerUser: '20KiB' });
      const grant = await grantFor(server, { subject: 'dora' });
      const [a, b] = [await create(server, grant, { 'Upload-Defer-Length': 1 }), await create(server, grant, { 'Upload-Defer-Length': 1 })];
      // Each fits while neither is charged: a sends 15 KiB, b declares 15 KiB and sends 10.
      assert.equal((await patch(server, grant, a.headers.location!, 0, randomBytes(15 * KiB))).status, 204);
      assert.equal((await patch(server, grant, b.headers.location!, 0, randomBytes(10 * KiB), { 'Upload-Length': 15 * KiB })).status, 204);
      // a ends first and is charged; b's last bytes then find no room at its commit.
      assert.equal((await patch(server, grant, a.headers.location!, 15 * KiB, Buffer.alloc(0), { 'Upload-Length': 15 * KiB })).status, 204);
      const late = await patch(server, grant, b.headers.location!, 10 * KiB, randomBytes(5 * KiB));
      assert.equal(late.status, 413);
      assert.equal(late.body.toString(), 'Quota exceeded: 15 KiB of 20 KiB used\n');
      assert.equal((await rawRequest(server.url, 'HEAD', new URL(b.headers.location!).pathname, tus(grant))).status, 404, 'the refused upload is gone');
      assert.deepEqual(await server.running.quotas!.usage('upload', 'dora'), { bytes: 15 * KiB, files: 1, today: 15 * KiB });
    });

    it('counts an upload in progress that holds a charge again after a restart', async () => {
      const storeDir = await mkdtemp(path.join(os.tmpdir(), 'hfs-quota-'));
      try {
        const config = { StoreDir: storeDir, MaxBytesPerUser: '30KiB' };
        const first = await start(config);
        const grant = await grantFor(first, { subject: 'carol' });
        assert.equal((await create(first, grant, { 'Upload-Length': 20 * KiB })).status, 201);
        await first.close();
        servers.splice(servers.indexOf(first), 1);
        const again = await start(config);
        assert.equal((await again.running.quotas!.usage('upload', 'carol')).bytes, 20 * KiB);
        assert.equal((await create(again, grant, { 'Upload-Length': 20 * KiB })).status, 413);
      } finally {
        await Promise.all(servers.splice(0).map((s) => s.close()));
        await rm(storeDir, { recursive: true, force: true });
      }
    });
  });

  describe('with Redis', () => {
    let redis: RunningRedis;
    before(async function () {
      this.timeout(120_000);
      redis = await startRedis();
    });
    after(() => redis?.dispose());

    it('enforces one quota across two instances, and heals after its counters are deleted', async () => {
      const storeDir = await mkdtemp(path.join(os.tmpdir(), 'hfs-quota-'));
      try {
        const config = { StoreDir: storeDir, RedisEnabled: true, RedisAddr: redis.addr, RedisHealthCheckInterval: '200ms', Tenants: [{ ...EJ, MaxBytesPerUser: '100KiB' }] };
        const [a, b] = [await start(config), await start(config)];
        const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => putAs(i % 2 ? a : b, 'alice', `f${i}.bin`, randomBytes(10 * KiB))));
        assert.deepEqual(answers.map((x) => x.status).sort(), [...Array<number>(10).fill(201), ...Array<number>(10).fill(413)]);
        // A lost counter: every quota key deleted, as a Redis restarted empty would have none.
        const client = new Redis({ host: '127.0.0.1', port: Number(redis.addr.split(':')[1]) });
        try {
          const keys = await client.keys('hfs:quota:*');
          assert.ok(keys.length > 0);
          await client.del(...keys);
          const deadline = Date.now() + 5000;
          while ((await client.exists('hfs:quota:ready')) === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
          assert.equal(await client.hget(`hfs:quota:u:ej:${user('alice')}`, 'bytes'), String(100 * KiB));
        } finally {
          client.disconnect();
        }
        assert.equal((await putAs(b, 'alice', 'over.bin', randomBytes(KiB))).status, 413);
      } finally {
        await Promise.all(servers.splice(0).map((s) => s.close()));
        await rm(storeDir, { recursive: true, force: true });
      }
    });

    it('refuses with 503 while Redis is down, and charges again once it is back', async () => {
      const server = await start({ RedisEnabled: true, RedisAddr: redis.addr, Tenants: [{ ...EJ, MaxBytesPerUser: '100KiB' }] });
      await redis.stop();
      try {
        const put = await putAs(server, 'alice', 'a.bin', randomBytes(KiB));
        assert.equal(put.status, 503);
        assert.equal(put.headers['retry-after'], '10');
      } finally {
        await redis.start();
      }
      const deadline = Date.now() + 10_000;
      let status = 0;
      while (status !== 201 && Date.now() < deadline) {
        status = (await putAs(server, 'alice', 'a.bin', randomBytes(KiB))).status;
        if (status !== 201) await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(status, 201);
    });
  });
});
