// A real clamd (Debian's clamav-daemon) from a private config and a signature database made at test time for
// the EICAR test string (docs/protocols.md, "ClamAV without a network"): no freshclam, no network, loopback only.
import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ClamdScanner } from '../../hooks/scanner-clamd.js';
import { ensureDebianPackages } from './debian-packages.js';
import { freePort, restartable, startDaemon, type Restartable } from './local-daemon.js';

const run = promisify(execFile);

/** The EICAR test file, assembled at run time so no file of the project carries it. */
export const EICAR = Buffer.from(['X5O!P%@AP[4\\PZX54(P^)7CC)7}$', 'EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'].join(''));

export const CLAMD_BINARIES: Record<string, string> = { clamd: 'clamav-daemon', sigtool: 'clamav', clamdscan: 'clamdscan' };

export interface RunningClamd extends Restartable {
  socketPath: string;
  tcpPort: number;
}

export async function startClamd(options: { streamMaxLength?: string } = {}): Promise<RunningClamd> {
  await ensureDebianPackages(CLAMD_BINARIES);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-clamd-'));
  const db = path.join(dir, 'db');
  await run('mkdir', ['-p', db]);
  const eicarFile = path.join(dir, 'eicar.txt');
  await writeFile(eicarFile, EICAR);
  // Two signatures: the file's MD5, and a body pattern that also catches EICAR inside a larger file.
  const { stdout } = await run('sigtool', ['--md5', eicarFile]);
  await writeFile(path.join(db, 'test.hdb'), stdout);
  await writeFile(path.join(db, 'test.ndb'), `Eicar-Test-Body:0:*:${Buffer.from('EICAR-STANDARD-ANTIVIRUS-TEST-FILE').toString('hex')}\n`);
  const socketPath = path.join(dir, 'clamd.sock');
  const tcpPort = await freePort();
  const logFile = path.join(dir, 'clamd.log');
  const configFile = path.join(dir, 'clamd.conf');
  await writeFile(
    configFile,
    [
      `LocalSocket ${socketPath}`,
      `TCPSocket ${tcpPort}`,
      'TCPAddr 127.0.0.1',
      'Foreground yes',
      ...(process.getuid?.() === 0 ? ['User root'] : []),
      `DatabaseDirectory ${db}`,
      `StreamMaxLength ${options.streamMaxLength ?? '25M'}`,
      `LogFile ${logFile}`,
      `PidFile ${path.join(dir, 'clamd.pid')}`,
      '',
    ].join('\n'),
  );

  const scanner = new ClamdScanner({ path: socketPath }, 2000);
  const clamd: RunningClamd = {
    socketPath,
    tcpPort,
    ...restartable(dir, () => startDaemon('clamd', 'clamd', ['-c', configFile], { logFile }), {
      check: () => scanner.ping(),
      timeoutMs: 30_000,
      notReady: 'clamd did not answer PING within 30 s',
    }),
  };
  await clamd.start();
  return clamd;
}

/**
 * A TCP relay in front of clamd that counts INSTREAM scans in flight and holds each for holdMs before passing
 * it on, so that scans overlap whenever the server lets them.
 */
export async function scanCounter(clamd: RunningClamd, holdMs: number): Promise<{ url: string; maxInFlight: () => number; close: () => Promise<void> }> {
  let inFlight = 0;
  let max = 0;
  // allowHalfOpen: the scanner ends its side after the last chunk and then waits for clamd's answer.
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    const upstream = net.connect(clamd.socketPath);
    let counted = false;
    let first = true;
    client.on('data', (chunk: Buffer) => {
      if (first) {
        first = false;
        if (chunk.subarray(0, 10).toString('latin1') === 'zINSTREAM\0') {
          counted = true;
          inFlight += 1;
          max = Math.max(max, inFlight);
        }
        client.pause();
        setTimeout(() => {
          upstream.write(chunk);
          client.pipe(upstream);
          client.resume();
        }, counted ? holdMs : 0);
      }
    });
    upstream.pipe(client);
    // A scan is over for the server once clamd's NUL-terminated answer is on its way back, not when the
    // sockets close (that comes a moment later, possibly after the server started its next scan).
    upstream.on('data', (chunk: Buffer) => {
      if (counted && chunk.includes(0)) {
        counted = false;
        inFlight -= 1;
      }
    });
    const done = () => {
      if (counted) inFlight -= 1;
      counted = false;
      upstream.destroy();
      client.destroy();
    };
    client.on('close', done);
    upstream.on('close', done);
    client.on('error', done);
    upstream.on('error', done);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `tcp://127.0.0.1:${port}`,
    maxInFlight: () => max,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
