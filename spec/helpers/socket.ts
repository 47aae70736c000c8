// Raw TCP exchanges for what an HTTP client library will not do: send headers without the body, stop
// halfway, pause between parts, hang up as soon as the answer starts.
import net from 'node:net';

export interface ExchangeOptions {
  /** When to stop listening: once the response head arrived, at the first byte, or when the server closes. */
  until?: 'head' | 'data' | 'close';
  /** Half-close our side after the last part: a client that gives up. */
  end?: boolean;
}

/** Writes each part in order to a new connection (a number pauses that many ms); resolves with the answer. */
export function exchange(baseUrl: string, parts: ReadonlyArray<string | Buffer | number>, options: ExchangeOptions = {}): Promise<string> {
  const { until = 'close', end = false } = options;
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    let text = '';
    const socket = net.connect(Number(url.port), url.hostname.replace(/^\[|\]$/g, ''), () => {
      void (async () => {
        for (const part of parts) {
          if (socket.destroyed) return;
          if (typeof part === 'number') await new Promise((r) => setTimeout(r, part));
          else socket.write(part);
        }
        if (end && !socket.destroyed) socket.end();
      })();
    });
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (until === 'data' || (until === 'head' && text.includes('\r\n\r\n'))) socket.destroy();
    });
    socket.on('close', () => resolve(text));
    socket.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' ? resolve(text) : reject(err)));
  });
}

/** The request line and headers of a request, ready for exchange(). */
export function head(method: string, pathAndQuery: string, headers: Record<string, string | number> = {}): string {
  const lines = Object.entries({ Host: 'test', ...headers }).map(([name, value]) => `${name}: ${value}`);
  return `${method} ${pathAndQuery} HTTP/1.1\r\n${lines.join('\r\n')}\r\n\r\n`;
}
