// The whole chain with real software: go-sendxmpp asks Prosody's mod_http_upload_external for a slot, PUTs to
// our server with the MAC Prosody made, and sends the GET URL to bob, who downloads it over plain HTTP.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { ensureDebianPackages } from './helpers/debian-packages.js';
import { PROSODY_BINARIES, startProsody, type RunningProsody } from './helpers/prosody.js';
import { startTestServer, TEST_SECRET, type TestServer } from './helpers/test-server.js';

const run = promisify(execFile);
const PASS = 'e2e-password';
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** Bob's side: `go-sendxmpp -l` prints each received message as `<time> <from>: <body>`. */
class Inbox {
  private readonly bodies: string[] = [];
  private waiter: (() => void) | undefined;
  private stderr = '';

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    createInterface({ input: child.stdout }).on('line', (line) => {
      const match = /^\S+ \S+: (.*)$/.exec(line);
      if (match?.[1] !== undefined) this.bodies.push(match[1]);
      this.waiter?.();
    });
    child.on('error', (err) => {
      this.stderr += err.message;
    });
    child.stderr.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString('utf8')).slice(-2000);
    });
  }

  static open(prosody: RunningProsody, user: string): Inbox {
    // stdin stays an open pipe: with stdin at EOF, go-sendxmpp -l logs "EOF" in a tight loop (megabytes a second).
    const child = spawn('go-sendxmpp', ['-n', '-u', `${user}@${prosody.domain}`, '-p', PASS, '-j', `127.0.0.1:${prosody.port}`, '-l']);
    return new Inbox(child);
  }

  async next(timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (this.bodies.length === 0) {
      if (this.child.exitCode !== null) throw new Error(`go-sendxmpp -l exited: ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`no message within ${timeoutMs} ms; go-sendxmpp -l said: ${this.stderr}`);
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, 200);
      });
    }
    return this.bodies.shift()!;
  }

  close(): void {
    if (this.child.exitCode === null) this.child.kill('SIGTERM');
  }
}

/** The slot path of the newest `upload.committed path=<path> …` line (JSON-quoted when it has spaces). */
function lastCommittedPath(logs: readonly string[]): string | undefined {
  const line = logs.filter((l) => l.includes(' upload.committed ')).at(-1);
  const raw = line && /\bpath=("(?:[^"\\]|\\.)*"|\S+)/.exec(line)?.[1];
  if (!raw) return undefined;
  return raw.startsWith('"') ? (JSON.parse(raw) as string) : raw;
}

describe('end to end: Prosody mod_http_upload_external + go-sendxmpp', function () {
  this.timeout(120_000);

  before(async function () {
    // A fresh machine installs the packages first (about 10 s, more for apt-get update).
    this.timeout(600_000);
    await ensureDebianPackages({ ...PROSODY_BINARIES, 'go-sendxmpp': 'go-sendxmpp' });
  });

  for (const protocol of ['v1', 'v2'] as const) {
    describe(`protocol ${protocol}`, function () {
      let server: TestServer | undefined;
      let prosody: RunningProsody | undefined;
      let inbox: Inbox | undefined;
      let workDir: string | undefined;
      const uploaded: Buffer[] = [];

      before(async function () {
        workDir = await mkdtemp(path.join(os.tmpdir(), 'hfs-e2e-'));
        server = await startTestServer({ MaxUploadSize: '50MiB' });
        prosody = await startProsody({ uploadBaseUrl: `${server.uploadUrl}/`, secret: TEST_SECRET, protocol, fileSizeLimit: 50 * 1024 * 1024 });
        await prosody.register('alice', PASS);
        await prosody.register('bob', PASS);
        // Prosody keeps messages for bob until his client announces itself, so no wait for the login here.
        inbox = Inbox.open(prosody, 'bob');
      });

      afterEach(function () {
        // The server's own account of a failed step is the fastest way to the cause.
        if (this.currentTest?.state === 'failed') console.error(server?.logs.slice(-20).join('\n'));
      });

      after(async function () {
        inbox?.close();
        await prosody?.stop();
        await server?.close();
        if (workDir) await rm(workDir, { recursive: true, force: true });
      });

      /** alice sends the file to bob; returns the URL bob received after checking it serves the same bytes. */
      async function sendAndDownload(name: string, bytes: Buffer): Promise<string> {
        assert.ok(server && prosody && inbox && workDir);
        const file = path.join(workDir, name);
        await writeFile(file, bytes);
        const xmpp = ['-n', '-u', `alice@${prosody.domain}`, '-p', PASS, '-j', `127.0.0.1:${prosody.port}`];
        await run('go-sendxmpp', [...xmpp, '-h', file, `bob@${prosody.domain}`], { timeout: 60_000 }).catch((err: unknown) => {
          const { stdout, stderr } = err as { stdout?: string; stderr?: string };
          throw new Error(`go-sendxmpp failed to send ${name}: ${stdout ?? ''}${stderr ?? ''}`, { cause: err });
        });
        const url = await inbox.next();
        uploaded.push(bytes);

        assert.ok(url.startsWith(`${server.uploadUrl}/`), `bob received ${url}`);
        // The URL Prosody handed out must name exactly the slot our server verified and stored.
        const committed = lastCommittedPath(server.logs);
        assert.equal(decodeURIComponent(new URL(url).pathname), `/${server.config.UploadSubDir}/${committed}`);

        const res = await fetch(url);
        assert.equal(res.status, 200);
        assert.equal(res.headers.get('content-length'), String(bytes.length));
        assert.equal(sha256(Buffer.from(await res.arrayBuffer())), sha256(bytes));
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
        assert.ok(server);
        const root = path.join(server.storeDir, server.config.UploadSubDir);
        const entries = await readdir(root, { recursive: true, withFileTypes: true });
        const files = entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
        const sizes = await Promise.all(files.map(async (f) => (await stat(f)).size));
        assert.equal(files.length, uploaded.length);
        assert.deepEqual(sizes.sort((a, b) => a - b), uploaded.map((b) => b.length).sort((a, b) => a - b));
        assert.equal(server.logs.filter((l) => l.includes(' upload.committed ')).length, uploaded.length);
        // A real client used normally (it even drops each connection after the 201) is nothing to warn about.
        assert.deepEqual(server.logs.filter((l) => / (warn|error) /.test(l)), []);
      });
    });
  }
});
