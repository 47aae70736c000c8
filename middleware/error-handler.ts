// The Express error middleware: every failure becomes its HttpError's status, headers and public message.
// 5xx are logged with their cause; 4xx at info. A request whose body was not read is answered with
// Connection: close, so the unread bytes are not parsed as a next request.
import type { ErrorRequestHandler, RequestHandler } from 'express';
import { httpError, toHttp } from '../server/errors.js';
import type { Logger } from '../server/logger.js';
import { requestPath } from './request-info.js';
import { note } from './request-notes.js';

export function notFound(): RequestHandler {
  return () => {
    throw httpError('E_NOT_FOUND');
  };
}

export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    const error = toHttp(err);
    note(req, { code: error.code });
    const fields = { code: error.code, status: error.status, method: req.method, path: requestPath(req) };
    if (error.status >= 500) {
      const cause = error.cause ?? err;
      logger.error('request.failed', { ...fields, cause: cause instanceof Error ? cause.stack ?? cause.message : String(cause) });
    } else {
      logger.info('request.rejected', fields);
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (!req.complete) res.setHeader('Connection', 'close');
    // Headers a download handler set before failing describe a file, not this error.
    for (const name of ['Content-Disposition', 'Content-Range', 'ETag', 'Last-Modified', 'Accept-Ranges']) res.removeHeader(name);
    for (const [name, value] of Object.entries(error.headers)) res.setHeader(name, value);
    // Written by hand rather than with res.send: for a POST overridden to HEAD (X-HTTP-Method-Override) send()
    // would announce a body and omit it, and the client would wait for it; Node itself drops the body of a
    // real HEAD.
    const body = error.problem ? `${JSON.stringify({ ...error.problem, title: error.message })}\n` : `${error.message}\n`;
    res.status(error.status);
    res.setHeader('Content-Type', error.problem ? 'application/problem+json' : 'text/plain; charset=utf-8');
    res.setHeader('Content-Length', Buffer.byteLength(body));
    res.end(body);
  };
}
