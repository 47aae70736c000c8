// The tus door from a page on another origin, in Chromium: tus-js-client uploads with Upload-Checksum on every
// PATCH (so the preflight must allow it), and the page reads Upload-Expires, X-Download-URL, WWW-Authenticate
// on a refusal, the 460 of a bad checksum and a download's Content-Disposition: each only if CORS exposes it.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import type { Browser } from 'playwright-core';
import { startChromium } from './helpers/chromium.js';
import { grantFor } from './helpers/tus-client.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

const SIZE = 300_000;
const CHUNK = 100_000;
const bytes = () => Buffer.from(Array.from({ length: SIZE }, (_, i) => i % 251));

interface PageResult {
  checksummed: number;
  expires: string | null;
  download: string | null;
  downloadSha256: string;
  disposition: string | null;
  refusal: { status: number; authenticate: string | null };
  mismatch: number;
}

/** Serves the page and the tus-js-client browser bundle on another port of loopback: another origin. */
async function startPageServer(): Promise<{ url: string; close(): Promise<void> }> {
  const bundle = await readFile(createRequire(import.meta.url).resolve('tus-js-client/dist/tus.min.js'));
  const server = http.createServer((req, res) => {
    if (req.url === '/tus.min.js') res.writeHead(200, { 'Content-Type': 'text/javascript' }).end(bundle);
    else res.writeHead(200, { 'Content-Type': 'text/html' }).end('<!doctype html><title>uploader</title><script src="/tus.min.js"></script>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

describe('tus from a page on another origin (Chromium)', function () {
  this.timeout(120_000);
  let server: TestServer;
  let page: { url: string; close(): Promise<void> };
  let browser: Browser;

  before(async () => {
    server = await startTestServer({ TusUploadExpiry: '1h' });
    page = await startPageServer();
    browser = await startChromium();
  });
  after(async () => {
    await browser?.close();
    await page?.close();
    await server?.close();
  });

  it('uploads with checksums and reads every header the answers expose', async () => {
    const tab = await browser.newPage();
    // The test runs through tsx, which wraps named functions in a __name() helper that the page lacks.
    await tab.addInitScript({ content: 'window.__name = (f) => f;' });
    await tab.goto(page.url);
    assert.notEqual(new URL(page.url).origin, new URL(server.url).origin);
    const result = await tab.evaluate(
      async ({ endpoint, grant, size, chunkSize }): Promise<PageResult> => {
        type TusRequest = { getMethod(): string; getHeader(name: string): string | undefined; setHeader(name: string, value: string): void };
        type TusResponse = { getHeader(name: string): string | null; getStatus(): number };
        type TusError = Error & { originalResponse?: TusResponse | null };
        const tus = (globalThis as unknown as { tus: { Upload: new (file: Blob, options: Record<string, unknown>) => { start(): void } } }).tus;
        const file = new Blob([Uint8Array.from({ length: size }, (_, i) => i % 251)], { type: 'text/plain' });
        const base64 = (buffer: ArrayBuffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)));
        const hex = (buffer: ArrayBuffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, '0')).join('');
        const seen = { checksummed: 0, expires: null as string | null, download: null as string | null };
        const upload = (token: string, corrupt: boolean) =>
          new Promise<void>((resolve, reject) => {
            new tus.Upload(file, {
              endpoint,
              chunkSize,
              retryDelays: null,
              storeFingerprintForResuming: false,
              headers: { Authorization: `Bearer ${token}` },
              metadata: { filename: 'browser.txt', filetype: 'text/plain' },
              onBeforeRequest: async (req: TusRequest) => {
                if (req.getMethod() !== 'PATCH') return;
                const offset = Number(req.getHeader('Upload-Offset'));
                const chunk = corrupt ? new Blob(['not these bytes']) : file.slice(offset, Math.min(offset + chunkSize, size));
                req.setHeader('Upload-Checksum', `sha256 ${base64(await crypto.subtle.digest('SHA-256', await chunk.arrayBuffer()))}`);
                seen.checksummed += 1;
              },
              onAfterResponse: (req: TusRequest, res: TusResponse) => {
                if (req.getMethod() === 'POST') seen.expires = res.getHeader('Upload-Expires');
                seen.download = res.getHeader('X-Download-URL') ?? seen.download;
              },
              onSuccess: () => resolve(),
              onError: (err: TusError) => reject(err),
            }).start();
          });
        await upload(grant, false);
        const got = await fetch(seen.download ?? 'about:blank');
        const downloadSha256 = hex(await crypto.subtle.digest('SHA-256', await got.arrayBuffer()));
        const refused = await upload('not-a-grant', false).then(
          () => undefined,
          (err: TusError) => err.originalResponse,
        );
        const mismatched = await upload(grant, true).then(
          () => undefined,
          (err: TusError) => err.originalResponse,
        );
        return {
          ...seen,
          downloadSha256,
          disposition: got.headers.get('Content-Disposition'),
          refusal: { status: refused?.getStatus() ?? 0, authenticate: refused?.getHeader('WWW-Authenticate') ?? null },
          mismatch: mismatched?.getStatus() ?? 0,
        };
      },
      { endpoint: `${server.url}/files/`, grant: await grantFor(server), size: SIZE, chunkSize: CHUNK },
    );
    assert.equal(result.checksummed, SIZE / CHUNK + 1, 'every PATCH carried Upload-Checksum (one of them the refused one)');
    assert.ok(result.expires && Date.parse(result.expires) > Date.now(), `Upload-Expires read by the page: ${result.expires}`);
    assert.ok(result.download?.startsWith(`${server.url}/upload/`), `X-Download-URL read by the page: ${result.download}`);
    assert.equal(result.downloadSha256, createHash('sha256').update(bytes()).digest('hex'));
    assert.match(result.disposition ?? '', /browser\.txt/);
    assert.equal(result.refusal.status, 401);
    assert.match(result.refusal.authenticate ?? '', /^Bearer realm="hmac-file-server"/);
    assert.equal(result.mismatch, 460);
  });
});
