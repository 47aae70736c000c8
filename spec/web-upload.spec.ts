// The upload page (WebUploadEnabled) in Debian's Chromium: Uppy's Dashboard against a real server, every
// upload checked by the sha256 of what its download link serves.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { buildUploadPage } from '../scripts/build-web.js';
import { webUploadPage } from '../middleware/web-upload.js';
import { startChromium } from './helpers/chromium.js';
import { rawRequest } from './helpers/http.js';
import { grantFor } from './helpers/tus-client.js';
import { startTestServer, type TestServer } from './helpers/test-server.js';

const MiB = 1024 * 1024;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** Where the screenshot of the finished page goes: TEST_ARTIFACTS, else the temp folder. */
const ARTIFACTS = process.env.TEST_ARTIFACTS ?? path.join(os.tmpdir(), 'hmac-file-server-artifacts');

/** Waits until the status bar shows at least percent; polled from here (the page's CSP forbids eval). */
async function progressPast(page: Page, percent: number): Promise<void> {
  for (const started = Date.now(); Date.now() - started < 60_000; await new Promise((r) => setTimeout(r, 50))) {
    const shown = /(\d+)%/.exec((await page.textContent('.uppy-StatusBar-content').catch(() => null)) ?? '');
    if (shown && Number(shown[1]) >= percent) return;
  }
  throw new Error(`the upload did not pass ${percent}%`);
}

/** The text of #status once the page shows one. */
async function statusOf(page: Page): Promise<string> {
  await page.locator('#status').filter({ hasText: /./ }).waitFor({ timeout: 30_000 });
  return (await page.textContent('#status')) ?? '';
}

