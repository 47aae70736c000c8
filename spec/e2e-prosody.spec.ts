// The whole chain with real software: go-sendxmpp asks Prosody's mod_http_upload_external for a slot, PUTs to
// our server with the MAC Prosody made, and sends the GET URL to bob, who downloads it over plain HTTP.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ensureDebianPackages } from './helpers/debian-packages.js';
import { PROSODY_BINARIES, prosodyRig } from './helpers/prosody.js';
import { TEST_SECRET } from './helpers/test-server.js';
import {
  alarmingLines,
  assertServes,
  committedPaths,
  GO_SENDXMPP_BINARIES,
  Inbox,
  lastCommittedPath,
  sendWithGoSendxmpp,
} from './helpers/xmpp-clients.js';

describe('end to end: Prosody mod_http_upload_external + go-sendxmpp', function () {
  this.timeout(120_000);

  before(async function () {
    // A fresh machine installs the packages first (about 10 s, more for apt-get update).
    this.timeout(600_000);
    await ensureDebianPackages({ ...PROSODY_BINARIES, ...GO_SENDXMPP_BINARIES });
  });

  for (const protocol of ['v1', 'v2'] as const) {
    describe(`protocol ${protocol}`, function () {
      const rig = prosodyRig(
        (server) => ({ uploadBaseUrl: `${server.uploadUrl}/`, secret: TEST_SECRET, protocol, fileSizeLimit: 50 * 1024 * 1024 }),
        ['alice', 'bob'],
      );
      let inbox: Inbox | undefined;
      const uploaded: Buffer[] = [];

      before(function () {
        const { prosody } = rig();
        // Prosody keeps messages for bob until his client announces itself, so no wait for the login here.
        inbox = Inbox.open({ jid: `bob@${prosody.domain}`, port: prosody.port });
      });

      after(function () {
        inbox?.close();
      });

      /** alice sends the file to bob; returns the URL bob received after checking it serves the same bytes. */
      async function sendAndDownload(name: string, bytes: Buffer): Promise<string> {
        const { server, prosody, workDir } = rig();
        assert.ok(inbox);
        const file = path.join(workDir, name);
        await writeFile(file, bytes);
        await sendWithGoSendxmpp({ jid: `alice@${prosody.domain}`, port: prosody.port }, `bob@${prosody.domain}`, file);
        const url = await inbox.next();
        uploaded.push(bytes);

        assert.ok(url.startsWith(`${server.uploadUrl}/`), `bob received ${url}`);
        // The URL Prosody handed out must name exactly the slot our server verified and stored.
        const committed = lastCommittedPath(server.logs);
        assert.equal(decodeURIComponent(new URL(url).pathname), `/${server.config.UploadSubDir}/${committed}`);

        await assertServes(url, bytes);
        return url;
      }

      it('uploads and serves an empty file', async function () {
        await sendAndDownload('empty.txt', Buffer.alloc(0));
      });

      it('uploads and serves a file named with spaces, %, & and non-ASCII letters', async function () {
        // go-sendxmpp asks for a slot named caf_100_n_code.txt (it sanitises names itself), so this checks
        // that the upload works, not our percent-decoding: other clients send such names as they are.
        await sendAndDownload('café & 100% ünïcode.txt', Buffer.from('naïve café text\n'));
      });

      it('uploads and serves a 5 MB random file', async function () {
        await sendAndDownload('random.bin', randomBytes(5 * 1024 * 1024));
      });

      it('uploads and serves a .jpg', async function () {
        const url = await sendAndDownload('photo.jpg', randomBytes(4096));
        assert.match(url, /\.jpg$/);
      });

      it('stores exactly the uploaded files and nothing else', async function () {
        const { server } = rig();
        const root = path.join(server.storeDir, server.config.UploadSubDir);
        const entries = await readdir(root, { recursive: true, withFileTypes: true });
        const files = entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
        const sizes = await Promise.all(files.map(async (f) => (await stat(f)).size));
        assert.equal(files.length, uploaded.length);
        assert.deepEqual(sizes.sort((a, b) => a - b), uploaded.map((b) => b.length).sort((a, b) => a - b));
        assert.equal(committedPaths(server.logs).length, uploaded.length);
        // A real client used normally (it even drops each connection after the 201) is nothing to warn about.
        assert.deepEqual(alarmingLines(server.logs), []);
      });
    });
  }
});
