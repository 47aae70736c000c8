// Debian's Chromium driven by playwright-core, for what only a browser checks (CORS above all). Installed by
// the test run when missing; started headless with the network features that call out to Google turned off
// (this machine's network is closed, and they would fail at every start).
import { chromium, type Browser } from 'playwright-core';
import { ensureDebianPackages } from './debian-packages.js';

const EXECUTABLE = '/usr/bin/chromium';

export async function startChromium(): Promise<Browser> {
  await ensureDebianPackages({ [EXECUTABLE]: 'chromium' });
  return chromium.launch({
    executablePath: EXECUTABLE,
    headless: true,
    // --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}
