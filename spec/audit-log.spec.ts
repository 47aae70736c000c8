// AuditLogFile: one JSON line per commit, deletion and expiry through both doors, the uploader named there and
// not in the info log; a file that cannot be opened stops the start, one that cannot be written stops nothing
// else; logrotate's rename and SIGHUP move the lines to the new file.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rename, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { hmacHex } from '../middleware/slot-verifier-hmac.js';
import type { AuditEvent } from '../server/audit-log.js';
import { startChildServer } from './helpers/child-server.js';
import { rawRequest, signedPut } from './helpers/http.js';
import { startTestServer, TEST_SECRET } from './helpers/test-server.js';
import { grantFor, tusUpload } from './helpers/tus-client.js';

/** A line as written: the event and its time. */
type AuditLine = AuditEvent & { time: string };

/** Every line of an audit file, each parsed as JSON (a line that is not fails the test). */
async function auditLines(file: string): Promise<AuditLine[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as AuditLine);
}

describe('the audit log (AuditLogFile)', () => {
  it('records commits, deletions and expiries through both doors, with the uploader, who is not in the info log', async () => {
    const server = await startTestServer({ AuditLogFile: 'audit.log', DeleteSecret: 'delete-me', FileTTL: '1h', EnableVersioning: true });
    const file = path.join(server.storeDir, 'audit.log');
    try {
      const data = randomBytes(2000);
      assert.equal((await signedPut(server, 'a/legacy.bin', data)).status, 201);
      const { downloadUrl } = await tusUpload(server, randomBytes(3000), await grantFor(server, { subject: 'alice@example.org' }), { metadata: { filename: 'tus.bin' } });
      const tusPath = decodeURIComponent(new URL(downloadUrl).pathname.slice('/upload/'.length));
      const token = hmacHex(TEST_SECRET, 'a/legacy.bin\0delete-me');
      assert.equal((await rawRequest(server.url, 'DELETE', `/upload/a/legacy.bin?token=${token}`)).status, 204);
      assert.equal((await signedPut(server, 'a/kept.bin', Buffer.from('one'))).status, 201);
      assert.equal((await signedPut(server, 'a/kept.bin', Buffer.from('two'))).status, 201);
      assert.equal(await server.running.expiry.sweep(Date.now() + 2 * 3_600_000), 3);

      const lines = await auditLines(file);
      const summary = lines.map((l) => `${l.action} ${l.door} ${l.path}${l.version ? ' (version)' : ''}`);
      assert.deepEqual(summary.slice(0, 5), ['commit legacy a/legacy.bin', `commit tus ${tusPath}`, 'delete legacy a/legacy.bin', 'commit legacy a/kept.bin', 'commit legacy a/kept.bin']);
      assert.deepEqual(summary.slice(5).sort(), [`expire sweep ${tusPath}`, 'expire sweep a/kept.bin', 'expire sweep a/kept.bin (version)'].sort());
      const [commit, tus, deleted] = lines as [AuditLine, AuditLine, AuditLine];
      assert.equal(commit.tenant, 'upload');
      assert.equal(commit.size, 2000);
      assert.match(commit.sha256 ?? '', /^[0-9a-f]{64}$/);
      assert.equal(commit.client, '127.0.0.1');
      assert.equal(commit.user, undefined, 'a v2 slot names no uploader');
      assert.equal(commit.scheme, 'v2');
      assert.equal(tus.user, 'alice@example.org');
      assert.equal(deleted.sha256, commit.sha256);
      assert.equal(deleted.client, '127.0.0.1');
      for (const line of lines) assert.ok(!Number.isNaN(Date.parse(line.time)), line.time);
      assert.equal(lines.find((l) => l.action === 'expire' && l.path === tusPath)?.user, 'alice@example.org');
      assert.ok(!server.logs.some((l) => l.includes('alice@example.org')), 'the uploader is in the info log');
    } finally {
      await server.close();
    }
  });

  it('refuses to start when AuditLogFile cannot be opened, and says why', async () => {
    await assert.rejects(startTestServer({ AuditLogFile: '/proc/no-such-dir/audit.log' }), /ENOENT/);
  });

  it('keeps taking uploads when the audit log cannot be written, and says so once', async () => {
    // /dev/full opens for appending and refuses every write with ENOSPC.
    const server = await startTestServer({ AuditLogFile: '/dev/full' });
    try {
      for (const name of ['a.bin', 'b.bin']) assert.equal((await signedPut(server, name, randomBytes(100))).status, 201);
      assert.deepEqual((await rawRequest(server.url, 'GET', '/upload/b.bin')).status, 200);
      assert.equal(server.logs.filter((l) => /error audit\.write_failed .*cause=ENOSPC/.test(l)).length, 1);
    } finally {
      await server.close();
    }
  });

  it('writes to the new file after logrotate renamed the old one and sent SIGHUP; every line is JSON', async function () {
    this.timeout(60_000);
    const child = await startChildServer({ config: { AuditLogFile: 'audit.log' } });
    try {
      const file = path.join(child.dir, 'audit.log');
      assert.equal((await signedPut({ url: child.url, config: { UploadSubDir: 'upload' } }, 'before.bin', randomBytes(100), { secret: child.secret })).status, 201);
      await rename(file, `${file}.1`);
      process.kill(child.pid, 'SIGHUP');
      const deadline = Date.now() + 10_000;
      while (!(await child.logLines()).some((l) => l.includes('audit.reopened')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.equal((await signedPut({ url: child.url, config: { UploadSubDir: 'upload' } }, 'after.bin', randomBytes(100), { secret: child.secret })).status, 201);
      assert.deepEqual((await auditLines(`${file}.1`)).map((l) => l.path), ['before.bin']);
      assert.deepEqual((await auditLines(file)).map((l) => l.path), ['after.bin']);
    } finally {
      await child.stop();
    }
  });

  it('keeps writing to the file it has when SIGHUP cannot open the path again, and says so', async function () {
    this.timeout(60_000);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-audit-'));
    const child = await startChildServer({ config: { AuditLogFile: path.join(dir, 'audit.log') } });
    try {
      const target = { url: child.url, config: { UploadSubDir: 'upload' } };
      assert.equal((await signedPut(target, 'before.bin', randomBytes(100), { secret: child.secret })).status, 201);
      // The folder is gone from under the path: nothing can be opened there any more.
      await rename(dir, `${dir}.moved`);
      process.kill(child.pid, 'SIGHUP');
      const deadline = Date.now() + 10_000;
      while (!(await child.logLines()).some((l) => l.includes('audit.reopen_failed')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.ok((await child.logLines()).some((l) => /error audit\.reopen_failed .*cause=ENOENT/.test(l)), 'no audit.reopen_failed line');
      assert.equal((await signedPut(target, 'after.bin', randomBytes(100), { secret: child.secret })).status, 201);
      assert.deepEqual((await auditLines(path.join(`${dir}.moved`, 'audit.log'))).map((l) => l.path), ['before.bin', 'after.bin']);
    } finally {
      await child.stop();
      await rm(`${dir}.moved`, { recursive: true, force: true });
      await rm(dir, { recursive: true, force: true });
    }
  });
});
