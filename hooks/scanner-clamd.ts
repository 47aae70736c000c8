// A clamd client for the INSTREAM command (docs/protocols.md, "ClamAV without a network"): "zINSTREAM\0", then chunks
// of [uint32 big-endian length][bytes], then a zero-length chunk; clamd answers one NUL-terminated line:
// "stream: OK", "stream: <Name> FOUND", or "INSTREAM size limit exceeded. ERROR" (StreamMaxLength).
// Our own because the clamscan package writes the stream into the socket without backpressure (a large
// file sits in memory when clamd reads slower than the disk) and reports some errors as return values.
import net from 'node:net';
import type { Readable } from 'node:stream';
import { ScanTooLarge, ScannerUnavailable, type ScanVerdict, type Scanner } from './scanner.js';

export type ClamdAddress = { path: string } | { host: string; port: number };

/** ClamAVSocket: a unix socket path, or tcp://host:port. */
export function clamdAddress(socket: string): ClamdAddress {
  const tcp = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d+)\/?$/.exec(socket);
  if (tcp) return { host: tcp[1]!.replace(/^\[|\]$/g, ''), port: Number(tcp[2]) };
  return { path: socket };
}

const MAX_FRAME = 64 * 1024;

/** Writes one INSTREAM chunk as frames; false when the socket wants a drain first. */
function writeFrames(socket: net.Socket, chunk: Buffer): boolean {
  let ready = true;
  for (let at = 0; at < chunk.length; at += MAX_FRAME) {
    const part = chunk.subarray(at, at + MAX_FRAME);
    const length = Buffer.allocUnsafe(4);
    length.writeUInt32BE(part.length);
    ready = socket.write(Buffer.concat([length, part])) && ready;
  }
  return ready;
}

/**
 * clamd closed the connection while the stream was still being sent. It does that when the stream exceeds its
 * StreamMaxLength, after writing its answer, but Node destroys a socket on EPIPE before that answer is read.
 */
class ClosedWhileSending extends ScannerUnavailable {}

export class ClamdScanner implements Scanner {
  constructor(
    private readonly address: ClamdAddress,
    private readonly timeoutMs: number,
  ) {}

  /** Opens a connection and sends one command (and a body); resolves with clamd's NUL-terminated reply. */
  private async exchange(command: string, body?: Readable): Promise<string> {
    const socket = net.connect(this.address);
    let settled = false;
    const reply = new Promise<string>((resolve, reject) => {
      let text = '';
      socket.on('data', (chunk: Buffer) => {
        text += chunk.toString('utf8');
        const end = text.indexOf('\0');
        if (end !== -1) resolve(text.slice(0, end).trim());
      });
      socket.on('close', () => reject(new ScannerUnavailable(text ? `clamd answered "${text}" without finishing` : 'clamd closed the connection without an answer')));
      socket.on('error', (err: NodeJS.ErrnoException) => {
        if (err instanceof ScannerUnavailable) return reject(err);
        const early = body !== undefined && (err.code === 'EPIPE' || err.code === 'ECONNRESET');
        reject(early ? new ClosedWhileSending(`clamd closed the stream: ${err.message}`) : new ScannerUnavailable(`clamd unreachable: ${err.message}`));
      });
    }).finally(() => (settled = true));
    reply.catch(() => undefined);
    const timer = setTimeout(() => socket.destroy(new ScannerUnavailable(`clamd gave no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
    try {
      socket.write(`z${command}\0`);
      if (!body) {
        socket.end();
        return await reply;
      }
      try {
        // Backpressure all the way: the next chunk is read only once clamd has taken the last one.
        for await (const chunk of body as AsyncIterable<Buffer>) {
          // clamd may answer (and close) before reading everything, e.g. when StreamMaxLength is exceeded.
          if (settled) break;
          if (!writeFrames(socket, chunk)) await Promise.race([new Promise((resolve) => socket.once('drain', resolve)), reply]);
        }
        if (!settled) socket.end(Buffer.alloc(4));
      } catch (err) {
        // A socket failure is answered by the reply (or its absence); a failure to read the file is ours.
        if (err instanceof ScannerUnavailable) return await reply;
        throw err;
      }
      return await reply;
    } finally {
      clearTimeout(timer);
      socket.destroy();
      body?.destroy();
    }
  }

  async scan(plaintext: Readable): Promise<ScanVerdict> {
    let reply: string;
    try {
      reply = await this.exchange('INSTREAM', plaintext);
    } catch (err) {
      // A clamd that still answers PING refused this stream, not every stream: its size limit.
      if (err instanceof ClosedWhileSending && (await this.ping())) throw new ScanTooLarge(`${err.message} (StreamMaxLength exceeded)`);
      throw err;
    }
    if (/^stream: OK$/.test(reply)) return { infected: false };
    const found = /^stream: (.+) FOUND$/.exec(reply);
    if (found) return { infected: true, signature: found[1]! };
    if (/size limit exceeded/i.test(reply)) throw new ScanTooLarge(`clamd: ${reply} (StreamMaxLength exceeded)`);
    throw new ScannerUnavailable(`clamd answered "${reply}"`);
  }

  async ping(): Promise<boolean> {
    try {
      return (await this.exchange('PING')) === 'PONG';
    } catch {
      return false;
    }
  }
}
