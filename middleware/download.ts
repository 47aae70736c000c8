// Serving a committed file: the media-type rule (media-type.ts) for Content-Type and inline/attachment, validators (ETag,
// Last-Modified), conditional requests (RFC 9110 §13) and one byte range (RFC 9110 §14).
import type { Request, Response } from 'express';
import { create as contentDisposition } from 'content-disposition';
import path from 'node:path';
import { finished, type Readable } from 'node:stream';
import { httpError } from '../server/errors.js';
import { servedType } from './media-type.js';
import type { OpenFile } from '../stores/storage.js';

function etagOf(file: OpenFile): string {
  return `"${file.meta.size.toString(16)}-${Date.parse(file.meta.createdAt).toString(16)}"`;
}

/** RFC 9110 §13.1.5: a Range is honoured only when If-Range still names this representation. */
function ifRangeMatches(req: Request, etag: string, lastModified: string): boolean {
  const ifRange = req.get('If-Range');
  if (ifRange === undefined) return true;
  if (ifRange.startsWith('"') || ifRange.startsWith('W/')) return ifRange === etag;
  return ifRange === lastModified;
}

/**
 * Streams source into res. A client that hangs up mid-download is normal; a failing source (a read error, a
 * digest that does not match) cuts the response short of its Content-Length and is thrown, for the log.
 * Not stream.pipeline: it builds an AbortController and a DOMException per response, which is a measurable
 * part of a small Range GET.
 */
function send(source: Readable, res: Response): Promise<void> {
  return new Promise((resolve, reject) => {
    let failure: Error | undefined;
    source.once('error', (err: Error) => {
      failure = err;
      res.destroy();
    });
    finished(res, () => {
      source.destroy();
      if (failure === undefined) resolve();
      else reject(failure);
    });
    source.pipe(res);
  });
}

export interface DownloadOptions {
  allowRanges: boolean;
}

export async function sendDownload(req: Request, res: Response, file: OpenFile, options: DownloadOptions): Promise<void> {
  try {
    const { size, createdAt } = file.meta;
    const served = servedType(file.meta.contentType);
    const etag = etagOf(file);
    const lastModified = new Date(createdAt).toUTCString();
    const name = path.posix.basename(file.meta.path);
    // setHeader, not res.set: Express would add a charset of its own to the type.
    res.setHeader('Content-Type', served.contentType);
    res.setHeader('Content-Disposition', contentDisposition(name, { type: served.inline ? 'inline' : 'attachment' }));
    res.setHeader('ETag', etag);
    res.setHeader('Last-Modified', lastModified);
    res.setHeader('Accept-Ranges', options.allowRanges ? 'bytes' : 'none');
    res.setHeader('Cache-Control', 'private, max-age=0, must-revalidate');
    if (req.fresh) {
      res.status(304).end();
      return;
    }
    let start = 0;
    let end = size - 1;
    let status = 200;
    if (options.allowRanges && req.get('Range') !== undefined && ifRangeMatches(req, etag, lastModified)) {
      const ranges = req.range(size, { combine: true });
      if (ranges === -1) {
        throw httpError('E_RANGE', { headers: { 'Content-Range': `bytes */${size}` } });
      }
      // A malformed header (-2) or several ranges: answer with the whole file, which RFC 9110 allows.
      if (ranges !== undefined && ranges !== -2 && ranges.length === 1 && ranges.type === 'bytes') {
        start = ranges[0]!.start;
        end = ranges[0]!.end;
        status = 206;
        res.setHeader('Content-Range', `bytes ${start}-${end}/${size}`);
      }
    }
    res.status(status).setHeader('Content-Length', end - start + 1);
    if (req.method === 'HEAD' || end < start) {
      res.end();
      return;
    }
    const short = file.readShort(start, end);
    if (short) res.end(await short);
    // Awaited before the first byte: a backend that cannot deliver still gets a proper error answer.
    else await send(await file.stream(start, end), res);
  } finally {
    await file.close();
  }
}
