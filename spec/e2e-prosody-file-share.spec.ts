// Prosody's built-in mod_http_file_share with http_file_share_base_url pointed at our server: go-sendxmpp and
// slixmpp ask Prosody for slots, PUT to us with the JWT Prosody signed, and every GET URL Prosody handed out
// must serve the same bytes with the type the client announced. A last part sends a name full of characters
// that need percent-encoding through mod_http_upload_external (v2) with slixmpp, which keeps names as they are.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { jwtVerify } from 'jose';
import { ensureDebianPackages } from './helpers/debian-packages.js';
import { PROSODY_BINARIES, PROSODY_FILE_SHARE_BINARIES, prosodyRig, type RunningProsody } from './helpers/prosody.js';
import { TEST_SECRET, type TestServer } from './helpers/test-server.js';
import {
  alarmingLines,
  assertServes,
  committedPaths,
  GO_SENDXMPP_BINARIES,
  goSendxmppSlot,
  sendWithGoSendxmpp,
  SLIXMPP_BINARIES,
  uploadWithSlixmpp,
  type UploadSlot,
} from './helpers/xmpp-clients.js';

const MiB = 1024 * 1024;

/** A JPEG's first bytes (SOI + JFIF APP0), so content sniffers see image/jpeg, then random bytes. */
const jpeg = (size: number) =>
  Buffer.concat([Buffer.from('ffd8ffe000104a46494600010100000100010000', 'hex'), randomBytes(size)]);

interface Sample {
  label: string;
  name: string;
  bytes: Buffer;
  /** What slixmpp is told to announce (slot request and PUT Content-Type). */
  slixmppType: string;
  /** What go-sendxmpp 0.5.6 announces: gabriel-vasile/mimetype sniffs the content, the name plays no part. */
  goSendxmppType: string;
}

const SAMPLES: Sample[] = [
  { label: 'a 0-byte file', name: 'empty.txt', bytes: Buffer.alloc(0), slixmppType: 'text/plain', goSendxmppType: 'text/plain' },
  {
    label: 'a 5 MB random file',
    name: 'random.bin',
    bytes: randomBytes(5 * MiB),
    slixmppType: 'application/octet-stream',
    goSendxmppType: 'application/octet-stream',
  },
  {
    label: 'a name with spaces and non-ASCII letters',
    // Prosody (LuaSocket) leaves '+' literal in the URL: it must stay a '+', not become a space.
    name: 'Grüße aus Łódź – café + notes.txt',
    bytes: Buffer.from('Zażółć gęślą jaźń, naïve café\n'),
    slixmppType: 'text/plain; charset=utf-8',
    goSendxmppType: 'text/plain; charset=utf-8',
  },
  { label: 'a .jpg', name: 'photo.jpg', bytes: jpeg(20_000), slixmppType: 'image/jpeg', goSendxmppType: 'image/jpeg' },
];

/** The slot path (`<slot>/<name>`) of the `upload.committed` line for this slot. */
function committedPath(logs: readonly string[], slot: string): string | undefined {
  return committedPaths(logs).find((p) => p.startsWith(`${slot}/`));
}

/** `<uploadUrl>/<slot>/<encoded name>` → slot and decoded name; fails on any other shape. */
function splitSlotUrl(server: TestServer, url: string): { slot: string; name: string } {
  const prefix = `${server.uploadUrl}/`;
  assert.ok(url.startsWith(prefix), `${url} is not under ${prefix}`);
  const rest = url.slice(prefix.length).split('/');
  assert.equal(rest.length, 2, `${url} is not <base>/<slot>/<name>`);
  return { slot: rest[0]!, name: decodeURIComponent(rest[1]!) };
}

/** alice uploads the file with slixmpp, announcing contentType; returns the GET URL. */
function slixmppUpload(prosody: RunningProsody, file: string, contentType: string): Promise<string> {
  return uploadWithSlixmpp({ jid: `alice@${prosody.domain}`, port: prosody.port }, prosody.uploadJid, file, contentType);
}

interface GoSendxmppSlot extends UploadSlot {
  /** The JWT Prosody put in the slot's Authorization header. */
  token: string;
}

/** alice sends the file to bob with go-sendxmpp; its debug output (-d) shows the slot Prosody answered with. */
async function goSendxmppUpload(prosody: RunningProsody, file: string): Promise<GoSendxmppSlot> {
  const alice = { jid: `alice@${prosody.domain}`, port: prosody.port };
  const slot = goSendxmppSlot(await sendWithGoSendxmpp(alice, `bob@${prosody.domain}`, file, { debug: true }));
  const token = /^Bearer (.+)$/.exec(slot.putHeaders.Authorization ?? '')?.[1];
  assert.ok(token, `unexpected slot: ${JSON.stringify(slot)}`);
  return { ...slot, token: token.trim() };
}

