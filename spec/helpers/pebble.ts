// Debian's pebble (a small ACME CA for tests) on random loopback ports, from a private config in a temp folder,
// with pebble-challtestsrv as its DNS server: that mock answers every A query with 127.0.0.1 (and no AAAA), so the
// validation of any test host name connects to loopback and nothing outside the test is asked. Pebble's HTTP-01
// validations go to 127.0.0.1:httpPort (the server's ACMEHTTPPort). Pebble keeps no state: a restart has a new
// issuing root and forgets accounts and orders.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ensureDebianPackages } from './debian-packages.js';
import { acceptsConnections, freePort, restartable, startDaemon, type Daemon } from './local-daemon.js';

const run = promisify(execFile);

export interface RunningPebble {
  /** https://127.0.0.1:PORT/dir */
  directoryUrl: string;
  /** The self-signed certificate of pebble's own HTTPS API: what ACMECAFile names. */
  apiCaFile: string;
  apiCa: string;
  /** The current issuing root (management API /roots/0), new at every start. */
  root(): Promise<string>;
  /** Starts pebble again after stop(); its DNS server keeps running. */
  start(): Promise<void>;
  stop(): Promise<void>;
  dispose(): Promise<void>;
}

function get(url: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca, agent: false, timeout: 5000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${url}: ${res.statusCode}`))));
      })
      .on('timeout', function (this: import('node:http').ClientRequest) {
        this.destroy(new Error(`GET ${url} timed out`));
      })
      .on('error', reject);
  });
}

export async function startPebble(options: { httpPort: number }): Promise<RunningPebble> {
  await ensureDebianPackages({ pebble: 'pebble', 'pebble-challtestsrv': 'pebble', openssl: 'openssl' });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-pebble-'));
  let dns: Daemon | undefined;
  try {
    const apiCaFile = path.join(dir, 'api-cert.pem');
    const apiKey = path.join(dir, 'api-key.pem');
    await run('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=pebble test API',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', apiKey, '-out', apiCaFile,
    ]);
    const [acmePort, managementPort, tlsPort, dnsPort, dnsManagementPort] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
    const config = path.join(dir, 'pebble-config.json');
    await writeFile(
      config,
      JSON.stringify({
        pebble: {
          listenAddress: `127.0.0.1:${acmePort}`,
          managementListenAddress: `127.0.0.1:${managementPort}`,
          certificate: apiCaFile,
          privateKey: apiKey,
          httpPort: options.httpPort,
          tlsPort,
          ocspResponderURL: '',
          externalAccountBindingRequired: false,
        },
      }),
    );
    // Only the mock DNS server; its own challenge responders are switched off.
    dns = startDaemon(
      'pebble-challtestsrv',
      'pebble-challtestsrv',
      ['-dns01', `127.0.0.1:${dnsPort}`, '-http01', '', '-https01', '', '-tlsalpn01', '', '-management', `127.0.0.1:${dnsManagementPort}`, '-defaultIPv4', '127.0.0.1', '-defaultIPv6', ''],
      { logFile: path.join(dir, 'challtestsrv.log') },
    );
    await dns.waitUntilReady(async () => (await acceptsConnections(dnsPort)) && acceptsConnections(dnsManagementPort), { timeoutMs: 15_000, pollMs: 50, notReady: 'pebble-challtestsrv did not listen within 15 s' });
    const apiCa = await readFile(apiCaFile, 'utf8');
    const env = {
      ...process.env,
      // No random sleeps before validations, no deliberately refused nonces, and never an authorization reused
      // from an earlier order (a renewal then always proves control again).
      PEBBLE_VA_NOSLEEP: '1',
      PEBBLE_WFE_NONCEREJECT: '0',
      PEBBLE_AUTHZREUSE: '0',
    };
    const ready = async () => (await acceptsConnections(acmePort)) && acceptsConnections(managementPort);
    const ca = restartable(dir, () => startDaemon('pebble', 'pebble', ['-config', config, '-dnsserver', `127.0.0.1:${dnsPort}`, '-strict=false'], { logFile: path.join(dir, 'pebble.log'), env }), {
      check: ready,
      timeoutMs: 15_000,
      notReady: 'pebble did not listen within 15 s',
    });
    await ca.start();
    const runningDns = dns;
    return {
      directoryUrl: `https://127.0.0.1:${acmePort}/dir`,
      apiCaFile,
      apiCa,
      root: () => get(`https://127.0.0.1:${managementPort}/roots/0`, apiCa),
      start: () => ca.start(),
      stop: () => ca.stop(),
      dispose: async () => {
        await ca.stop();
        await runningDns.stop({ graceMs: 5000 });
        await ca.dispose();
      },
    };
  } catch (err) {
    await dns?.stop({ graceMs: 2000 });
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
