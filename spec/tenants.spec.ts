// Several signing tenants on one server: each prefix verifies with its own secrets and protocols.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { signSlot, type HmacScheme } from '../middleware/slot-verifier-hmac.js';
import { encodeSlotPath } from '../server/cli-sign.js';
import { rawRequest } from './helpers/http.js';
import { startTestServer, TEST_SECRET, type TestServer } from './helpers/test-server.js';

function putUnder(server: TestServer, prefix: string, slotPath: string, body: Buffer, secret: string, scheme: HmacScheme = 'v') {
  const mac = signSlot(secret, scheme, slotPath, body.length, 'application/octet-stream');
  return rawRequest(server.url, 'PUT', `/${prefix}/${encodeSlotPath(slotPath)}?${scheme}=${mac}`, { 'Content-Length': body.length }, body);
}

// ejabberd's layout: <sha1(bare JID)>/<40 alphanumerics>/<sanitised name>
const userDir = createHash('sha1').update('alice@a.test').digest('hex');
const ejabberdPath = (name: string) => `${userDir}/${randomBytes(20).toString('hex')}/${name}`;

describe('signing tenants', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({
      Tenants: [
        { Prefix: 'upload/a.test', Secret: 'secret-a', Protocols: ['v'], UserDirInPath: true },
        { Prefix: 'files-b', Secret: 'secret-b', PreviousSecrets: ['old-b'], Protocols: ['v', 'v2'] },
      ],
    });
  });
  after(() => server.close());

  it('verifies each prefix with its own secret only', async () => {
    const body = randomBytes(100);
    assert.equal((await putUnder(server, 'upload/a.test', ejabberdPath('a.bin'), body, 'secret-a')).status, 201);
    assert.equal((await putUnder(server, 'upload/a.test', ejabberdPath('b.bin'), body, 'secret-b')).status, 403);
    // The default tenant's secret does not open the more specific prefix nested below it.
    assert.equal((await putUnder(server, 'upload/a.test', ejabberdPath('c.bin'), body, TEST_SECRET)).status, 403);
    assert.equal((await putUnder(server, 'files-b', 'x/d.bin', body, 'secret-b', 'v2')).status, 201);
    assert.equal((await putUnder(server, 'files-b', 'x/e.bin', body, 'secret-a')).status, 403);
    assert.equal((await putUnder(server, 'upload', 'x/f.bin', body, TEST_SECRET)).status, 201);
  });

  it('accepts only the protocols a tenant lists', async () => {
    const body = randomBytes(10);
    const v2 = await putUnder(server, 'upload/a.test', ejabberdPath('v2.bin'), body, 'secret-a', 'v2');
    assert.equal(v2.status, 403);
    assert.equal((await putUnder(server, 'files-b', 'x/token.bin', body, 'secret-b', 'token')).status, 403);
  });

  it('keeps slots of a previous secret working during a rotation', async () => {
    assert.equal((await putUnder(server, 'files-b', 'x/rotated.bin', randomBytes(10), 'old-b')).status, 201);
  });

  it('stores under the prefix and serves each file at the URL it was uploaded to', async () => {
    const slotPath = ejabberdPath('résumé final ü.txt');
    const body = Buffer.from('ejabberd upload');
    assert.equal((await putUnder(server, 'upload/a.test', slotPath, body, 'secret-a')).status, 201);
    assert.deepEqual(await readFile(path.join(server.storeDir, 'upload', 'a.test', ...slotPath.split('/'))), body);
    const got = await rawRequest(server.url, 'GET', `/upload/a.test/${encodeSlotPath(slotPath)}`);
    assert.deepEqual(got.body, body);
  });

  it('records the ejabberd user dir as the uploader', async () => {
    const metaDir = path.join(server.storeDir, '.hmac', 'meta');
    const files = (await readdir(metaDir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile());
    const owners = await Promise.all(files.map(async (e) => (JSON.parse(await readFile(path.join(e.parentPath, e.name), 'utf8')) as { owner?: string }).owner));
    assert.ok(owners.includes(userDir));
  });
});
