// The whole chain with real software: go-sendxmpp and slixmpp ask ejabberd's mod_http_upload (external mode)
// for a slot, PUT to our server with the `?v=` MAC ejabberd made over `<sha1(jid)>/<rand>/<name> <size>`, and
// the GET URL ejabberd handed out must serve the same bytes (docs/protocols.md, "Other XMPP servers").
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ConfigInput } from '../server/config-schema.js';
import { ensureDebianPackages } from './helpers/debian-packages.js';
import { EJABBERD_BINARIES, startEjabberd, type EjabberdHost, type RunningEjabberd } from './helpers/ejabberd.js';
import { startTestServer, TEST_SECRET, type TestServer } from './helpers/test-server.js';
import {
  alarmingLines,
  assertServes,
  committedPaths,
  E2E_PASSWORD,
  GO_SENDXMPP_BINARIES,
  goSendxmppSlot,
  Inbox,
  lastCommittedPath,
  sendWithGoSendxmpp,
  SLIXMPP_BINARIES,
  uploadWithSlixmpp,
  type XmppLogin,
} from './helpers/xmpp-clients.js';

const MAX_SIZE = 50 * 1024 * 1024;

type Client = 'go-sendxmpp' | 'slixmpp';

/** Runs every cleanup step in order, even after one fails, then reports the first failure. */
async function cleanUp(...steps: Array<() => unknown>): Promise<void> {
  const failures: unknown[] = [];
  for (const step of steps) {
    try {
      await step();
    } catch (err) {
      failures.push(err);
    }
  }
  if (failures.length > 0) throw failures[0];
}

/** One XMPP domain in a test: its ejabberd host entry plus bob's inbox for go-sendxmpp's messages. */
interface Domain {
  host: EjabberdHost;
  inbox?: Inbox;
}

/** A file our server stored: through which domain, at which slot path (below that domain's prefix). */
interface Upload {
  domain: Domain;
  slot: string;
  bytes: Buffer;
}

/** What one describe block starts (our server, ejabberd, inboxes), and the uploads it made. */
class Rig {
  server: TestServer | undefined;
  ejabberd: RunningEjabberd | undefined;
  workDir: string | undefined;
  domains: Domain[] = [];
  readonly uploads: Upload[] = [];

  /** hosts builds ejabberd's virtual hosts from our server's URL, known only once it listens. */
  async start(overrides: Partial<ConfigInput>, hosts: (server: TestServer) => EjabberdHost[]): Promise<void> {
    this.workDir = await mkdtemp(path.join(os.tmpdir(), 'hfs-e2e-'));
    this.server = await startTestServer({ MaxUploadSize: '50MiB', ...overrides });
    this.domains = hosts(this.server).map((host) => ({ host }));
    this.ejabberd = await startEjabberd({ hosts: this.domains.map((d) => d.host), maxSize: MAX_SIZE });
    for (const domain of this.domains) {
      await this.ejabberd.register('alice', domain.host.domain, E2E_PASSWORD);
      await this.ejabberd.register('bob', domain.host.domain, E2E_PASSWORD);
      // ejabberd keeps messages for bob (mod_offline) until his client is online, so no wait for the login.
      domain.inbox = Inbox.open(this.login('bob', domain));
    }
  }

  async stop(): Promise<void> {
    await cleanUp(
      () => this.domains.forEach((d) => d.inbox?.close()),
      () => this.ejabberd?.stop(),
      () => this.server?.close(),
      () => this.workDir && rm(this.workDir, { recursive: true, force: true }),
    );
  }

  login(user: string, domain: Domain): XmppLogin {
    assert.ok(this.ejabberd);
    return { jid: `${user}@${domain.host.domain}`, port: this.ejabberd.port };
  }

  /** Writes the file into the work folder, for a client to upload. */
  async writeFile(name: string, bytes: Buffer): Promise<string> {
    assert.ok(this.workDir);
    const file = path.join(this.workDir, name);
    await writeFile(file, bytes);
    return file;
  }

  /** alice@domain uploads the file with the client; returns the GET URL ejabberd handed out. */
  async upload(client: Client, domain: Domain, file: string): Promise<string> {
    assert.ok(domain.inbox);
    const alice = this.login('alice', domain);
    if (client === 'slixmpp') return uploadWithSlixmpp(alice, `upload.${domain.host.domain}`, file);
    // go-sendxmpp sends the GET URL to bob as the message body.
    await sendWithGoSendxmpp(alice, `bob@${domain.host.domain}`, file);
    return domain.inbox.next();
  }

  /** The server's own account of a failed step is the fastest way to the cause. */
  printServerLog(): void {
    console.error(this.server?.logs.slice(-20).join('\n'));
  }

