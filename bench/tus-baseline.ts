// The tus baseline: a bare @tus/server with @tus/file-store and nothing in front (no grants, no hooks, no
// admission, no logging), as its documentation sets it up. Started by the bench as a child process:
//   node tus-baseline.js <directory> <port>
// It listens on 127.0.0.1 only and serves POST/HEAD/PATCH/GET/DELETE under /files.
import http from 'node:http';
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

const [directory, port] = process.argv.slice(2);
if (directory === undefined || port === undefined || !/^\d+$/.test(port)) {
  process.stderr.write('usage: tus-baseline <directory> <port>\n');
  process.exit(2);
}

// @tus/server's GET (web streams over node:http) can throw "Invalid state: ReadableStream is already closed"
// from undici once a download is over and its connection goes, which ends the process. A baseline that dies
// measures nothing, so exactly that error is reported (the bench counts these lines) and survived.
process.on('uncaughtException', (err: NodeJS.ErrnoException) => {
  if (err.code === 'ERR_INVALID_STATE' && /ReadableStream is already closed/.test(err.message)) {
    process.stderr.write(`tus-baseline: survived: ${err.message}\n`);
    return;
  }
  process.stderr.write(`${err.stack ?? String(err)}\n`);
  process.exit(1);
});

const tus = new Server({ path: '/files', datastore: new FileStore({ directory }), relativeLocation: true });
const server = http.createServer((req, res) => void tus.handle(req, res));
server.listen(Number(port), '127.0.0.1', () => process.stdout.write(`listening on 127.0.0.1:${port}\n`));

const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
