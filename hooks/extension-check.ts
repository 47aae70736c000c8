// Commit stage: the file name's extension must be in AllowedExtensions (case-insensitive; empty = all).
import path from 'node:path';
import { httpError } from '../server/errors.js';

export function checkExtension(allowed: readonly string[], slotPath: string): void {
  if (allowed.length === 0) return;
  const name = path.posix.basename(slotPath).toLowerCase();
  // Compare suffixes rather than path.extname so ".tar.gz" style entries work too.
  if (!allowed.some((ext) => name.endsWith(ext) && name.length > ext.length)) throw httpError('E_EXTENSION');
}
