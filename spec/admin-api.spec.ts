// The admin API on the operators' port and the `admin` command: refused without the token (401) and absent on
// the public port and without AdminToken; listing, usage, deleting a file and all of a user's files (their
// versions, dedup references and quota too, while other users' copies of the same content stay); every
// action in the audit log.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { AdminFile } from '../server/admin-api.js';
import type { AuditEvent } from '../server/audit-log.js';
import { runCli } from './helpers/cli.js';
import { toml } from './helpers/child-server.js';
import { rawRequest, signedPut, type PutTarget } from './helpers/http.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

const TOKEN = 'admin-token-for-the-tests-0123456789';
const EJ = { Prefix: 'ej', Secret: 'ej-secret', UserDirInPath: true };
const ej = (server: TestServer): PutTarget => ({ url: server.url, config: { UploadSubDir: 'ej' } });
const user = (name: string) => createHash('sha1').update(name).digest('hex');
const putAs = (server: TestServer, who: string, name: string, body: Buffer) => signedPut(ej(server), `${user(who)}/${name}`, body, { secret: EJ.Secret });

/** The dedup blobs stored, by sha256. */
async function blobsIn(server: TestServer): Promise<string[]> {
  const entries = await readdir(path.join(server.storeDir, '.hmac', 'blobs'), { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile() && !e.name.endsWith('.json')).map((e) => e.name);
}

async function auditLines(server: TestServer): Promise<Array<AuditEvent & { time: string }>> {
  const text = await readFile(path.join(server.storeDir, 'audit.log'), 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as AuditEvent & { time: string });
}

describe('the admin API and command', function () {
  this.timeout(60_000);
  let server: TestServer;
  /** token null: no Authorization header at all. */
  const api = (method: string, pathAndQuery: string, token: string | null = TOKEN) =>
    rawRequest(server.running.metricsAddress!, method, pathAndQuery, token === null ? {} : { Authorization: `Bearer ${token}` });
  const json = <T>(answer: { body: Buffer }) => JSON.parse(answer.body.toString()) as T;

  beforeEach(async () => {
    server = await startTestServer({
      AdminToken: TOKEN,
      MetricsPort: 0,
      AuditLogFile: 'audit.log',
      DeduplicationEnabled: true,
      EnableVersioning: true,
      Tenants: [{ ...EJ, MaxBytesPerUser: '1MiB' }],
    });
  });
  afterEach(() => server.close());

  it('refuses without the token or with a wrong one (401), and is absent on the public port', async () => {
    for (const token of [null, 'wrong-token-wrong-token-wrong', `${TOKEN}x`, TOKEN.replace(/.$/, 'X')]) {
      const answer = await api('GET', '/admin/files', token);
      assert.equal(answer.status, 401);
      assert.equal(answer.headers['www-authenticate'], 'Bearer realm="hmac-file-server admin"');
    }
    assert.ok(server.logs.some((l) => /warn auth\.failed client=127\.0\.0\.1 reason=admin_token_missing method=GET path=\/admin\/files/.test(l)));
    assert.ok(server.logs.some((l) => /reason=admin_token_invalid/.test(l)));
    assert.equal((await rawRequest(server.url, 'GET', '/admin/files', { Authorization: `Bearer ${TOKEN}` })).status, 404);
    assert.equal((await api('GET', '/admin/nothing')).status, 404);
    assert.equal((await api('PUT', '/admin/files')).headers.allow, 'GET, DELETE');
    // Without MetricsEnabled the port serves the admin API and the health checks, not /metrics.
    assert.equal((await api('GET', '/metrics')).status, 404);
    assert.equal((await api('GET', '/readyz')).status, 200);
  });

  it('lists files by user, tenant, size and date, newest first and by pages; shows usage; says what is wrong with a query', async () => {
    assert.equal((await putAs(server, 'alice', 'a1.bin', randomBytes(1000))).status, 201);
    await new Promise((r) => setTimeout(r, 5));
    assert.equal((await putAs(server, 'alice', 'a2.bin', randomBytes(3000))).status, 201);
    assert.equal((await putAs(server, 'bob', 'b1.bin', randomBytes(2000))).status, 201);
    assert.equal((await signedPut(server, 'anon.bin', randomBytes(500))).status, 201);
    const alice = json<{ total: number; files: AdminFile[] }>(await api('GET', `/admin/files?user=${user('alice')}`));
    assert.equal(alice.total, 2);
    assert.deepEqual(alice.files.map((f) => f.path), [`${user('alice')}/a2.bin`, `${user('alice')}/a1.bin`]);
    assert.equal(alice.files[0]!.tenant, 'ej');
    assert.equal(alice.files[0]!.size, 3000);
    const page = json<{ total: number; files: AdminFile[]; next?: number }>(await api('GET', '/admin/files?limit=3'));
    assert.deepEqual([page.total, page.files.length, page.next], [4, 3, 3]);
    const rest = json<{ files: AdminFile[]; next?: number }>(await api('GET', '/admin/files?limit=3&offset=3'));
    assert.equal(rest.files.length, 1);
    assert.equal(rest.next, undefined);
    assert.deepEqual(json<{ files: AdminFile[] }>(await api('GET', '/admin/files?tenant=upload')).files.map((f) => f.path), ['anon.bin']);
    assert.deepEqual(json<{ files: AdminFile[] }>(await api('GET', '/admin/files?min_size=1500&max_size=2500')).files.map((f) => f.size), [2000]);
    assert.equal(json<{ total: number }>(await api('GET', '/admin/files?since=2999-01-01T00:00:00Z')).total, 0);
    assert.equal((await api('GET', '/admin/files?limit=ten')).status, 400);
    assert.equal((await api('GET', '/admin/files?since=yesterday')).status, 400);
    const usage = json<{ tenants: Array<{ tenant: string; bytes: number; files: number }>; users: Array<{ user: string; bytes: number; files: number }> }>(await api('GET', '/admin/usage'));
    assert.deepEqual(usage.tenants, [
      { tenant: 'ej', bytes: 6000, files: 3 },
      { tenant: 'upload', bytes: 500, files: 1 },
    ]);
    assert.deepEqual(
      usage.users.map((u) => [u.user, u.bytes, u.files]),
      [
        [user('alice'), 4000, 2],
        [user('bob'), 2000, 1],
      ],
    );
    const health = await api('GET', '/admin/health');
    assert.equal(health.status, 200);
    assert.deepEqual(json(health), { ready: true, checks: { store: 'ok' } });
    assert.equal((await api('POST', '/admin/recount')).status, 200);
    const requests = (await auditLines(server)).filter((l) => l.action === 'admin').map((l) => l.request);
    assert.deepEqual([...new Set(requests)], ['list', 'usage', 'health', 'recount']);
  });

  it("deletes one file, and all of a user's files with their versions, freeing their blobs and quota but not others' copies", async () => {
    const shared = randomBytes(40_000);
    assert.equal((await putAs(server, 'alice', 'shared.bin', shared)).status, 201);
    assert.equal((await putAs(server, 'bob', 'shared.bin', shared)).status, 201);
    assert.equal((await putAs(server, 'alice', 'v.txt', Buffer.from('one'))).status, 201);
    assert.equal((await putAs(server, 'alice', 'v.txt', Buffer.from('two'))).status, 201);
    assert.equal((await putAs(server, 'alice', 'gone.txt', Buffer.from('x'))).status, 201);

    const one = await api('DELETE', `/admin/files?tenant=ej&path=${encodeURIComponent(`${user('alice')}/gone.txt`)}`);
    assert.equal(one.status, 200);
    assert.equal((await rawRequest(server.url, 'GET', `/ej/${user('alice')}/gone.txt`)).status, 404);
    assert.equal((await api('DELETE', `/admin/files?tenant=ej&path=${encodeURIComponent(`${user('alice')}/gone.txt`)}`)).status, 404);
    assert.equal((await api('DELETE', '/admin/files?tenant=ej')).status, 400);
    const outside = await api('DELETE', `/admin/files?tenant=ej&path=${encodeURIComponent('../../etc/passwd')}`);
    assert.equal(outside.status, 400);
    assert.equal(json<{ error: string }>(outside).error, 'E_BAD_PATH');
    assert.equal((await api('DELETE', '/admin/files?tenant=nope&path=a.bin')).status, 404);

    const all = json<{ deleted: AdminFile[] }>(await api('DELETE', `/admin/users/files?user=${user('alice')}`));
    assert.deepEqual(all.deleted.map((f) => f.path).sort(), [`${user('alice')}/shared.bin`, `${user('alice')}/v.txt`]);
    for (const name of ['shared.bin', 'v.txt']) assert.equal((await rawRequest(server.url, 'GET', `/ej/${user('alice')}/${name}`)).status, 404);
    // Bob's copy of the same content stays, and so does the blob it shares; alice's own blobs are gone.
    assert.deepEqual((await rawRequest(server.url, 'GET', `/ej/${user('bob')}/shared.bin`)).body, shared);
    assert.deepEqual(await blobsIn(server), [createHash('sha256').update(shared).digest('hex')]);
    assert.equal(json<{ total: number }>(await api('GET', `/admin/files?user=${user('alice')}`)).total, 0);
    // Nothing of alice is left, versions included; her quota is free again.
    const usage = json<{ users: Array<{ user: string }> }>(await api('GET', '/admin/usage'));
    assert.deepEqual(usage.users.map((u) => u.user), [user('bob')]);
    assert.deepEqual(await server.running.quotas!.usage('ej', user('alice')), { bytes: 0, files: 0, today: 40_000 + 3 + 3 + 1 });
    const audit = await auditLines(server);
    const deletions = audit.filter((l) => l.action === 'delete' && l.door === 'admin');
    assert.deepEqual(deletions.map((l) => l.path).sort(), [`${user('alice')}/gone.txt`, `${user('alice')}/shared.bin`, `${user('alice')}/v.txt`]);
    assert.ok(deletions.every((l) => l.user === user('alice') && l.client === '127.0.0.1'));
    assert.ok(audit.some((l) => l.action === 'admin' && l.request === 'delete_user' && l.user === user('alice') && l.count === 2));
  });

  it('is what `hmac-file-server admin` shows as tables, or as JSON', async () => {
    assert.equal((await putAs(server, 'alice', 'cli.bin', randomBytes(2048))).status, 201);
    const configFile = path.join(server.storeDir, 'admin.toml');
    await writeFile(configFile, toml({ Secret: 'unused-secret-for-the-cli', AdminToken: TOKEN, ListenIPMetrics: '127.0.0.1', MetricsPort: Number(new URL(server.running.metricsAddress!).port) }));
    const files = await runCli(['admin', 'files', '--config', configFile]);
    assert.equal(files.code, 0, files.stderr);
    assert.match(files.stdout, /^CREATED\s+SIZE\s+TENANT\s+PATH\s+USER\n/);
    assert.match(files.stdout, new RegExp(`2 KiB  ej +${user('alice')}/cli\\.bin  ${user('alice')}\\n1-1 of 1\\n$`));
    const usage = await runCli(['admin', 'usage', '--config', configFile, '--json']);
    assert.equal(usage.code, 0, usage.stderr);
    assert.deepEqual((JSON.parse(usage.stdout) as { tenants: unknown[] }).tenants, [{ tenant: 'ej', bytes: 2048, files: 1 }]);
    const health = await runCli(['admin', 'health', '--url', server.running.metricsAddress!, '--token', TOKEN]);
    assert.equal(health.code, 0);
    assert.match(health.stdout, /store\s+ok\nready\n$/);
    const wrong = await runCli(['admin', 'files', '--url', server.running.metricsAddress!, '--token', 'not-the-token-at-all']);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /admin: 401 E_ADMIN_TOKEN: Admin token missing or wrong/);
    const del = await runCli(['admin', 'delete-user', '--user', user('alice'), '--config', configFile]);
    assert.equal(del.code, 0, del.stderr);
    assert.match(del.stdout, /deleted ej\/\S+\/cli\.bin \(2 KiB\)\n1 file\(s\) deleted\n$/);
    const usageError = await runCli(['admin', 'delete', '--config', configFile]);
    assert.equal(usageError.code, 2);
    assert.match(usageError.stderr, /admin delete needs --tenant and --path/);
  });
});

describe('the admin API without AdminToken', () => {
  it('is not there: the operators port answers 404 below /admin/', async () => {
    const server = await startTestServer({ MetricsEnabled: true, MetricsPort: 0 });
    try {
      assert.equal((await rawRequest(server.running.metricsAddress!, 'GET', '/admin/files', { Authorization: `Bearer ${TOKEN}` })).status, 404);
      assert.equal((await rawRequest(server.running.metricsAddress!, 'GET', '/metrics')).status, 200);
    } finally {
      await server.close();
    }
  });
});
