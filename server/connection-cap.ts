// MaxConnectionsPerIP: no single client address may hold more than this many connections (or, behind a
// trusted proxy, requests in flight), so a few hosts trickling bytes cannot take every descriptor. A socket
// over the cap is answered 503 with Retry-After at accept, before any byte of its request is read, and
// closed. Peers in TrustedProxies are not counted per socket (every client of nginx shares its address):
// their requests count for the forwarded client IP instead.
import type { Socket } from 'node:net';
import type { RequestHandler } from 'express';
import { CATALOGUE, RETRY_AFTER_SECONDS, httpError } from './errors.js';
import type { AddressMatcher } from './address-list.js';
import { clientIp } from '../middleware/request-info.js';

export interface ConnectionCap {
  /** For the http.Server's 'connection' event (prepended): refuses a socket over the cap. */
  onConnection(socket: Socket): void;
  /** Counts requests that came through a trusted proxy, per forwarded client IP. */
  perClient: RequestHandler;
  /** Connections and proxied requests now counted for ip. */
  count(ip: string): number;
  /** Connections and proxied requests refused so far, for the metrics. */
  counters: { refused: number };
}

const REFUSED = Symbol('over the connection cap');

function refusal(): string {
  const [, message] = CATALOGUE.E_TOO_MANY_CONNECTIONS;
  const body = `${message}\n`;
  return [
    'HTTP/1.1 503 Service Unavailable',
    `Retry-After: ${RETRY_AFTER_SECONDS}`,
    'Content-Type: text/plain; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'X-Content-Type-Options: nosniff',
    'Connection: close',
    '',
    body,
  ].join('\r\n');
}

export function isRefusedSocket(socket: Socket | null | undefined): boolean {
  return socket !== null && socket !== undefined && (socket as { [REFUSED]?: boolean })[REFUSED] === true;
}

export function createConnectionCap(max: number, trusted: AddressMatcher): ConnectionCap {
  const counts = new Map<string, number>();
  const counters = { refused: 0 };
  const acquire = (ip: string): boolean => {
    const n = counts.get(ip) ?? 0;
    if (n >= max) return false;
    counts.set(ip, n + 1);
    return true;
  };
  const release = (ip: string) => {
    const n = (counts.get(ip) ?? 1) - 1;
    if (n <= 0) counts.delete(ip);
    else counts.set(ip, n);
  };

  return {
    onConnection(socket) {
      const peer = socket.remoteAddress;
      if (max === 0 || peer === undefined || trusted(peer)) return;
      if (acquire(peer)) {
        socket.once('close', () => release(peer));
        return;
      }
      counters.refused += 1;
      // The HTTP parser attaches after this listener; the flag makes the app ignore whatever it parses.
      (socket as { [REFUSED]?: boolean })[REFUSED] = true;
      socket.end(refusal());
      socket.once('finish', () => socket.destroy());
      socket.setTimeout(5_000, () => socket.destroy());
    },

    perClient(req, res, next) {
      if (isRefusedSocket(req.socket)) return void res.destroy();
      const peer = req.socket.remoteAddress;
      const client = clientIp(req);
      // No peer address: a unix socket, which only local processes (nginx) can open, so a proxy.
      const viaProxy = peer === undefined || trusted(peer);
      if (max === 0 || !viaProxy || client === (peer ?? 'unknown')) return next();
      if (!acquire(client)) {
        counters.refused += 1;
        throw httpError('E_TOO_MANY_CONNECTIONS', { headers: { 'Retry-After': String(RETRY_AFTER_SECONDS) } });
      }
      let released = false;
      const done = () => {
        if (released) return;
        released = true;
        release(client);
      };
      res.once('finish', done);
      res.once('close', done);
      next();
    },

    count: (ip) => counts.get(ip) ?? 0,
    counters,
  };
}
