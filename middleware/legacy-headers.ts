// Headers on every legacy response: CORS for browser XMPP clients (Converse.js and others). The
// download-safety headers (docs/protocols.md, "Expected answers") are the whole server's: security-headers.ts.
import type { RequestHandler } from 'express';

export function legacyHeaders(options: { deleteEnabled: boolean }): RequestHandler {
  const methods = allowedMethods(options);
  return (_req, res, next) => {
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Allow-Methods', methods);
    // Authorization: browser clients (Converse.js) send the file-share JWT as a Bearer header.
    res.setHeader('Access-Control-Allow-Headers', 'Content-Type, Authorization');
    res.setHeader('Access-Control-Expose-Headers', 'Content-Length, Content-Range, Accept-Ranges, ETag, Last-Modified, Content-Disposition');
    res.setHeader('Access-Control-Max-Age', '7200');
    next();
  };
}

export function allowedMethods(options: { deleteEnabled: boolean }): string {
  return ['GET', 'HEAD', 'PUT', 'OPTIONS', ...(options.deleteEnabled ? ['DELETE'] : [])].join(', ');
}
