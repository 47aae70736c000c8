// Headers on every answer of the server, both doors, errors and 404 included: nothing it serves is ever
// sniffed into HTML, and if a browser renders something anyway it runs in a sandbox with no resources and no
// referrer (download URLs are capabilities).
import type { RequestHandler } from 'express';

export const CONTENT_SECURITY_POLICY = "default-src 'none'; sandbox";

export function securityHeaders(): RequestHandler {
  return (_req, res, next) => {
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Content-Security-Policy', CONTENT_SECURITY_POLICY);
    res.setHeader('Referrer-Policy', 'no-referrer');
    next();
  };
}