  /** Uploads, then checks the URL's shape, that our server committed exactly that slot, and the bytes served. */
  async uploadAndDownload(client: Client, domain: Domain, name: string, bytes: Buffer): Promise<string> {
    assert.ok(this.server);
    const url = await this.upload(client, domain, await this.writeFile(name, bytes));
    assert.ok(url.startsWith(`${domain.host.getUrl}/`), `${client} got ${url}`);
    // ejabberd's slot: <hex sha1 of the bare JID>/<40 alphanumerics>/<name sanitised to [\p{L}\p{N}_.-]>.
    const slot = decodeURIComponent(new URL(url).pathname).slice(new URL(domain.host.getUrl).pathname.length + 1);
    this.uploads.push({ domain, slot, bytes });

    const [userDir, rand, fileName, ...rest] = slot.split('/');
    assert.equal(userDir, userDirOf(`alice@${domain.host.domain}`));
    assert.match(rand ?? '', /^[A-Za-z0-9]{40}$/);
    assert.match(fileName ?? '', /^[\p{L}\p{N}_.-]+$/u);
    assert.deepEqual(rest, []);
    // The URL ejabberd handed out must name exactly the slot our server verified and stored.
    assert.equal(lastCommittedPath(this.server.logs), slot);

    await assertServes(url, bytes);
    return url;
  }
}

/** ejabberd's default `jid_in_url: sha1`: the user directory is the hex SHA-1 of the bare JID. */
function userDirOf(bareJid: string): string {
  return createHash('sha1').update(bareJid, 'utf8').digest('hex');
}

/** The files below dir, as '/'-separated paths relative to it. */
async function filesBelow(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name)).split(path.sep).join('/'));
}

/** Every committed file's metadata document (`<StoreDir>/.hmac/meta/<h[0..2]>/<h>.json`). */
async function storedMetadata(server: TestServer): Promise<Array<{ path: string; size: number; owner?: string }>> {
  const dir = path.join(server.storeDir, '.hmac', 'meta');
  const files = (await filesBelow(dir)).filter((f) => f.endsWith('.json'));
  return Promise.all(files.map(async (f) => JSON.parse(await readFile(path.join(dir, f), 'utf8')) as { path: string; size: number; owner?: string }));
}

