// One CORS policy for the tus door, on every answer: our gates' refusals, the library's answers, downloads of
// finished uploads, preflights. @tus/server sets CORS headers of its own on everything it writes (an exposed
// list that repeats request-header names and drops ours, an allowed list without Upload-Checksum), so its
// Access-Control-* headers are taken out as the answer is written, and these remain.
import type { ServerResponse, OutgoingHttpHeaders } from 'node:http';
import type { Request, Response } from 'express';

/** What a page may send: the tus and IETF request headers, the grant, and the checksum extension's header. */
export const ALLOWED_HEADERS = [
  'Authorization',
  'Content-Type',
  'Tus-Resumable',
  'Upload-Length',
  'Upload-Defer-Length',
  'Upload-Metadata',
  'Upload-Offset',
  'Upload-Concat',
  'Upload-Checksum',
  'X-HTTP-Method-Override',
  'X-Requested-With',
  // The IETF resumable-upload protocol.
  'Upload-Complete',
  'Upload-Incomplete',
  'Upload-Draft-Interop-Version',
];

/** What a page may read: every header these answers carry that is not CORS-safelisted already. */
export const EXPOSED_HEADERS = [
  'Location',
  'Upload-Offset',
  'Upload-Length',
  'Upload-Defer-Length',
  'Upload-Metadata',
  'Upload-Expires',
  'Upload-Concat',
  'Tus-Resumable',
  'Tus-Version',
  'Tus-Extension',
  'Tus-Max-Size',
  'Tus-Checksum-Algorithm',
  'X-Download-URL',
  'WWW-Authenticate',
  'Retry-After',
  'Content-Disposition',
  'Content-Range',
  'Accept-Ranges',
  'ETag',
  'Upload-Complete',
  'Upload-Incomplete',
  'Upload-Limit',
  'Upload-Draft-Interop-Version',
  'Accept-Patch',
];

const METHODS = 'POST, GET, HEAD, PATCH, DELETE, OPTIONS';
const MAX_AGE = '86400';

function isCors(name: unknown): boolean {
  return typeof name === 'string' && name.toLowerCase().startsWith('access-control-');
}

/** The headers writeHead was given, without Access-Control-* (a flat [name, value, …] list or an object). */
function withoutCors(headers: unknown): unknown {
  if (Array.isArray(headers)) {
    if (headers.length > 0 && Array.isArray(headers[0])) return (headers as unknown[][]).filter(([name]) => !isCors(name));
    const kept: unknown[] = [];
    for (let i = 0; i + 1 < headers.length; i += 2) if (!isCors(headers[i])) kept.push(headers[i], headers[i + 1]);
    return kept;
  }
  if (headers !== null && typeof headers === 'object') return Object.fromEntries(Object.entries(headers as OutgoingHttpHeaders).filter(([name]) => !isCors(name)));
  return headers;
}

/** Sets the policy on res and keeps whatever writes the answer from replacing it. */
export function applyTusCors(req: Request, res: Response): void {
  res.setHeader('Access-Control-Allow-Origin', '*');
  res.setHeader('Access-Control-Expose-Headers', EXPOSED_HEADERS.join(', '));
  if (req.method === 'OPTIONS') {
    res.setHeader('Access-Control-Allow-Methods', METHODS);
    res.setHeader('Access-Control-Allow-Headers', ALLOWED_HEADERS.join(', '));
    res.setHeader('Access-Control-Max-Age', MAX_AGE);
  }
  const node: ServerResponse = res;
  const writeHead = node.writeHead.bind(node) as (...args: unknown[]) => ServerResponse;
  // writeHead(status[, statusMessage][, headers]): headers given there would win over the ones set above.
  node.writeHead = (...args: unknown[]) => {
    const last = args.length - 1;
    if (last > 0 && typeof args[last] !== 'string') args[last] = withoutCors(args[last]);
    return writeHead(...args);
  };
}
