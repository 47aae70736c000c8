// The XMPP clients the end-to-end suites drive against a local Prosody or ejabberd, and what they read back:
// go-sendxmpp sending a file (and, with -l, a recipient's inbox), slixmpp through spec/fixtures/slixmpp-upload.py,
// the download of a GET URL, and the slot paths our server's log says it committed.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The password of every account the suites register. */
export const E2E_PASSWORD = 'e2e-password';

/** Debian's Python: python3-slixmpp is installed for it, not for whatever python3 comes first on PATH. */
export const DEBIAN_PYTHON = '/usr/bin/python3';
const SLIXMPP_UPLOAD = fileURLToPath(new URL('../fixtures/slixmpp-upload.py', import.meta.url));

/** What go-sendxmpp needs, mapped to the Debian package that provides it (for ensureDebianPackages). */
export const GO_SENDXMPP_BINARIES: Record<string, string> = { 'go-sendxmpp': 'go-sendxmpp' };

/** The same for uploadWithSlixmpp. */
export const SLIXMPP_BINARIES: Record<string, string> = {
  [DEBIAN_PYTHON]: 'python3',
  '/usr/lib/python3/dist-packages/slixmpp/plugins/xep_0363': 'python3-slixmpp',
  // slixmpp's upload_file uses aiohttp, which python3-slixmpp only recommends.
  '/usr/lib/python3/dist-packages/aiohttp': 'python3-aiohttp',
};

/** An account (password E2E_PASSWORD) on a local XMPP server: c2s on 127.0.0.1, STARTTLS, self-signed certificate. */
export interface XmppLogin {
  jid: string;
  port: number;
}

/** go-sendxmpp's login options; -n: do not verify the server's self-signed certificate. */
const goSendxmppLogin = (login: XmppLogin) => ['-n', '-u', login.jid, '-p', E2E_PASSWORD, '-j', `127.0.0.1:${login.port}`];

/** A failed client run as an error that shows what the client printed. */
function clientFailed(what: string, err: unknown): Error {
  const { stdout, stderr } = err as { stdout?: string; stderr?: string };
  return new Error(`${what}: ${(stdout ?? '').slice(-4000)}${stderr ?? ''}`, { cause: err });
}

export interface GoSendxmppOptions {
  /** -d: go-sendxmpp prints the XMPP traffic, the upload slot among it. */
  debug?: boolean;
  timeoutMs?: number;
}

/**
 * `go-sendxmpp -h FILE TO`: uploads the file over XEP-0363 and sends its GET URL to `to` as the message body.
 * Returns what go-sendxmpp printed (stdout, then stderr): with debug, the XMPP traffic, for goSendxmppSlot.
 */
export async function sendWithGoSendxmpp(
  from: XmppLogin,
  to: string,
  file: string,
  { debug = false, timeoutMs = 60_000 }: GoSendxmppOptions = {},
): Promise<string> {
  const args = [...(debug ? ['-d'] : []), ...goSendxmppLogin(from), '-h', file, to];
  try {
    const { stdout, stderr } = await run('go-sendxmpp', args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 });
    return stdout + stderr;
  } catch (err) {
    throw clientFailed(`go-sendxmpp failed to send ${path.basename(file)}`, err);
  }
}

/** An XEP-0363 slot as the XMPP server answered it. */
export interface UploadSlot {
  putUrl: string;
  getUrl: string;
  /** The headers the slot tells the client to send with its PUT (Authorization, Cookie, Expires). */
  putHeaders: Record<string, string>;
}

const unescapeXml = (text: string) =>
  text.replace(/&(amp|apos|quot|lt|gt);/g, (_, e: string) => ({ amp: '&', apos: "'", quot: '"', lt: '<', gt: '>' })[e]!);

