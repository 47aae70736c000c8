// A logger in the server's line format that keeps its lines in memory, for tests of parts built without a
// whole server (the banner, the nginx log follower).
import { Writable } from 'node:stream';
import winston from 'winston';
import { lineFormat, type Logger } from '../../server/logger.js';

export interface MemoryLogger {
  logger: Logger;
  lines: string[];
  /** The first line that matches, waiting up to timeoutMs for it. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string | undefined>;
}

export function memoryLogger(level = 'debug'): MemoryLogger {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      callback();
    },
  });
  const logger = winston.createLogger({ level, format: winston.format.combine(winston.format.timestamp(), lineFormat), transports: [new winston.transports.Stream({ stream: sink })] });
  return {
    logger,
    lines,
    waitFor: async (pattern, timeoutMs = 2000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const line = lines.find((l) => pattern.test(l));
        if (line !== undefined || Date.now() > deadline) return line;
        await new Promise((r) => setTimeout(r, 10));
      }
    },
  };
}
