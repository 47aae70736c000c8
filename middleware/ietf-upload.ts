// The IETF "Resumable Uploads for HTTP" protocol (draft-ietf-httpbis-resumable-upload) at TusPath, beside tus:
// a request that carries Upload-Draft-Interop-Version is this protocol's. Its uploads are tus uploads
// underneath (the same store, grants, owners, limits, locks and commitUpload()), so either protocol's HEAD
// sees the same offset. Interop versions 3 to 8 are spoken; they differ in a few headers only (interop.ts).
//
//   POST   TusPath            creation, with or without content; 104 with the upload's Location first
//   HEAD   TusPath<id>        offset retrieval
//   PATCH  TusPath<id>        append (Upload-Offset must match); Upload-Complete: ?1 completes and commits
//   DELETE TusPath<id>        cancellation
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Transform, type Readable } from 'node:stream';
import type { Request, Response } from 'express';
import { parse as parseDisposition } from 'content-disposition';
import { Metadata, Uid, Upload, type Locker } from '@tus/utils';
import { HttpError, httpError, toHttp } from '../server/errors.js';
import type { Logger } from '../server/logger.js';
import type { PublicUrl } from '../server/public-url.js';
import { COMMITTED_KEY, TusHookError, type createTusHooks, type TusRequest } from '../hooks/tus-hooks.js';
import type { CountingFileStore, TusCounters } from '../stores/tus-store.js';
import { appendStatus, completeHeaderName, completeHeaderOf, INTEROP_HEADER, lifetimeKey, needsPartialUploadType, requestedCompletion, type InteropVersion } from './interop.js';
import type { Grant } from './upload-grant.js';
import { admitBody } from './body-gate.js';
import type { Admission } from '../server/admission.js';

export const PARTIAL_UPLOAD = 'application/partial-upload';

export interface IetfUploadDeps {
  store: CountingFileStore;
  hooks: ReturnType<typeof createTusHooks>;
  locker: Locker;
  logger: Logger;
  publicUrl: PublicUrl;
  /** TusPath, e.g. "/files/". */
  tusPath: string;
  /** TusUploadExpiry in ms (0: never). */
  expirationMs: number;
  /** MaxUploadSize, the largest any grant may upload. */
  maxUploadSize: number;
  /** NumWorkers and UploadQueueSize: a body is read only once admitted. */
  admission: Admission;
  /** The tus door's counts (uploads created, finished, terminated), which these uploads belong to as well. */
  counters: TusCounters;
}

export type IetfUploads = ReturnType<typeof ietfUploads>;

/** An Item Structured Field Integer (RFC 9651 §3.3.1) that is not negative; undefined when absent or invalid. */
function sfInteger(value: string | undefined): number | undefined {
  if (value === undefined || !/^[0-9]{1,15}$/.test(value.trim())) return undefined;
  return Number(value.trim());
}

/** An Item Structured Field Boolean (RFC 9651 §3.3.6); undefined when absent or invalid. */
function sfBoolean(value: string | undefined): boolean | undefined {
  const trimmed = value?.trim();
  return trimmed === '?1' ? true : trimmed === '?0' ? false : undefined;
}

/** "the request content is the remaining representation data": Content-Length, when the body is not chunked. */
function contentLengthOf(req: IncomingMessage): number | undefined {
  return req.headers['transfer-encoding'] === undefined ? sfInteger(req.headers['content-length']) : undefined;
}

/** Lets through at most max bytes; one more is the error overflow() gives. */
function capped(source: Readable, max: number, overflow: () => HttpError): Readable {
  let seen = 0;
  const cap = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      if (seen > max) callback(overflow());
      else callback(null, chunk);
    },
  });
  // A body that breaks off fails the cap, and so the write. Not pipeline(): a failing write must not destroy the
  // request, whose connection still carries the answer (507 for a full disk, the 413 of the cap itself).
  source.once('error', (err) => cap.destroy(err));
  source.once('close', () => {
    if (!source.readableEnded) cap.destroy(new Error('request body broke off'));
  });
  source.pipe(cap);
  return cap;
}

