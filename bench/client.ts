// The bench's HTTP client (node:http, loopback only) and the "doors" it uploads through: a legacy signed PUT
// or a tus upload on hmac-file-server, a WebDAV PUT on nginx, a tus upload on the bare @tus/server. Every
// upload can be checked afterwards: the SHA-256 of the file on disk (or of a download, when the file on disk
// is encrypted) against the payload's.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { encodeSlotPath } from '../server/cli-sign.js';
import type { Payload } from './payload.js';
import type { NginxTarget, OursTarget, TusBaselineTarget } from './targets.js';

/** A byte that does not verify: the bench exits non-zero for it whatever else happened. */
export class VerifyError extends Error {
  override name = 'VerifyError';
}

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The body, when kept (sink "keep"). */
  body: Buffer;
  bytes: number;
  /** SHA-256 (hex) of the body (sink "hash"). */
  sha256?: string;
}

export interface RequestOptions {
  headers?: Record<string, string | number>;
  body?: Buffer | Readable;
  /** A keep-alive agent; without one each request has its own connection. */
  agent?: http.Agent;
  signal?: AbortSignal;
  /** Socket inactivity before the request fails. */
  timeoutMs?: number;
  /** What happens to the answer's body: kept (default), hashed, or only counted. */
  sink?: 'keep' | 'hash' | 'count';
}

export function request(url: string, method: string, options: RequestOptions = {}): Promise<Answer> {
  const target = new URL(url);
  if (target.hostname !== '127.0.0.1') return Promise.reject(new Error(`the bench only talks to 127.0.0.1, not ${target.hostname}`));
  const timeoutMs = options.timeoutMs ?? 600_000;
  return new Promise<Answer>((resolve, reject) => {
    const req = http.request(
      target,
      { method, headers: options.headers ?? {}, agent: options.agent ?? false, timeout: timeoutMs, ...(options.signal ? { signal: options.signal } : {}) },
      (res) => {
        const sink = options.sink ?? 'keep';
        const hash = sink === 'hash' ? createHash('sha256') : undefined;
        const chunks: Buffer[] = [];
        let bytes = 0;
        res.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          if (hash) hash.update(chunk);
          else if (sink === 'keep') chunks.push(chunk);
        });
        res.on('end', () => {
          // An answer before the whole body was sent (a refusal): stop producing the rest.
          if (options.body instanceof Readable && !options.body.readableEnded) options.body.destroy();
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), bytes, ...(hash ? { sha256: hash.digest('hex') } : {}) });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${target.pathname}: no progress for ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (options.body instanceof Readable) options.body.destroy();
      // Name the request: "connect ECONNREFUSED" alone does not say which server went away.
      reject(err.name === 'AbortError' ? err : new Error(`${method} ${target.host}${target.pathname}: ${err.message}`, { cause: err }));
    });
    if (options.body instanceof Readable) options.body.pipe(req);
    else req.end(options.body);
  });
}

function expectStatus(what: string, answer: Answer, ...wanted: number[]): void {
  if (!wanted.includes(answer.status)) throw new Error(`${what}: HTTP ${answer.status} (expected ${wanted.join(' or ')}) ${answer.body.toString('utf8').slice(0, 300).trim()}`);
}

/** fsync of one file: its data and inode are on disk when this resolves. */
export async function fsyncFile(file: string): Promise<void> {
  const handle = await open(file, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file, { highWaterMark: 1024 * 1024 }), hash);
  return hash.digest('hex');
}

export interface Uploaded {
  /** From the first byte of the first request to the final answer. */
  answerMs: number;
  /** From the same start until the file was fsynced (only with sync). */
  diskMs?: number;
  /** Where the server keeps the bytes. */
  file: string;
  /** A GET URL for the whole file. */
  download: string;
}

export interface UploadOptions {
  agent?: http.Agent;
  signal?: AbortSignal;
  /** fsync the stored file after the answer and clock that too. */
  sync?: boolean;
  timeoutMs?: number;
}

export interface Door {
  /** As the table names it, e.g. "hmac-file-server legacy PUT". */
  label: string;
  /** The stored file is the plaintext (else an upload is verified by downloading it). */
  plaintextOnDisk: boolean;
  pids(): number[];
  /** name: unique per door and store, "/"-separated. */
  upload(name: string, payload: Payload, options?: UploadOptions): Promise<Uploaded>;
}

async function finish(start: number, file: string, download: string, options: UploadOptions): Promise<Uploaded> {
  const answerMs = performance.now() - start;
  if (!options.sync) return { answerMs, file, download };
  await fsyncFile(file);
  return { answerMs, diskMs: performance.now() - start, file, download };
}

