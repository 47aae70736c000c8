// HTTPS for the TLS and ACME tests: the port of a test server, and a client that sends a name by SNI.
import http from 'node:http';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import type { TestServer } from './test-server.js';

export function portOf(server: TestServer): number {
  return Number(new URL(server.url).port);
}

export interface HttpsAnswer {
  status: number;
  body: Buffer;
  /** Whether the request went out on a socket an earlier request had used (keep-alive). */
  reusedSocket: boolean;
  /** SHA-256 fingerprint of the certificate the connection was opened with. */
  fingerprint: string;
}

export interface HttpsOptions {
  servername: string;
  ca: string | string[];
  method?: string;
  body?: Buffer;
  headers?: http.OutgoingHttpHeaders;
  /** A keep-alive agent shared between requests; none opens a connection per request. */
  agent?: https.Agent;
}

/** A request to 127.0.0.1:port for path, verified against ca for servername (also sent as Host). */
export function httpsRequest(port: number, requestPath: string, options: HttpsOptions): Promise<HttpsAnswer> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        path: requestPath,
        method: options.method ?? 'GET',
        servername: options.servername,
        ca: options.ca,
        headers: { Host: options.servername, ...(options.body ? { 'Content-Length': options.body.length } : {}), ...options.headers },
        agent: options.agent ?? false,
        timeout: 10_000,
      },
      (res) => {
        const fingerprint = (res.socket as TLSSocket).getPeerCertificate().fingerprint256;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), reusedSocket: req.reusedSocket, fingerprint }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('HTTPS request timed out')));
    req.on('error', reject);
    req.end(options.body);
  });
}
