// A tenant nested below the default prefix is reachable only through that tenant, however its prefix is
// percent-encoded in the URL, and no upload grant can point into it either.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { hmacHex, signSlot, versionsMessage } from '../middleware/slot-verifier-hmac.js';
import { encodeSlotPath } from '../server/cli-sign.js';
import { rawRequest } from './helpers/http.js';
import { grantFor } from './helpers/tus-client.js';
import { startTestServer, TEST_SECRET, type TestServer } from './helpers/test-server.js';

const NESTED = 'a.example.org';
const SECRET_A = 'secret-for-a';
const DELETE_SECRET = 'delete-secret';

// Every way a URL can spell "a.example.org" below /upload/ that a server might decode into the same folder.
const SPELLINGS = ['a%2Eexample.org', 'a%2eexample.org', 'a.example%2Eorg', '%61.example.org', '%61%2E%65xample.org'];

async function treeOf(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true }).catch(() => [] as string[])).sort();
}

describe('tenant isolation under every encoding of a nested prefix', () => {
  let server: TestServer;
  const victimPath = 'victim/photo.bin';
  const victimBody = randomBytes(64);
  const nestedTree = () => treeOf(path.join(server.storeDir, 'upload', NESTED));

  before(async () => {
    server = await startTestServer({ DeleteSecret: DELETE_SECRET, EnableVersioning: true, Tenants: [{ Prefix: `upload/${NESTED}`, Secret: SECRET_A }] });
    const mac = signSlot(SECRET_A, 'v', victimPath, victimBody.length, 'application/octet-stream');
    const put = await rawRequest(server.url, 'PUT', `/upload/${NESTED}/${victimPath}?v=${mac}`, { 'Content-Length': victimBody.length }, victimBody);
    assert.equal(put.status, 201);
  });
  after(() => server.close());

  for (const spelling of SPELLINGS) {
    it(`PUT /upload/${spelling}/… signed with the default secret cannot write into the nested tenant's tree`, async () => {
      const before = await nestedTree();
      const slot = `${NESTED}/planted/${spelling.length}.bin`;
      const body = randomBytes(16);
      const mac = signSlot(TEST_SECRET, 'v', slot, body.length, 'application/octet-stream');
      const res = await rawRequest(server.url, 'PUT', `/upload/${spelling}/planted/${spelling.length}.bin?v=${mac}`, { 'Content-Length': body.length }, body);
      assert.equal(res.status, 403);
      assert.deepEqual(await nestedTree(), before);
    });

    it(`DELETE /upload/${spelling}/… with the default secret's token cannot remove the nested tenant's file`, async () => {
      const token = hmacHex(TEST_SECRET, `${NESTED}/${victimPath}\0${DELETE_SECRET}`);
      const res = await rawRequest(server.url, 'DELETE', `/upload/${spelling}/${victimPath}?token=${token}`);
      assert.equal(res.status, 403);
      const got = await rawRequest(server.url, 'GET', `/upload/${NESTED}/${victimPath}`);
      assert.equal(got.status, 200);
      assert.deepEqual(got.body, victimBody);
    });

    it(`GET /upload/${spelling}/…?versions= with the default secret's MAC lists nothing of the nested tenant`, async () => {
      const mac = hmacHex(TEST_SECRET, versionsMessage(`${NESTED}/${victimPath}`));
      const res = await rawRequest(server.url, 'GET', `/upload/${spelling}/${victimPath}?versions=${mac}`);
      assert.equal(res.status, 403);
    });

    it(`GET /upload/${spelling}/… serves the nested tenant's file as its own URL does`, async () => {
      const res = await rawRequest(server.url, 'GET', `/upload/${spelling}/${victimPath}`);
      assert.equal(res.status, 200);
      assert.deepEqual(res.body, victimBody);
    });
  }

  it('a PUT signed with the nested tenant\'s secret works through an encoded spelling of its prefix', async () => {
    const slot = 'mine/encoded.bin';
    const body = randomBytes(8);
    const mac = signSlot(SECRET_A, 'v', slot, body.length, 'application/octet-stream');
    const res = await rawRequest(server.url, 'PUT', `/upload/a%2Eexample.org/${slot}?v=${mac}`, { 'Content-Length': body.length }, body);
    assert.equal(res.status, 201);
    assert.ok((await nestedTree()).includes(path.join('mine', 'encoded.bin')));
  });

  it("refuses a tus grant whose prefix points into the nested tenant's tree, and creates nothing", async () => {
    const before = await nestedTree();
    for (const prefix of [NESTED, `${NESTED}/deeper`]) {
      const grant = await grantFor(server, { prefix });
      const res = await rawRequest(server.url, 'POST', '/files/', {
        'Tus-Resumable': '1.0.0',
        Authorization: `Bearer ${grant}`,
        'Upload-Length': 4,
        'Upload-Metadata': `filename ${Buffer.from('x.bin').toString('base64')}`,
      });
      assert.equal(res.status, 400, res.body.toString());
      assert.match(res.body.toString(), /another tenant/);
    }
    assert.deepEqual(await nestedTree(), before);
  });

  it('keeps the default tenant working for names that merely start like the nested prefix', async () => {
    const slot = `${NESTED}x/file.bin`;
    const body = randomBytes(8);
    const res = await rawRequest(server.url, 'PUT', `/upload/${encodeSlotPath(slot)}?v=${signSlot(TEST_SECRET, 'v', slot, body.length, '')}`, { 'Content-Length': body.length }, body);
    assert.equal(res.status, 201);
  });
});