describe('end to end: Prosody mod_http_file_share + go-sendxmpp and slixmpp', function () {
  this.timeout(120_000);

  before(async function () {
    // A fresh machine installs the packages first (about 10 s, more for apt-get update).
    this.timeout(600_000);
    await ensureDebianPackages({
      ...PROSODY_BINARIES,
      ...PROSODY_FILE_SHARE_BINARIES,
      ...GO_SENDXMPP_BINARIES,
      ...SLIXMPP_BINARIES,
    });
  });

  describe('http_file_share (JWT slots)', function () {
    const rig = prosodyRig(
      // No trailing '/': Prosody 0.12.3 gives <base>/<slot>/<name> with or without one.
      (server) => ({ upload: 'http_file_share', baseUrl: server.uploadUrl, secret: TEST_SECRET, sizeLimit: 50 * MiB }),
      // go-sendxmpp needs a recipient for the URL; Prosody keeps the message offline, nobody reads it.
      ['alice', 'bob'],
    );
    const uploaded: Buffer[] = [];

    /** Both clients upload the same file from disk: its name is what they ask Prosody for. */
    async function writeSample(sample: Sample): Promise<string> {
      const { workDir } = rig();
      const file = path.join(workDir, sample.name);
      await writeFile(file, sample.bytes);
      return file;
    }

    for (const sample of SAMPLES) {
      it(`go-sendxmpp: ${sample.label}`, async function () {
        const { server, prosody } = rig();
        const file = await writeSample(sample);
        const slot = await goSendxmppUpload(prosody, file);
        uploaded.push(sample.bytes);

        // Prosody hands out one URL for both PUT and GET: <base>/<slot>/<name>, the JWT in a header.
        assert.equal(slot.putUrl, slot.getUrl);
        const { slot: slotId, name } = splitSlotUrl(server, slot.getUrl);
        // The token is ours (HS256 with Secret) and carries what go-sendxmpp announced in its slot request.
        const { payload: claims } = await jwtVerify(slot.token, new TextEncoder().encode(TEST_SECRET), { algorithms: ['HS256'] });
        assert.equal(claims.slot, slotId);
        assert.equal(claims.filename, name);
        assert.equal(claims.filesize, sample.bytes.length);
        assert.equal(claims.sub, `alice@${prosody.domain}`);
        assert.equal(claims.filetype, sample.goSendxmppType, 'go-sendxmpp announced another type');
        assert.equal(committedPath(server.logs, slotId), `${slotId}/${name}`);

        await assertServes(slot.getUrl, sample.bytes, sample.goSendxmppType);
      });

      it(`slixmpp: ${sample.label}`, async function () {
        const { server, prosody } = rig();
        const file = await writeSample(sample);
        const url = await slixmppUpload(prosody, file, sample.slixmppType);
        uploaded.push(sample.bytes);

        // slixmpp asks for the name as it is; Prosody percent-encodes it into the URL and we decode it back.
        const { slot, name } = splitSlotUrl(server, url);
        assert.equal(name, sample.name);
        assert.equal(committedPath(server.logs, slot), `${slot}/${sample.name}`);

        await assertServes(url, sample.bytes, sample.slixmppType);
      });
    }

    it('stores exactly the uploaded files and logs nothing alarming', async function () {
      const { server } = rig();
      const root = path.join(server.storeDir, server.config.UploadSubDir);
      const entries = await readdir(root, { recursive: true, withFileTypes: true });
      assert.equal(entries.filter((e) => e.isFile()).length, uploaded.length);
      assert.equal(server.logs.filter((l) => l.includes(' upload.committed ') && l.includes(' via=legacy:jwt ')).length, uploaded.length);
      assert.deepEqual(alarmingLines(server.logs), []);
    });
  });

  describe('http_upload_external v2 + slixmpp (names go-sendxmpp would sanitise)', function () {
    const rig = prosodyRig(
      (server) => ({ uploadBaseUrl: `${server.uploadUrl}/`, secret: TEST_SECRET, protocol: 'v2', fileSizeLimit: 50 * MiB }),
      ['alice'],
    );

    it('uploads and serves café & 100% ünïcode.txt under exactly that name', async function () {
      const { server, prosody, workDir } = rig();
      const name = 'café & 100% ünïcode.txt';
      const bytes = Buffer.from('naïve café text, 100% & more\n');
      const file = path.join(workDir, name);
      await writeFile(file, bytes);
      const url = await slixmppUpload(prosody, file, 'text/plain; charset=utf-8');

      const { slot, name: urlName } = splitSlotUrl(server, url);
      assert.equal(urlName, name);
      assert.equal(committedPath(server.logs, slot), `${slot}/${name}`);
      await assertServes(url, bytes, 'text/plain; charset=utf-8');
      assert.deepEqual(alarmingLines(server.logs), []);
    });
  });
});
