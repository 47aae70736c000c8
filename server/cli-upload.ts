// `hmac-file-server upload FILE...`: uploads files over tus with tus-js-client, with a progress bar per file
// on a terminal (plain lines otherwise, JSON lines for scripts), and resumes an upload that was interrupted
// (Ctrl-C, a kill, a dropped network) from where the server is: the upload URLs are kept in a state file.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Presets, SingleBar } from 'cli-progress';
import * as tus from 'tus-js-client';

export interface UploadCommand {
  /** The tus endpoint, e.g. https://files.example.org/files/ */
  url: string;
  grant: string;
  files: readonly string[];
  json: boolean;
  parallel: number;
  /** Bytes per PATCH; Infinity sends each file (or part) in one request. */
  chunkSize: number;
  stateFile: string;
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable & { isTTY?: boolean };
}

/** Where interrupted uploads are remembered: $XDG_STATE_HOME/hmac-file-server/uploads.json. */
export function defaultStateFile(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_STATE_HOME || path.join(os.homedir(), '.local', 'state');
  return path.join(base, 'hmac-file-server', 'uploads.json');
}

// Node's FileUrlStorage is exported, but not declared in the library's types.
const { FileUrlStorage } = tus as unknown as { FileUrlStorage: new (file: string) => NonNullable<tus.UploadOptions['urlStorage']> };

const MiB = 1024 * 1024;
const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;

async function sha256Of(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return hash.digest('hex');
}

/** The reason a failed upload gives: the server's status and one-line answer when there was one. */
function reasonOf(err: Error): string {
  const response = (err as tus.DetailedError).originalResponse;
  if (response) {
    const body = response.getBody()?.trim();
    return `${response.getStatus()} ${body || 'refused'}`;
  }
  return err.message.replace(/^tus: /, '');
}

/** Plain progress lines for a log or a pipe: one per 10% and at most one per 5 seconds in between. */
function plainProgress(out: Writable, name: string, size: number) {
  let lastTenth = -1;
  let lastAt = Date.now();
  return (sent: number) => {
    const tenth = size === 0 ? 10 : Math.floor((sent / size) * 10);
    const now = Date.now();
    if (tenth === lastTenth && now - lastAt < 5000) return;
    lastTenth = tenth;
    lastAt = now;
    out.write(`${name}: ${size === 0 ? 100 : Math.floor((sent / size) * 100)}% (${mib(sent)} of ${mib(size)})\n`);
  };
}

export async function runUploads(command: UploadCommand): Promise<number> {
  await mkdir(path.dirname(command.stateFile), { recursive: true });
  const urlStorage = new FileUrlStorage(command.stateFile);
  // One file at a time: a bar on a terminal, finished (and its line kept) before the file's URL is printed.
  const newBar = () =>
    new SingleBar(
      { stream: command.stderr, format: '{name} |{bar}| {percentage}% {sent} of {size} | {speed} | ETA {eta_formatted}', barsize: 20, hideCursor: true, clearOnComplete: false },
      Presets.shades_classic,
    );
  let interrupted = false;
  /** Stops the upload under way: Ctrl-C or SIGTERM. */
  let stopCurrent: (() => void) | undefined;
  const onSignal = () => {
    interrupted = true;
    stopCurrent?.();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let failed = 0;
  try {
    for (const file of command.files) {
      if (interrupted) break;
      const name = path.basename(file);
      let size: number;
      try {
        const info = await stat(file);
        if (!info.isFile()) throw new Error('not a regular file');
        size = info.size;
      } catch (err) {
        command.stderr.write(`${file}: ${(err as Error).message}\n`);
        failed += 1;
        continue;
      }
      const bar = command.stderr.isTTY ? newBar() : undefined;
      bar?.start(size, 0, { name, sent: mib(0), size: mib(size), speed: '-' });
      // Not a terminal (a log, a pipe): plain lines, on stderr like the bar, so stdout stays the results.
      const plain = bar ? undefined : plainProgress(command.stderr, name, size);
      const started = Date.now();
      let resumedAt: number | undefined;
      try {
        const downloadUrl = await new Promise<string>((resolve, reject) => {
          const upload = new tus.Upload(createReadStream(file), {
            endpoint: command.url,
            headers: { Authorization: `Bearer ${command.grant}` },
            metadata: { filename: name },
            chunkSize: command.chunkSize,
            parallelUploads: command.parallel,
            // A dropped network: try again from the server's offset, a few times.
            retryDelays: [0, 1000, 3000, 5000, 10000],
            urlStorage,
            removeFingerprintOnSuccess: true,
            onProgress: (sent) => {
              resumedAt ??= sent;
              const seconds = (Date.now() - started) / 1000;
              bar?.update(sent, { sent: mib(sent), speed: seconds > 0 ? `${mib((sent - resumedAt) / seconds)}/s` : '' });
              plain?.(sent);
            },
            onError: reject,
            onSuccess: ({ lastResponse }) => {
              const location = lastResponse.getHeader('X-Download-URL');
              if (location) resolve(new URL(location, command.url).toString());
              else reject(new Error('the server did not say where the file is (no X-Download-URL)'));
            },
          });
          // Kept in the state file (abort without terminating it): the next run resumes it.
          stopCurrent = () => void upload.abort(false).finally(() => reject(new Error('interrupted')));
          // Resumes the upload the state file remembers for this file, if any.
          void upload
            .findPreviousUploads()
            .then((previous) => {
              if (previous[0]) upload.resumeFromPreviousUpload(previous[0]);
              if (!interrupted) upload.start();
            })
            .catch(reject);
        });
        bar?.update(size, { sent: mib(size) });
        bar?.stop();
        const sha256 = await sha256Of(file);
        if (command.json) command.stdout.write(`${JSON.stringify({ file, url: downloadUrl, size, sha256, resumedAt: resumedAt ?? 0 })}\n`);
        else command.stdout.write(`${downloadUrl}\n`);
      } catch (err) {
        failed += 1;
        bar?.stop();
        command.stderr.write(`${file}: ${reasonOf(err as Error)}\n`);
      } finally {
        stopCurrent = undefined;
      }
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (interrupted) {
    command.stderr.write('interrupted: run the same command again to resume\n');
    return 1;
  }
  return failed > 0 ? 1 : 0;
}