describe('end to end: ejabberd mod_http_upload (external_secret) + go-sendxmpp and slixmpp', function () {
  this.timeout(120_000);

  before(async function () {
    // A fresh machine installs the packages first (ejabberd pulls in Erlang: allow for a slow mirror).
    this.timeout(600_000);
    await ensureDebianPackages({ ...EJABBERD_BINARIES, ...GO_SENDXMPP_BINARIES, ...SLIXMPP_BINARIES });
  });

  describe('one virtual host signing for the default tenant', function () {
    const rig = new Rig();
    // go-sendxmpp sanitises names itself; slixmpp sends them as they are and ejabberd turns ' ' into '_'.
    const FANCY_NAME = 'résumé final ü.txt';

    before(async function () {
      this.timeout(60_000);
      // put_url and get_url without a trailing slash: ejabberd joins them to the slot path with '/'.
      await rig.start({}, (server) => [{ domain: 'a.test', putUrl: server.uploadUrl, getUrl: server.uploadUrl, secret: TEST_SECRET }]);
    });

    afterEach(function () {
      if (this.currentTest?.state === 'failed') rig.printServerLog();
    });

    after(async function () {
      this.timeout(60_000);
      await rig.stop();
    });

    for (const client of ['go-sendxmpp', 'slixmpp'] as const) {
      it(`${client}: uploads and serves a 5 MB random file`, async function () {
        await rig.uploadAndDownload(client, rig.domains[0]!, `random-${client}.bin`, randomBytes(5 * 1024 * 1024));
      });

      it(`${client}: uploads and serves a file named with spaces and non-ASCII letters`, async function () {
        const url = await rig.uploadAndDownload(client, rig.domains[0]!, FANCY_NAME, Buffer.from(`naïve café text from ${client}\n`));
        // ejabberd keeps letters of any script and replaces everything else by '_'.
        if (client === 'slixmpp') assert.ok(decodeURIComponent(url).endsWith('/résumé_final_ü.txt'), url);
      });
    }

    it('ejabberd refuses a slot for an empty file, so it never reaches our server', async function () {
      const before = committedPaths(rig.server!.logs).length;
      const file = await rig.writeFile('empty.txt', Buffer.alloc(0));
      // ejabberd answers the slot request with bad-request; go-sendxmpp reports it and exits with status 1.
      await assert.rejects(rig.upload('go-sendxmpp', rig.domains[0]!, file), /Error while requesting upload slot/);
      assert.equal(committedPaths(rig.server!.logs).length, before);
    });

    it('stores exactly the uploaded files, with nothing to warn about', async function () {
      const server = rig.server!;
      assert.equal((await filesBelow(path.join(server.storeDir, server.config.UploadSubDir))).length, rig.uploads.length);
      assert.equal(committedPaths(server.logs).length, rig.uploads.length);
      assert.deepEqual(alarmingLines(server.logs), []);
    });
  });

  describe('two virtual hosts, each with its own prefix and secret', function () {
    const rig = new Rig();
    const prefixOf = (domain: string) => `upload/${domain}`;

    before(async function () {
      this.timeout(60_000);
      // Typed against the config schema, so a renamed or reshaped key fails the type check here too. UserDirInPath:
      // the first segment of an ejabberd slot is the uploader's user dir, which the metadata keeps as the owner.
      const overrides: Partial<ConfigInput> = {
        Tenants: ['a.test', 'b.test'].map((d) => ({ Prefix: prefixOf(d), Secret: `secret-${d}`, Protocols: ['v' as const], UserDirInPath: true })),
      };
      await rig.start(overrides, (server) =>
        ['a.test', 'b.test'].map((d) => ({ domain: d, putUrl: `${server.url}/${prefixOf(d)}`, getUrl: `${server.url}/${prefixOf(d)}`, secret: `secret-${d}` })),
      );
    });

    afterEach(function () {
      if (this.currentTest?.state === 'failed') rig.printServerLog();
    });

    after(async function () {
      this.timeout(60_000);
      await rig.stop();
    });

    it('each host signs for its own prefix, and both clients upload through both hosts', async function () {
      // uploadAndDownload checks that each URL lies below its own host's prefix and serves the bytes.
      for (const domain of rig.domains) {
        for (const client of ['go-sendxmpp', 'slixmpp'] as const) {
          await rig.uploadAndDownload(client, domain, `${domain.host.domain}-${client}.bin`, randomBytes(64 * 1024));
        }
      }
      const server = rig.server!;
      // Each tenant's files live under its own prefix in the store, and nowhere else.
      const stored = await filesBelow(server.storeDir).then((files) => files.filter((f) => !f.startsWith('.hmac/')));
      const expected = rig.uploads.map((u) => `${prefixOf(u.domain.host.domain)}/${u.slot}`);
      assert.deepEqual(stored.sort(), expected.sort());
      for (const domain of rig.domains) {
        assert.equal((await filesBelow(path.join(server.storeDir, prefixOf(domain.host.domain)))).length, 2, domain.host.domain);
      }
      // The metadata names each file's uploader: the user dir, the hex SHA-1 of alice's bare JID on that host.
      const owners = Object.fromEntries((await storedMetadata(server)).map((m) => [m.path, { owner: m.owner, size: m.size }]));
      const uploaders = Object.fromEntries(rig.uploads.map((u) => [u.slot, { owner: userDirOf(`alice@${u.domain.host.domain}`), size: u.bytes.length }]));
      assert.deepEqual(owners, uploaders);
      assert.notEqual(userDirOf('alice@a.test'), userDirOf('alice@b.test'));
      assert.deepEqual(alarmingLines(server.logs), []);
    });

    it("a.test's prefix refuses a slot signed with b.test's secret", async function () {
      const server = rig.server!;
      const [a, b] = rig.domains as [Domain, Domain];
      const bytes = randomBytes(4096);
      const file = await rig.writeFile('cross-tenant.bin', bytes);
      // alice@b.test uploads through b.test; go-sendxmpp's debug output shows the PUT URL ejabberd signed with
      // secret-b.test. The v MAC covers "<slot> <size>", not the prefix, so the only thing that can stop the
      // same URL under a.test's prefix is that a.test checks it against its own secret.
      const slot = goSendxmppSlot(await sendWithGoSendxmpp(rig.login('alice', b), `bob@${b.host.domain}`, file, { debug: true }));
      assert.equal(await b.inbox!.next(), slot.getUrl);
      const bPrefix = `${b.host.putUrl}/`;
      assert.ok(slot.putUrl.startsWith(bPrefix), slot.putUrl);
      assert.match(slot.putUrl, /\?v=[0-9a-f]{64}$/);
      await assertServes(slot.getUrl, bytes);
      const alarmsBefore = alarmingLines(server.logs).length;

      const replayed = `${a.host.putUrl}/${slot.putUrl.slice(bPrefix.length)}`;
      const res = await fetch(replayed, { method: 'PUT', body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });
      assert.equal(res.status, 403, await res.text());
      // Nothing stored under a.test's prefix: the slot exists only in b.test's tree.
      const replayedPath = new URL(replayed).pathname;
      assert.equal((await fetch(`${server.url}${replayedPath}`)).status, 404);
      const stored = await filesBelow(path.join(server.storeDir, prefixOf(a.host.domain)));
      assert.ok(!stored.some((f) => f.endsWith('/cross-tenant.bin')), stored.join('\n'));
      // The refusal is logged as a bad signature, for fail2ban; nothing else is alarming.
      const alarms = alarmingLines(server.logs).slice(alarmsBefore);
      assert.equal(alarms.length, 1, alarms.join('\n'));
      assert.match(alarms[0]!, / auth\.failed .*reason=mac_invalid/);
      assert.ok(alarms[0]!.includes(`path=${replayedPath}`), alarms[0]);
    });
  });
});
