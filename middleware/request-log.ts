// One http.request line per request: method, path (never the query, which holds MACs), status, bytes
// received and sent (headers included), duration and client IP.
import type { Socket } from 'node:net';
import type { Request, RequestHandler, Response } from 'express';
import type { Logger } from '../server/logger.js';
import { recordClient, requestPath } from './request-info.js';

/** What the http.request line says of a request; handed to the observer too (the metrics). */
export interface RequestEntry {
  status: number;
  bytesIn: number;
  bytesOut: number;
  ms: number;
}

export interface RequestObserver {
  started(): void;
  ended(req: Request, res: Response, entry: RequestEntry): void;
}

export function requestLog(logger: Logger, observer?: RequestObserver): RequestHandler {
  // Node has read a request's headers (and often the start of its body) before any middleware runs, so
  // bytes in are counted from where the previous request on the same connection ended.
  const readUpTo = new WeakMap<Socket, number>();
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    // Everything the line needs is taken now: a failed body stream can detach req.socket before the end.
    const client = recordClient(req);
    const path = requestPath(req);
    const socket = req.socket;
    const writtenBefore = socket.bytesWritten;
    let logged = false;
    observer?.started();
    const done = () => {
      if (logged) return;
      logged = true;
      const read = socket.bytesRead;
      const bytesIn = read - (readUpTo.get(socket) ?? 0);
      readUpTo.set(socket, read);
      const entry: RequestEntry = {
        status: res.writableFinished ? res.statusCode : 0,
        bytesIn,
        bytesOut: socket.bytesWritten - writtenBefore,
        ms: Number((process.hrtime.bigint() - started) / 1_000_000n),
      };
      logger.info('http.request', { method: req.method, path, status: entry.status, bytesIn, bytesOut: entry.bytesOut, ms: entry.ms, client });
      observer?.ended(req, res, entry);
    };
    res.once('finish', done);
    res.once('close', done);
    next();
  };
}
