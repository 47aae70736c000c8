// One http.request line per request: method, path (never the query, which holds MACs), status, bytes
// received and sent, duration and client IP.
import type { RequestHandler } from 'express';
import type { Logger } from '../server/logger.js';

export function requestLog(logger: Logger): RequestHandler {
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    const socket = req.socket;
    const readBefore = socket.bytesRead;
    const writtenBefore = socket.bytesWritten;
    let logged = false;
    const done = () => {
      if (logged) return;
      logged = true;
      logger.info('http.request', {
        method: req.method,
        path: req.originalUrl.split('?')[0],
        status: res.writableFinished ? res.statusCode : 0,
        bytesIn: socket.bytesRead - readBefore,
        bytesOut: socket.bytesWritten - writtenBefore,
        ms: Number((process.hrtime.bigint() - started) / 1_000_000n),
        client: req.ip ?? 'unknown',
      });
    };
    res.once('finish', done);
    res.once('close', done);
    next();
  };
}