/** The slot in the output of `sendWithGoSendxmpp(…, { debug: true })`. */
export function goSendxmppSlot(output: string): UploadSlot {
  const slot = /<slot xmlns=['"]urn:xmpp:http:upload:0['"]>(.*?)<\/slot>/s.exec(output)?.[1];
  assert.ok(slot, `no slot in go-sendxmpp's debug output:\n${output.slice(-4000)}`);
  const getUrl = /<get url=(['"])(.*?)\1/.exec(slot)?.[2];
  const putUrl = /<put url=(['"])(.*?)\1/.exec(slot)?.[2];
  assert.ok(getUrl && putUrl, `unexpected slot: ${slot}`);
  const putHeaders: Record<string, string> = {};
  for (const [, , name, value] of slot.matchAll(/<header name=(['"])(.*?)\1>([^<]*)<\/header>/g)) putHeaders[unescapeXml(name!)] = unescapeXml(value!);
  return { getUrl: unescapeXml(getUrl), putUrl: unescapeXml(putUrl), putHeaders };
}

/**
 * Uploads the file with slixmpp (spec/fixtures/slixmpp-upload.py) through the upload component `service` and
 * returns the GET URL, the one line the script prints. contentType is announced in the slot request and sent
 * as the PUT's Content-Type; without it slixmpp guesses from the name.
 */
export async function uploadWithSlixmpp(from: XmppLogin, service: string, file: string, contentType?: string): Promise<string> {
  const args = [SLIXMPP_UPLOAD, from.jid, E2E_PASSWORD, '127.0.0.1', String(from.port), service, file, ...(contentType === undefined ? [] : [contentType])];
  let stdout: string;
  try {
    // A little longer than the script's own limit, so it reports what it was waiting for.
    ({ stdout } = await run(DEBIAN_PYTHON, args, { timeout: 100_000 }));
  } catch (err) {
    throw clientFailed(`slixmpp failed to upload ${path.basename(file)}`, err);
  }
  const lines = stdout.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, `slixmpp printed ${JSON.stringify(stdout)}`);
  return lines[0]!;
}

/** A recipient's side: `go-sendxmpp -l` prints each received message as `<time> <from>: <body>`. */
export class Inbox {
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

  /** Logs in and listens; the server keeps messages sent before that (offline storage) until it is online. */
  static open(login: XmppLogin): Inbox {
    // stdin stays an open pipe: with stdin at EOF, go-sendxmpp -l logs "EOF" in a tight loop (megabytes a second).
    return new Inbox(spawn('go-sendxmpp', [...goSendxmppLogin(login), '-l']));
  }

  /** The next message body, in the order they arrived. */
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

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** The GET URL serves exactly these bytes (and, when given, with this Content-Type). */
export async function assertServes(url: string, bytes: Buffer, contentType?: string): Promise<void> {
  const res = await fetch(url);
  assert.equal(res.status, 200, `GET ${url}`);
  const body = Buffer.from(await res.arrayBuffer());
  assert.equal(res.headers.get('content-length'), String(bytes.length), `GET ${url}`);
  assert.equal(sha256(body), sha256(bytes), `GET ${url} served other bytes`);
  if (contentType !== undefined) assert.equal(res.headers.get('content-type'), contentType, `GET ${url}`);
}

/** The slot paths of the `upload.committed path=<path> …` lines, oldest first (JSON-quoted when they have spaces). */
export function committedPaths(logs: readonly string[]): string[] {
  return logs.flatMap((line) => {
    const raw = line.includes(' upload.committed ') ? /\bpath=("(?:[^"\\]|\\.)*"|\S+)/.exec(line)?.[1] : undefined;
    if (!raw) return [];
    return [raw.startsWith('"') ? (JSON.parse(raw) as string) : raw];
  });
}

/** The slot path of the newest `upload.committed` line. */
export function lastCommittedPath(logs: readonly string[]): string | undefined {
  return committedPaths(logs).at(-1);
}

/** Log lines at warn or error: a real client used normally is nothing to warn about. */
export function alarmingLines(logs: readonly string[]): string[] {
  return logs.filter((l) => / (warn|error) /.test(l));
}
