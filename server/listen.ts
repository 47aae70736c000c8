// The public listener: TCP on ListenIP:ListenPort or a unix socket, with config timeouts mapped onto Node's
// http.Server (see README, "Timeouts"), and a graceful close that waits for running transfers. With EnableTLS the
// same server is an https.Server whose certificates come from server/tls.ts; timeouts and hooks are the same.
import { mkdir, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { TlsOptions } from 'node:tls';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';
import type { RequestListener } from 'node:http';
import type { Config } from './config.js';

export interface Listener {
  server: http.Server;
  /** http://host:port (https:// with TLS) for TCP, the socket path for a unix socket. */
  address: string;
  /** Stops accepting, lets running requests finish for up to graceMs, then cuts the rest. */
  close(graceMs: number): Promise<void>;
}

type ListenConfig = Pick<Config, 'ListenIP' | 'ListenPort' | 'UnixSocket' | 'UnixSocketPath' | 'ReadTimeout' | 'ReadHeaderTimeout' | 'WriteTimeout' | 'IdleTimeout'>;

export interface ServerHooks {
  /** Runs first for every accepted socket, before the HTTP parser reads a byte (the per-IP cap). */
  onConnection?: (socket: Socket) => void;
}

/**
 * With tls (EnableTLS: the SNICallback and default certificate of server/tls.ts) the server speaks HTTPS; everything
 * else is the same. onConnection then sees the TCP socket before the handshake, so the per-IP cap also counts
 * handshakes that never finish (a refused socket is closed; its plain-text 503 is not readable by a TLS client).
 */
export function createHttpServer(handler: RequestListener, config: ListenConfig, hooks: ServerHooks = {}, tls?: TlsOptions): http.Server {
  // ReadHeaderTimeout: the request line and headers must arrive within it, however long ReadTimeout is.
  const headersTimeout = config.ReadTimeout > 0 ? Math.min(config.ReadHeaderTimeout, config.ReadTimeout) : config.ReadHeaderTimeout;
  // Node enforces requestTimeout and headersTimeout only when it sweeps its connections; sweep often enough
  // for short limits.
  const shortest = config.ReadTimeout > 0 ? Math.min(config.ReadTimeout, headersTimeout) : headersTimeout;
  const sweep = Math.min(30_000, Math.max(250, Math.floor(shortest / 4)));
  const server: http.Server = tls
    ? // A TLS handshake is part of getting the request's headers: it may not take longer than ReadHeaderTimeout.
      https.createServer({ ...tls, connectionsCheckingInterval: sweep, handshakeTimeout: headersTimeout }, handler)
    : http.createServer({ connectionsCheckingInterval: sweep }, handler);
  if (hooks.onConnection) server.prependListener('connection', hooks.onConnection);
  // Expect: 100-continue goes to the app, which sends the 100 only once the MAC, size and path are accepted,
  // so a refused client never sends its body.
  server.on('checkContinue', handler);
  // ReadTimeout: the whole request, body included, must arrive within it (0 = no limit).
  server.requestTimeout = config.ReadTimeout;
  server.headersTimeout = headersTimeout;
  // WriteTimeout: a socket on which nothing moves for this long is closed (Node has no total write deadline).
  server.timeout = config.WriteTimeout;
  // IdleTimeout: how long a keep-alive connection may wait for its next request.
  server.keepAliveTimeout = config.IdleTimeout;
  return server;
}

export async function listen(server: http.Server, config: ListenConfig): Promise<Listener> {
  let address: string;
  if (config.UnixSocket) {
    await mkdir(path.dirname(config.UnixSocketPath), { recursive: true });
    // A socket file left by an earlier run would make listen() fail with EADDRINUSE.
    await rm(config.UnixSocketPath, { force: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.UnixSocketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    address = config.UnixSocketPath;
  } else {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: config.ListenIP, port: config.ListenPort }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const info = server.address() as AddressInfo;
    const host = info.family === 'IPv6' ? `[${info.address}]` : info.address;
    address = `${server instanceof https.Server ? 'https' : 'http'}://${host}:${info.port}`;
  }
  return {
    server,
    address,
    close: async (graceMs) => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const timer = setTimeout(() => server.closeAllConnections(), graceMs);
      await closed;
      clearTimeout(timer);
      if (config.UnixSocket) await rm(config.UnixSocketPath, { force: true });
    },
  };
}
