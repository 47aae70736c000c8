// Only upload routes read request bodies (legacy PUT, tus POST and PATCH). Any other request that announces
// a body is answered with Connection: close: Node then closes the socket after the answer instead of
// draining whatever was announced, so a GET with "Content-Length: 1000000000" and a byte every ten seconds
// holds nothing.
import type { IncomingMessage } from 'node:http';
import type { RequestHandler } from 'express';
import type { Admission } from '../server/admission.js';

const UPLOAD_METHODS = new Set(['PUT', 'POST', 'PATCH']);

export function announcesBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

export function bodyGate(): RequestHandler {
  return (req, res, next) => {
    if (!UPLOAD_METHODS.has(req.method) && announcesBody(req)) res.setHeader('Connection', 'close');
    next();
  };
}

/**
 * Waits for admission (NumWorkers, UploadQueueSize) before a body is read; a request without a body needs none.
 * Resolves to the release; a client that goes away while it waits gives up its place.
 */
export async function admitBody(admission: Admission, req: IncomingMessage): Promise<() => void> {
  if (!announcesBody(req)) return () => undefined;
  const gone = new AbortController();
  const onGone = () => gone.abort();
  req.once('close', onGone);
  try {
    return await admission.admit(gone.signal);
  } finally {
    req.off('close', onGone);
  }
}
