// One raw TCP connection that a test drives step by step: write part of a request, do something else (send
// the server a signal), write the rest, and watch what the server answers and when it closes.
import net from 'node:net';

export interface RawConnection {
  socket: net.Socket;
  /** Everything the server sent so far (latin1). */
  readonly received: string;
  /** Set once the connection closed, by either side. */
  readonly closedAt: number | undefined;
  write(data: string | Buffer): Promise<void>;
  /** Resolves once received matches pattern; rejects when the connection closes first or after timeoutMs. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Resolves with the time the connection closed; rejects after timeoutMs. */
  closed(timeoutMs?: number): Promise<number>;
  destroy(): void;
}

export function openConnection(baseUrl: string): Promise<RawConnection> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    let received = '';
    let closedAt: number | undefined;
    const waiters = new Set<() => void>();
    const wake = () => {
      for (const waiter of [...waiters]) waiter();
    };
    const socket = net.connect(Number(url.port), url.hostname.replace(/^\[|\]$/g, ''));
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      wake();
    });
    // A reset (the server cut the connection) is a close like any other here.
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closedAt = Date.now();
      wake();
    });
    const until = <T>(check: () => T | undefined, failure: () => Error | undefined, timeoutMs: number, what: string): Promise<T> =>
      new Promise((done, fail) => {
        const timer = setTimeout(() => {
          waiters.delete(poll);
          fail(new Error(`${what} within ${timeoutMs} ms; received: ${JSON.stringify(received.slice(0, 300))}`));
        }, timeoutMs);
        const poll = () => {
          const value = check();
          const error = value === undefined ? failure() : undefined;
          if (value === undefined && error === undefined) return;
          clearTimeout(timer);
          waiters.delete(poll);
          if (value !== undefined) done(value);
          else if (error) fail(error);
        };
        waiters.add(poll);
        poll();
      });
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve({
        socket,
        get received() {
          return received;
        },
        get closedAt() {
          return closedAt;
        },
        write: (data) =>
          new Promise((done, fail) => {
            socket.write(data, (err) => (err ? fail(err) : done()));
          }),
        waitFor: (pattern, timeoutMs = 10_000) =>
          until(
            () => (pattern.test(received) ? received : undefined),
            () => (closedAt !== undefined ? new Error(`the connection closed before ${pattern}; received: ${JSON.stringify(received.slice(0, 300))}`) : undefined),
            timeoutMs,
            `no ${pattern}`,
          ),
        closed: (timeoutMs = 10_000) => until(() => closedAt, () => undefined, timeoutMs, 'the connection did not close'),
        destroy: () => socket.destroy(),
      });
    });
    socket.once('error', reject);
  });
}

/** Whether a new TCP connection to baseUrl is accepted now (false: refused). */
export function connects(baseUrl: string): Promise<boolean> {
  const url = new URL(baseUrl);
  return new Promise((resolve) => {
    const socket = net.connect(Number(url.port), url.hostname.replace(/^\[|\]$/g, ''));
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
