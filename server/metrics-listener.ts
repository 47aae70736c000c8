// The operators' listener on ListenIPMetrics:MetricsPort, apart from the public port: /metrics (Prometheus,
// with MetricsEnabled), /healthz (the process serves), /readyz (it can do its work: the store takes a write,
// and Redis, clamd and S3 answer when they are switched on; 503 with a JSON body naming what is down) and, with
// an AdminToken, the admin API below /admin/ (server/admin-api.ts).
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { Registry } from 'prom-client';
import type { Logger } from './logger.js';

/** One dependency's answer: true when it works; a thrown error or false says it does not. */
export type ReadinessCheck = () => Promise<boolean>;

export interface MetricsListenerDeps {
  /** MetricsEnabled: /metrics. */
  registry?: Registry;
  /** AdminToken: the admin API below /admin/. */
  admin?: (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => Promise<void>;
  host: string;
  port: number;
  /** Named checks, e.g. store, redis, clamd. */
  checks: Record<string, ReadinessCheck>;
  logger: Logger;
}

export interface MetricsListener {
  /** http://host:port */
  address: string;
  close(): Promise<void>;
}

const CHECK_TIMEOUT_MS = 2000;

/** Every check run at once, each bounded in time: what /readyz answers. */
export async function readiness(checks: Record<string, ReadinessCheck>): Promise<{ ready: boolean; checks: Record<string, string> }> {
  const names = Object.keys(checks);
  const results = await Promise.all(names.map((name) => runCheck(checks[name]!)));
  return { ready: results.every((r) => r === 'ok'), checks: Object.fromEntries(names.map((name, i) => [name, results[i]!])) };
}

/** The store check: a file can be created and removed where uploads are staged. */
export function storeWritable(stagingDir: string): ReadinessCheck {
  return async () => {
    const probe = path.join(stagingDir, `.ready-${randomBytes(6).toString('hex')}`);
    try {
      await writeFile(probe, '', { flag: 'wx', mode: 0o600 });
      return true;
    } finally {
      await rm(probe, { force: true });
    }
  };
}

async function runCheck(check: ReadinessCheck): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => (timer = setTimeout(() => resolve('down: no answer in time'), CHECK_TIMEOUT_MS)));
  const answer = check().then(
    (ok) => (ok ? 'ok' : 'down'),
    (err: unknown) => `down: ${err instanceof Error ? ((err as NodeJS.ErrnoException).code ?? err.message) : String(err)}`,
  );
  try {
    return await Promise.race([answer, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export async function startMetricsListener(deps: MetricsListenerDeps): Promise<MetricsListener> {
  const server = http.createServer((req, res) => {
    void (async () => {
      const url = (req.url ?? '/').split('?')[0];
      if (deps.admin && url?.startsWith('/admin/')) {
        await deps.admin(req, res, new URL(req.url ?? '/', 'http://admin'));
      } else if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain' }).end('Method not allowed\n');
      } else if (url === '/metrics' && deps.registry) {
        const body = await deps.registry.metrics();
        res.writeHead(200, { 'Content-Type': deps.registry.contentType }).end(body);
      } else if (url === '/healthz') {
        res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok\n');
      } else if (url === '/readyz') {
        const answer = await readiness(deps.checks);
        res.writeHead(answer.ready ? 200 : 503, { 'Content-Type': 'application/json' }).end(`${JSON.stringify(answer)}\n`);
      } else {
        res.writeHead(404, { 'Content-Type': 'text/plain' }).end('Not found\n');
      }
    })().catch((err: unknown) => {
      deps.logger.error('metrics.failed', { cause: err instanceof Error ? (err.stack ?? err.message) : String(err) });
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' }).end('Internal server error\n');
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: deps.host, port: deps.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err: Error) => deps.logger.error('metrics.listener_failed', { cause: err.message }));
  const info = server.address() as AddressInfo;
  const host = info.family === 'IPv6' ? `[${info.address}]` : info.address;
  return {
    address: `http://${host}:${info.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