/**
 * Writes an informational response before the final one. Node has no public call for a 1xx other than 100,
 * 102 and 103; _writeRaw is what its own writeContinue uses, so the bytes queue behind an earlier response on
 * the connection rather than cutting into it. Without it the 104 is left out, which the draft allows.
 */
function writeInformational(res: ServerResponse, status: number, reason: string, headers: Record<string, string>): void {
  const raw = (res as unknown as { _writeRaw?: (data: string, encoding: string) => void })._writeRaw;
  if (res.headersSent || typeof raw !== 'function') return;
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`);
  raw.call(res, `HTTP/1.1 ${status} ${reason}\r\n${lines.join('')}\r\n`, 'latin1');
}

/**
 * Whether the request came through a proxy: over the unix socket, or with X-Forwarded-For from one of
 * TrustedProxies. A proxy may not pass a 104 on as what it is: nginx takes any 1xx but 101 for the final
 * answer and sends the real one after it as its body, which breaks the response for every client.
 */
function cameThroughProxy(req: Request): boolean {
  return req.socket.remoteAddress === undefined || req.ips.length > 0;
}

/** RFC 9457 problem details for this protocol's three problem types. */
function problem(code: 'E_OFFSET_MISMATCH' | 'E_INCONSISTENT_LENGTH' | 'E_UPLOAD_COMPLETED', members: Record<string, unknown> = {}, headers: Record<string, string> = {}): HttpError {
  const type = { E_OFFSET_MISMATCH: 'mismatching-upload-offset', E_INCONSISTENT_LENGTH: 'inconsistent-upload-length', E_UPLOAD_COMPLETED: 'completed-upload' }[code];
  return httpError(code, { headers, problem: { type: `https://iana.org/assignments/http-problem-types#${type}`, ...members } });
}

/** The client's metadata: tus's Upload-Metadata when sent (tus-js-client sends it), else the draft's headers. */
function metadataOf(req: Request): Record<string, string | null> {
  const header = req.get('Upload-Metadata');
  if (header !== undefined) {
    try {
      return Metadata.parse(header);
    } catch {
      throw httpError('E_BAD_REQUEST', { message: 'Invalid Upload-Metadata' });
    }
  }
  const metadata: Record<string, string> = {};
  // "The Content-Disposition header field can be used to transmit a filename."
  const disposition = req.get('Content-Disposition');
  // The parser is lenient: a header it cannot read gives no filename, and the upload is named after its id.
  const filename = disposition === undefined ? undefined : parseDisposition(disposition).parameters.filename;
  if (filename) metadata.filename = filename;
  const type = req.get('Content-Type')?.split(';')[0]?.trim().toLowerCase();
  if (type && type !== PARTIAL_UPLOAD && type !== 'application/offset+octet-stream') metadata.filetype = type;
  return metadata;
}