function putOptions(payload: Payload, options: UploadOptions, headers: Record<string, string | number> = {}): RequestOptions {
  return {
    headers: { 'Content-Length': payload.size, 'Content-Type': 'application/octet-stream', ...headers },
    body: payload.stream(),
    ...(options.agent ? { agent: options.agent } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
  };
}

/** hmac-file-server's XMPP door: PUT /upload/<slot>?v2=<HMAC>. */
export function legacyDoor(ours: OursTarget): Door {
  return {
    label: 'hmac-file-server legacy PUT',
    plaintextOnDisk: ours.plaintextOnDisk,
    pids: () => ours.pids(),
    async upload(name, payload, options = {}) {
      const start = performance.now();
      const answer = await request(`${ours.url}${ours.legacyPath(name, payload.size)}`, 'PUT', putOptions(payload, options));
      expectStatus(`PUT ${name}`, answer, 201);
      return finish(start, ours.fileOf(name), `${ours.url}/upload/${encodeSlotPath(name)}`, options);
    },
  };
}

/** nginx's WebDAV PUT location; downloads come from the static location over the same folder. */
export function davDoor(nginx: NginxTarget): Door {
  return {
    label: 'nginx WebDAV PUT',
    plaintextOnDisk: true,
    pids: () => nginx.pids(),
    async upload(name, payload, options = {}) {
      const start = performance.now();
      const answer = await request(`${nginx.url}${nginx.davPath(name)}`, 'PUT', putOptions(payload, options));
      expectStatus(`PUT ${name}`, answer, 201, 204);
      return finish(start, nginx.fileOf(name), `${nginx.url}${nginx.staticPath(name)}`, options);
    },
  };
}

const TUS = { 'Tus-Resumable': '1.0.0' };

function b64(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64');
}

/**
 * A tus 1.0.0 upload: POST (creation), then PATCHes of patchSize bytes (all in one when patchSize is 0),
 * each checked against the Upload-Offset the server answers.
 */
export function tusDoor(target: OursTarget | TusBaselineTarget, patchSize: number, grant?: string): Door {
  const auth: Record<string, string> = grant ? { Authorization: `Bearer ${grant}` } : {};
  const ours = target.kind === 'ours' ? target : undefined;
  return {
    label: `${ours ? 'hmac-file-server tus' : 'bare @tus/server'}${patchSize > 0 ? ` (${patchSize / 1024 / 1024} MiB PATCHes)` : ''}`,
    plaintextOnDisk: ours ? ours.plaintextOnDisk : true,
    pids: () => target.pids(),
    async upload(name, payload, options = {}) {
      const common = {
        ...(options.agent ? { agent: options.agent } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
      };
      const filename = path.posix.basename(name);
      const start = performance.now();
      const created = await request(`${target.url}${target.tusPath}`, 'POST', {
        ...common,
        headers: { ...TUS, ...auth, 'Upload-Length': payload.size, 'Upload-Metadata': `filename ${b64(filename)},filetype ${b64('application/octet-stream')}`, 'Content-Length': 0 },
      });
      expectStatus(`tus POST ${name}`, created, 201);
      const location = created.headers.location;
      if (!location) throw new Error(`tus POST ${name}: no Location`);
      const uploadUrl = new URL(location, target.url).toString();
      let offset = 0;
      let last: Answer | undefined;
      while (offset < payload.size) {
        const length = patchSize > 0 ? Math.min(patchSize, payload.size - offset) : payload.size - offset;
        last = await request(uploadUrl, 'PATCH', {
          ...common,
          headers: { ...TUS, ...auth, 'Upload-Offset': offset, 'Content-Type': 'application/offset+octet-stream', 'Content-Length': length },
          body: payload.stream(offset, offset + length),
        });
        expectStatus(`tus PATCH ${name} at ${offset}`, last, 204);
        const answered = Number(last.headers['upload-offset']);
        if (answered !== offset + length) throw new Error(`tus PATCH ${name}: Upload-Offset ${String(last.headers['upload-offset'])}, expected ${offset + length}`);
        offset += length;
      }
      if (ours) {
        // An absolute URL on the host the request named (or a path, for a Host the server would not use).
        const header = last?.headers['x-download-url'];
        const download = typeof header === 'string' ? new URL(header, ours.url) : undefined;
        if (!download?.pathname.startsWith('/upload/')) throw new Error(`tus ${name}: no X-Download-URL in the final answer`);
        const slot = decodeURIComponent(download.pathname.slice('/upload/'.length));
        return finish(start, ours.fileOf(slot), download.toString(), options);
      }
      const id = new URL(uploadUrl).pathname.split('/').pop()!;
      return finish(start, (target as TusBaselineTarget).fileOf(id), uploadUrl, options);
    },
  };
}

/**
 * Checks that what a door stored is what was sent: the SHA-256 of the file on disk, or of a full download when
 * the server stores ciphertext. Throws VerifyError otherwise.
 */
export async function verifyUpload(door: Door, uploaded: Uploaded, payload: Payload, options: { agent?: http.Agent; signal?: AbortSignal } = {}): Promise<void> {
  const expected = payload.digest();
  if (door.plaintextOnDisk) {
    const got = await sha256File(uploaded.file).catch((err: Error) => `unreadable (${err.message})`);
    if (got !== expected) throw new VerifyError(`${door.label}: ${uploaded.file} has SHA-256 ${got}, sent ${expected}`);
    return;
  }
  const answer = await request(uploaded.download, 'GET', { sink: 'hash', ...options });
  if (answer.status !== 200 || answer.bytes !== payload.size || answer.sha256 !== expected) {
    throw new VerifyError(`${door.label}: GET ${uploaded.download} gave HTTP ${answer.status}, ${answer.bytes} bytes, SHA-256 ${answer.sha256}; sent ${payload.size} bytes, ${expected}`);
  }
}