describe('the upload page (Uppy) in Chromium', function () {
  this.timeout(180_000);
  let server: TestServer;
  let browser: Browser;
  let dir: string;

  before(async function () {
    this.timeout(600_000);
    // The page the server serves is the one built from web/ now.
    await buildUploadPage();
    server = await startTestServer({ WebUploadEnabled: true, MaxUploadSize: '64MiB', TusUploadExpiry: '1h' });
    browser = await startChromium();
    dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-web-'));
  });
  after(async () => {
    await browser?.close();
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** A page opened with the grant in its fragment, as an application would link to it. */
  const open = async (grant: string, options: { width?: number; throttle?: number } = {}): Promise<{ page: Page; errors: string[] }> => {
    const page = await browser.newPage({ viewport: { width: options.width ?? 1000, height: 900 } });
    const errors: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error') errors.push(message.text());
    });
    page.on('pageerror', (err) => errors.push(err.message));
    if (options.throttle) {
      // Slow enough to pause and reload mid-way.
      const cdp = await page.context().newCDPSession(page);
      await cdp.send('Network.enable');
      await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: options.throttle });
    }
    await page.goto(`${server.url}/#grant=${grant}`);
    await page.waitForSelector('.uppy-Dashboard');
    return { page, errors };
  };
  const fileOf = async (name: string, size: number) => {
    const file = path.join(dir, name);
    const data = randomBytes(size);
    await writeFile(file, data);
    return { file, data };
  };
  const add = (page: Page, file: string) => page.setInputFiles('.uppy-Dashboard-input[name="files[]"]', file);
  const uploadButton = (page: Page) => page.click('.uppy-StatusBar-actionBtn--upload');
  const doneLink = async (page: Page, name: string) => {
    const link = page.locator('#done a', { hasText: name });
    await link.waitFor({ timeout: 120_000 });
    return (await link.getAttribute('href'))!;
  };
  /** The server's offset of the one upload in flight, read with the grant like a client would. */
  const offsetOf = async (uploadUrl: string, grant: string) =>
    Number((await rawRequest(server.url, 'HEAD', new URL(uploadUrl).pathname, { 'Tus-Resumable': '1.0.0', Authorization: `Bearer ${grant}` })).headers['upload-offset']);

  it('uploads a 20 MB file through the Dashboard and shows its download link, which serves the same bytes', async () => {
    const grant = await grantFor(server, { subject: 'alice', maxSize: 64 * MiB });
    const { page, errors } = await open(grant);
    // The grant is read and taken out of the address bar.
    assert.equal(new URL(page.url()).hash, '');
    assert.match((await page.textContent('#limits')) ?? '', /files up to 64\.0 MiB/);
    const { file, data } = await fileOf('twenty.bin', 20 * MiB);
    await add(page, file);
    await uploadButton(page);
    const link = await doneLink(page, 'twenty.bin');
    assert.match(link, new RegExp(`^${server.url}/upload/[0-9a-f]{32}/twenty\\.bin$`));
    assert.equal(sha256(Buffer.from(await (await fetch(link)).arrayBuffer())), sha256(data));
    assert.equal(await page.locator('#done button').first().textContent(), 'Copy link');
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'upload-page.png'), fullPage: true });
    assert.deepEqual(errors, [], 'no script or CSP errors in the page');
    await page.close();
  });

  it('pauses (the server offset stops) and resumes to the end', async () => {
    const grant = await grantFor(server, { subject: 'alice', maxSize: 64 * MiB });
    const { page } = await open(grant, { throttle: 4 * MiB });
    const { file, data } = await fileOf('paused.bin', 20 * MiB);
    let uploadUrl: string | undefined;
    page.on('response', (res) => {
      if (res.request().method() === 'POST' && res.status() === 201) uploadUrl = res.headers().location;
    });
    await add(page, file);
    await uploadButton(page);
    await progressPast(page, 1);
    await page.click('button[data-cy="togglePauseResume"]');
    await new Promise((r) => setTimeout(r, 1500));
    const paused = await offsetOf(uploadUrl!, grant);
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await offsetOf(uploadUrl!, grant), paused, 'nothing arrives while paused');
    assert.ok(paused < data.length);
    await page.click('button[data-cy="togglePauseResume"]');
    const link = await doneLink(page, 'paused.bin');
    assert.equal(sha256(Buffer.from(await (await fetch(link)).arrayBuffer())), sha256(data));
    await page.close();
  });

  it('resumes after the page is reloaded mid-upload and the same file is added again, from the server offset', async () => {
    const grant = await grantFor(server, { subject: 'alice', maxSize: 64 * MiB });
    const { page } = await open(grant, { throttle: 4 * MiB });
    const { file, data } = await fileOf('reloaded.bin', 20 * MiB);
    await add(page, file);
    await uploadButton(page);
    await progressPast(page, 20);
    // The same tab loaded again from the link (a new query, so a real load and not a jump within the page).
    await page.goto(`${server.url}/?again#grant=${grant}`);
    await page.waitForSelector('.uppy-Dashboard');
    const offsets: number[] = [];
    page.on('request', (req) => {
      if (req.method() === 'PATCH') offsets.push(Number(req.headers()['upload-offset']));
    });
    await add(page, file);
    await uploadButton(page);
    const link = await doneLink(page, 'reloaded.bin');
    assert.ok(offsets[0]! > 0, `the first PATCH after the reload was at ${offsets[0]}, not from zero`);
    assert.equal(sha256(Buffer.from(await (await fetch(link)).arrayBuffer())), sha256(data));
    await page.close();
  });

  it("refuses a file over the grant's max_size in the page, before any byte is sent, and says why", async () => {
    const grant = await grantFor(server, { subject: 'alice', maxSize: MiB });
    const { page } = await open(grant);
    let posted = false;
    page.on('request', (req) => (posted ||= req.method() === 'POST'));
    const { file } = await fileOf('too-big.bin', 2 * MiB);
    await add(page, file);
    assert.match(await statusOf(page), /too-big\.bin: .*exceeds maximum allowed size of 1 MB/);
    assert.equal(posted, false);
    await page.close();
  });

  it("refuses, in the page, a file whose name is not the grant's filename, and takes the one that is", async () => {
    const grant = await grantFor(server, { subject: 'alice', maxSize: MiB, filename: 'report.pdf' });
    const { page } = await open(grant);
    assert.match((await page.textContent('#limits')) ?? '', /only a file named “report\.pdf”/);
    let posted = false;
    page.on('request', (req) => (posted ||= req.method() === 'POST'));
    await add(page, (await fileOf('other.pdf', 100)).file);
    assert.match(await statusOf(page), /^other\.pdf: this link only allows a file named “report\.pdf”\.$/);
    assert.equal(posted, false);
    const { file, data } = await fileOf('report.pdf', 1000);
    await add(page, file);
    await uploadButton(page);
    const link = await doneLink(page, 'report.pdf');
    assert.equal(sha256(Buffer.from(await (await fetch(link)).arrayBuffer())), sha256(data));
    await page.close();
  });

  it("shows the server's reason for an expired grant", async () => {
    const grant = await grantFor(server, { subject: 'alice', maxSize: MiB, ttlSeconds: -60 });
    const { page } = await open(grant);
    const { file } = await fileOf('late.bin', 1000);
    await add(page, file);
    await uploadButton(page);
    assert.match(await statusOf(page), /^late\.bin: Upload grant expired \(401\)$/);
    await page.close();
  });

  it('fits a 320 px wide screen and takes a grant pasted by keyboard when the link had none', async () => {
    const page = await browser.newPage({ viewport: { width: 320, height: 640 } });
    await page.goto(`${server.url}/`);
    await page.focus('#grant-input');
    await page.keyboard.type(await grantFor(server, { subject: 'alice', maxSize: MiB }));
    await page.keyboard.press('Enter');
    await page.waitForSelector('.uppy-Dashboard');
    assert.match((await page.textContent('#limits')) ?? '', /files up to 1\.0 MiB/);
    const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - document.documentElement.clientWidth');
    assert.ok(overflow <= 0, `${overflow} px wider than the screen`);
    await page.close();
  });

  it('refuses to start the page when it was not built, naming the folder', () => {
    assert.throws(() => webUploadPage({ dir: path.join(dir, 'not-built'), path: '/', tusPath: '/files/' }), /the upload page is not built in .*not-built \(npm run build\)/);
  });

  it('serves the page with its own self-only CSP, and nothing when WebUploadEnabled is off', async () => {
    const res = await rawRequest(server.url, 'GET', '/');
    assert.equal(res.status, 200);
    assert.match(String(res.headers['content-security-policy']), /^default-src 'self';/);
    assert.match(res.body.toString(), /data-endpoint="\/files\/"/);
    const off = await startTestServer();
    try {
      assert.equal((await rawRequest(off.url, 'GET', '/')).status, 404);
      assert.equal((await rawRequest(off.url, 'GET', '/hfs-upload.js')).status, 404);
    } finally {
      await off.close();
    }
  });
});