export function ietfUploads(deps: IetfUploadDeps) {
  const { store } = deps;

  const limitOf = (grant: Grant | undefined): number => Math.min(deps.maxUploadSize, grant?.maxSize ?? deps.maxUploadSize);

  /** Upload-Limit: the size limit, and the time left before the upload expires (for an upload, or a new one). */
  const uploadLimit = (grant: Grant | undefined, record?: Upload, version: InteropVersion = 8): string => {
    const limits = [`max-size=${limitOf(grant)}`];
    if (deps.expirationMs > 0) {
      const born = record?.creation_date ? Date.parse(record.creation_date) : Date.now();
      limits.push(`${lifetimeKey(version)}=${Math.max(0, Math.floor((born + deps.expirationMs - Date.now()) / 1000))}`);
    }
    return limits.join(', ');
  };

  const receivedOf = async (id: string): Promise<number> => (await store.getUpload(id)).offset;

  /**
   * Takes the upload's lock. The draft's recommended concurrency: a new request for an upload ends a transfer
   * still running (a client resuming after a connection it thinks is dead), whose bytes so far stay. A HEAD or
   * DELETE holds the lock only for a moment and is let finish.
   */
  const lock = async (id: string, req: IncomingMessage, transfer: boolean) => {
    const held = deps.locker.newLock(id);
    await held.lock(new AbortController().signal, () => {
      if (transfer) req.destroy();
    });
    return held;
  };

  /** Appends the request's content at offset under the lock; the new offset. */
  const append = async (req: Request, id: string, offset: number, record: Upload, grant: Grant | undefined): Promise<number> => {
    // "the server MUST prevent the offset from exceeding the upload length by rejecting the request once the
    // offset exceeds the length, marking the upload resource invalid"; without a length, the size limit.
    const room = record.size !== undefined ? record.size - offset : limitOf(grant) - offset;
    const overflow = () =>
      record.size !== undefined ? problem('E_INCONSISTENT_LENGTH') : httpError('E_TOO_LARGE', { headers: { 'Upload-Limit': uploadLimit(grant, record) } });
    if (!req.readable) return offset;
    try {
      return await store.write(capped(req, room, overflow), id, offset);
    } catch (err) {
      const error = toHttp(err);
      if (error.code === 'E_INCONSISTENT_LENGTH' || error.code === 'E_TOO_LARGE') await store.remove(id).catch(() => undefined);
      throw err;
    }
  };

  /** Marks the upload complete at offset and commits it; the commit's headers (X-Download-URL). */
  const complete = async (req: Request, res: Response, id: string, offset: number): Promise<Record<string, string>> => {
    const record = await store.configstore.get(id);
    if (!record) throw httpError('E_NOT_FOUND');
    // "If multiple requests include indicators, their indicated values MUST match."
    if (record.size !== undefined && record.size !== offset) throw problem('E_INCONSISTENT_LENGTH');
    if (record.size === undefined) {
      record.size = offset;
      await store.configstore.set(id, record);
    }
    try {
      const tusReq: TusRequest = { runtime: { node: { req, res } } };
      const { headers } = await deps.hooks.onUploadFinish(tusReq, await store.getUpload(id));
      deps.counters.finished += 1;
      return headers;
    } catch (err) {
      throw err instanceof TusHookError ? toHttp(err.cause) : err;
    }
  };

  /** Headers every answer about an upload carries in this protocol version. */
  const stateHeaders = (version: InteropVersion, done: boolean, offset?: number): Record<string, string> => ({
    [INTEROP_HEADER]: String(version),
    ...completeHeaderOf(version, done),
    ...(offset !== undefined ? { 'Upload-Offset': String(offset) } : {}),
  });

  /** The completeness a request states (Upload-Complete, or Upload-Incomplete in version 3). */
  const requestedComplete = (req: Request, version: InteropVersion): boolean => {
    const name = completeHeaderName(version);
    const done = requestedCompletion(version, req.method, sfBoolean(req.get(name)));
    if (done === undefined) throw httpError('E_BAD_REQUEST', { message: `${name} must be ?0 or ?1` });
    return done;
  };

  /** Upload-Length of a request, if it sent one; a value that is not an Integer is refused. */
  const requestedLength = (req: Request): number | undefined => {
    const header = req.get('Upload-Length');
    if (header === undefined) return undefined;
    const length = sfInteger(header);
    if (length === undefined) throw httpError('E_BAD_REQUEST', { message: 'Upload-Length must be a non-negative integer' });
    return length;
  };

  const create = async (req: Request, res: Response, grant: Grant, version: InteropVersion): Promise<void> => {
    const done = requestedComplete(req, version);
    const declared = requestedLength(req);
    const sent = contentLengthOf(req);
    // "If indicators (1) and (2) are both present in the same request, their indicated lengths MUST match."
    if (done && sent !== undefined && declared !== undefined && sent !== declared) throw problem('E_INCONSISTENT_LENGTH');
    const length = declared ?? (done ? sent : undefined);
    if (length !== undefined && length > limitOf(grant)) throw httpError('E_TOO_LARGE', { headers: { 'Upload-Limit': uploadLimit(grant, undefined, version) } });
    if (sent !== undefined && length !== undefined && sent > length) throw problem('E_INCONSISTENT_LENGTH');

    const upload = new Upload({ id: Uid.rand(), offset: 0, size: length, metadata: metadataOf(req) });
    const tusReq: TusRequest = { runtime: { node: { req, res } } };
    try {
      upload.metadata = (await deps.hooks.onUploadCreate(tusReq, upload)).metadata;
    } catch (err) {
      throw err instanceof TusHookError ? toHttp(err.cause) : err;
    }
    upload.creation_date = new Date().toISOString();
    try {
      await store.create(upload);
    } catch (err) {
      // No record to give a quota charge back through: it is given back here.
      await deps.hooks.refundCreation(tusReq);
      throw err;
    }
    deps.counters.created += 1;
    const location = deps.publicUrl(req, `${deps.tusPath}${upload.id}`);
    const record = (await store.configstore.get(upload.id))!;
    // "the server SHOULD announce the upload resource by sending an interim response with the 104 (Upload
    // Resumption Supported) status code unless the server is not capable of sending interim responses"; "it
    // MUST include Location [...] and [...] Upload-Limit". Not through a proxy (above).
    if (!cameThroughProxy(req)) writeInformational(res, 104, 'Upload Resumption Supported', { Location: location, 'Upload-Limit': uploadLimit(grant, record, version), [INTEROP_HEADER]: String(version) });
    if (req.get('Expect')?.toLowerCase() === '100-continue') res.writeContinue();
    const release = await admitBody(deps.admission, req);
    let offset: number;
    try {
      const held = await lock(upload.id, req, true);
      try {
        offset = await append(req, upload.id, 0, record, grant);
      } finally {
        await held.unlock();
      }
    } catch (err) {
      // The client may resume from what arrived (it has the Location from the 104); the answer still says why.
      throw withHeaders(err, { Location: location, ...stateHeaders(version, false) });
    } finally {
      release();
    }
    const headers = done ? await complete(req, res, upload.id, offset).catch((err: unknown) => Promise.reject(withHeaders(err, stateHeaders(version, true)))) : {};
    res
      .status(201)
      .set({ ...headers, Location: location, 'Upload-Limit': uploadLimit(grant, record, version), ...stateHeaders(version, done, offset) })
      .end();
  };

  const offsetOf = async (req: Request, res: Response, id: string, record: Upload, grant: Grant, version: InteropVersion): Promise<void> => {
    // "the server MUST NOT send outdated information": a running append is ended first.
    const held = await lock(id, req, false);
    let offset: number;
    try {
      offset = await receivedOf(id);
    } finally {
      await held.unlock();
    }
    const done = Boolean(record.metadata?.[COMMITTED_KEY]);
    res.status(204).set({
      ...stateHeaders(version, done, offset),
      ...(record.size !== undefined ? { 'Upload-Length': String(record.size) } : {}),
      'Upload-Limit': uploadLimit(grant, record, version),
      'Cache-Control': 'no-store',
    });
    res.end();
  };

  const appendTo = async (req: Request, res: Response, id: string, grant: Grant, version: InteropVersion): Promise<void> => {
    // Version 6 on: "A client can continue the upload [...] by sending a PATCH request with the
    // application/partial-upload media type".
    const type = req.get('Content-Type')?.split(';')[0]?.trim().toLowerCase();
    if (needsPartialUploadType(version) && type !== PARTIAL_UPLOAD) throw httpError('E_MEDIA_TYPE', { message: `Content-Type must be ${PARTIAL_UPLOAD}` });
    const provided = sfInteger(req.get('Upload-Offset'));
    if (provided === undefined) throw httpError('E_BAD_REQUEST', { message: 'Upload-Offset must be a non-negative integer' });
    const done = requestedComplete(req, version);
    const declared = requestedLength(req);
    const sent = contentLengthOf(req);
    const release = await admitBody(deps.admission, req);
    let offset: number;
    try {
      const held = await lock(id, req, true);
      try {
        const current = await receivedOf(id);
        // "If the Upload-Offset request header field value does not match the current offset, the server MUST
        // reject the request with a 409 (Conflict) status code. The response MUST include the correct offset".
        if (provided !== current) {
          throw problem('E_OFFSET_MISMATCH', { 'expected-offset': current, 'provided-offset': provided }, stateHeaders(version, false, current));
        }
        const fresh = await store.configstore.get(id);
        if (!fresh) throw httpError('E_NOT_FOUND');
        // "If the upload is already complete, the server MUST NOT modify the upload resource and MUST reject the
        // request." Checked under the lock, so one completed while this request waited is refused too.
        if (fresh.metadata?.[COMMITTED_KEY]) throw problem('E_UPLOAD_COMPLETED', {}, stateHeaders(version, true));
        const length = declared ?? (done && sent !== undefined ? current + sent : undefined);
        if (length !== undefined) {
          if ((fresh.size !== undefined && fresh.size !== length) || length < current || (done && sent !== undefined && current + sent !== length)) throw problem('E_INCONSISTENT_LENGTH');
          if (length > limitOf(grant)) throw httpError('E_TOO_LARGE', { headers: { 'Upload-Limit': uploadLimit(grant, fresh, version) } });
          if (fresh.size === undefined) {
            fresh.size = length;
            await store.configstore.set(id, fresh);
          }
        }
        offset = await append(req, id, current, fresh, grant);
      } finally {
        await held.unlock();
      }
    } catch (err) {
      throw withHeaders(err, { [INTEROP_HEADER]: String(version) });
    } finally {
      release();
    }
    const headers = done ? await complete(req, res, id, offset).catch((err: unknown) => Promise.reject(withHeaders(err, stateHeaders(version, true)))) : {};
    res.status(appendStatus(version, done)).set({ ...headers, ...stateHeaders(version, done, offset) }).end();
  };

  const cancel = async (req: Request, res: Response, id: string, version: InteropVersion): Promise<void> => {
    // "The server SHOULD terminate any in-flight requests to the upload resource before sending the response".
    const held = await lock(id, req, false);
    try {
      await store.remove(id).catch(() => store.configstore.delete(id));
    } finally {
      await held.unlock();
    }
    deps.counters.terminated += 1;
    res.status(204).set({ [INTEROP_HEADER]: String(version) }).end();
  };

  return {
    /** Answers an IETF request that passed the door's gates (grant, owner of the upload). */
    async handle(req: Request, res: Response, request: { id: string; record: Upload | undefined; grant: Grant; version: InteropVersion }): Promise<void> {
      const { id, record, grant, version } = request;
      if (id === '') {
        if (req.method !== 'POST') throw httpError('E_METHOD', { headers: { Allow: 'POST, OPTIONS' } });
        return create(req, res, grant, version);
      }
      if (!record) throw httpError('E_NOT_FOUND');
      if (req.method === 'HEAD') return offsetOf(req, res, id, record, grant, version);
      if (req.method === 'PATCH') return appendTo(req, res, id, grant, version);
      if (req.method === 'DELETE') return cancel(req, res, id, version);
      throw httpError('E_METHOD', { headers: { Allow: 'HEAD, PATCH, DELETE, OPTIONS' } });
    },
    uploadLimit,
  };
}

/** The same error with these headers added (an HttpError's own win). */
function withHeaders(err: unknown, headers: Record<string, string>): HttpError {
  const error = toHttp(err);
  return new HttpError(error.status, error.code, error.message, {
    cause: error.cause ?? err,
    headers: { ...headers, ...error.headers },
    ...(error.problem ? { problem: error.problem } : {}),
  });
}
