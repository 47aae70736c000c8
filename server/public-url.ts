// The absolute URLs the server hands out (a tus upload's Location, X-Download-URL, a legacy PUT's Location):
// PublicURL when it is set; else the scheme and host this request reached us by. X-Forwarded-Proto and
// X-Forwarded-Host count only from TrustedProxies (Express's trust proxy decides, as for the client IP); a
// Host that is not a host name or address gives a path alone, never a URL on somebody else's say-so.
import type { IncomingMessage } from 'node:http';
import type { Request } from 'express';

/** A host name or IPv4 address, or a bracketed IPv6 address, with an optional port. */
const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;

/** Turns a path on this server ("/files/<id>") into the URL a client should use. */
export type PublicUrl = (req: IncomingMessage, path: string) => string;

export function publicUrl(configured: string): PublicUrl {
  if (configured !== '') return (_req, path) => `${configured}${path}`;
  return (req, path) => {
    const express = req as Request;
    let proto: string;
    let host: string | undefined;
    try {
      proto = express.protocol.toLowerCase();
      host = express.host;
    } catch {
      return path;
    }
    if ((proto !== 'http' && proto !== 'https') || host === undefined || !HOST.test(host)) return path;
    return `${proto}://${host}${path}`;
  };
}
