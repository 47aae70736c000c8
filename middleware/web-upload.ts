// The upload page (WebUploadEnabled) at WebUploadPath: three files bundled at build time (scripts/build-web.ts),
// read once at start and served from memory with their own Content-Security-Policy (self only) in place of
// the server's sandbox, which would stop the page's script.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { RequestHandler } from 'express';

/** Self only; inline style attributes for the Dashboard's layout, blob:/data: for its thumbnails. */
export const PAGE_CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

export interface WebUploadOptions {
  /** dist/web: index.html, hfs-upload.js, hfs-upload-style.css. */
  dir: string;
  /** WebUploadPath, e.g. "/" or "/send/". */
  path: string;
  /** TusPath, where the page uploads to. */
  tusPath: string;
}

function asset(body: Buffer, type: string): Asset {
  return { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"` };
}

export function webUploadPage(options: WebUploadOptions): RequestHandler {
  let index: Buffer;
  let script: Buffer;
  let style: Buffer;
  try {
    index = readFileSync(path.join(options.dir, 'index.html'));
    script = readFileSync(path.join(options.dir, 'hfs-upload.js'));
    style = readFileSync(path.join(options.dir, 'hfs-upload-style.css'));
  } catch (err) {
    throw new Error(`WebUploadEnabled: the upload page is not built in ${options.dir} (npm run build)`, { cause: err });
  }
  const assets = new Map<string, Asset>([
    [options.path, asset(Buffer.from(index.toString('utf8').replace('{{TUS_PATH}}', options.tusPath)), 'text/html; charset=utf-8')],
    [`${options.path}hfs-upload.js`, asset(script, 'text/javascript; charset=utf-8')],
    [`${options.path}hfs-upload-style.css`, asset(style, 'text/css; charset=utf-8')],
  ]);
  return (req, res, next) => {
    const found = req.method === 'GET' || req.method === 'HEAD' ? assets.get(req.path) : undefined;
    if (!found) return next();
    res.setHeader('Content-Security-Policy', PAGE_CSP);
    res.setHeader('Content-Type', found.type);
    res.setHeader('Cache-Control', 'no-cache');
    res.setHeader('ETag', found.etag);
    if (req.fresh) {
      res.status(304).end();
      return;
    }
    res.setHeader('Content-Length', found.body.length);
    res.end(req.method === 'HEAD' ? undefined : found.body);
  };
}
