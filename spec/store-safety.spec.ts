// What the store leaves on disk: nothing outside StoreDir even through a planted symlink, and owner-and-group
// permissions only on every file and folder it creates.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { lstat, mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { rawRequest, signedPut } from './helpers/http.js';
import { grantFor, tusUpload } from './helpers/tus-client.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

describe('the store on disk', () => {
  describe('a symlink planted in the upload tree', () => {
    let server: TestServer;
    let elsewhere: string;
    before(async () => {
      server = await startTestServer();
      elsewhere = await mkdtemp(path.join(os.tmpdir(), 'hfs-elsewhere-'));
      await symlink(elsewhere, path.join(server.storeDir, 'upload', 'lnk'));
    });
    after(async () => {
      await server.close();
      await rm(elsewhere, { recursive: true, force: true });
    });

    it('refuses a PUT through it with 400 and creates no folder outside the store', async () => {
      for (const slot of ['lnk/new/deeper/f.txt', 'lnk/f.txt', 'lnk/new/f.txt']) {
        const res = await signedPut(server, slot, Buffer.from('escape'));
        assert.equal(res.status, 400, slot);
        assert.deepEqual(await readdir(elsewhere), [], `${slot} created something outside StoreDir`);
      }
    });

    it('refuses a tus upload committed through it', async () => {
      const grant = await grantFor(server, { prefix: 'lnk/tus' });
      await assert.rejects(tusUpload(server, randomBytes(10), grant), /400/);
      assert.deepEqual(await readdir(elsewhere), []);
    });
  });

  describe('file modes', () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer({ EnableVersioning: true, DeduplicationEnabled: true, AESEnabled: true });
    });
    after(() => server.close());

    it('gives every stored file 0640 at most and every folder 0750 at most, through both doors', async () => {
      const body = randomBytes(5000);
      assert.equal((await signedPut(server, 'modes/a.bin', body)).status, 201);
      assert.equal((await signedPut(server, 'modes/a.bin', randomBytes(10))).status, 201);
      assert.equal((await signedPut(server, 'modes/b.bin', body)).status, 201);
      const grant = await grantFor(server);
      const done = await tusUpload(server, body, grant, { chunkSize: 1000 });
      assert.equal((await rawRequest(server.url, 'GET', new URL(done.downloadUrl).pathname)).status, 200);
      // An unfinished upload too: its data file and record sit in the tus folder.
      const created = await rawRequest(server.url, 'POST', '/files/', {
        'Tus-Resumable': '1.0.0',
        Authorization: `Bearer ${grant}`,
        'Upload-Length': 10,
        'Upload-Metadata': `filename ${Buffer.from('open.bin').toString('base64')}`,
      });
      assert.equal(created.status, 201);

      const loose: string[] = [];
      let files = 0;
      for (const entry of await readdir(server.storeDir, { recursive: true })) {
        const full = path.join(server.storeDir, entry);
        const info = await lstat(full);
        const mode = info.mode & 0o777;
        if (info.isDirectory() ? (mode & 0o027) !== 0 : (mode & 0o137) !== 0) loose.push(`${entry} ${mode.toString(8)}`);
        if (info.isFile()) files += 1;
      }
      assert.ok(files >= 10, `only ${files} files looked at`);
      assert.deepEqual(loose, []);
    });
  });
});
