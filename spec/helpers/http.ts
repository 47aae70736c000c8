// Small HTTP helpers for tests: signed legacy PUTs, and raw requests whose path bytes reach the server
// exactly as written (URL parsers would normalise "..", "%2e%2e" and backslashes away).
import http from 'node:http';
import { signSlot, type HmacScheme } from '../../middleware/slot-verifier-hmac.js';
import { encodeSlotPath } from '../../server/cli-sign.js';
import { TEST_SECRET, type TestServer } from './test-server.js';

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export interface RawOptions {
  /** Source address of the connection (127.0.0.0/8 gives tests many distinct clients). */
  localAddress?: string;
}

/**
 * One request with the path sent exactly as given, except that an absolute URL on baseUrl's own origin (a
 * Location or X-Download-URL the server handed out) is sent as its path. Any other absolute URL goes out raw,
 * as an absolute-form request target.
 */
export function rawRequest(baseUrl: string, method: string, rawPath: string, headers: Record<string, string | number> = {}, body?: Buffer, options: RawOptions = {}): Promise<RawResponse> {
  const { hostname, port, origin } = new URL(baseUrl);
  if (rawPath.startsWith(`${origin}/`)) rawPath = rawPath.slice(origin.length);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, method, path: rawPath, headers, agent: false, ...(options.localAddress ? { localAddress: options.localAddress } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export interface SignOptions {
  protocol?: HmacScheme;
  contentType?: string;
  secret?: string;
  /** Sign for this length instead of the body's. */
  size?: number;
  /** Sign for this type instead of the one sent. */
  signedType?: string;
}

/** The path and query of a signed PUT for slotPath, as an XMPP server would hand it out. */
/** What signing and putting need of a server: its URL and its UploadSubDir (a TestServer, or an instance behind a proxy). */
export type PutTarget = Pick<TestServer, 'url'> & { config: Pick<TestServer['config'], 'UploadSubDir'> };

export function signedPath(server: PutTarget, slotPath: string, size: number, options: SignOptions = {}): string {
  const protocol = options.protocol ?? 'v2';
  const mac = signSlot(options.secret ?? TEST_SECRET, protocol, slotPath, size, options.signedType ?? options.contentType ?? 'application/octet-stream');
  return `/${server.config.UploadSubDir}/${encodeSlotPath(slotPath)}?${protocol}=${mac}`;
}

/** Uploads body to slotPath with a valid MAC (unless options say otherwise). */
export function signedPut(server: PutTarget, slotPath: string, body: Buffer, options: SignOptions = {}): Promise<RawResponse> {
  const headers: Record<string, string | number> = { 'Content-Length': body.length };
  if (options.contentType !== undefined) headers['Content-Type'] = options.contentType;
  return rawRequest(server.url, 'PUT', signedPath(server, slotPath, options.size ?? body.length, options), headers, body);
}
