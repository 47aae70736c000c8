// tus concatenation extension, final step: "Upload-Concat: final;<url> <url> …" joins finished partial
// uploads of the same subject into one new upload, which is then committed like any other. @tus/server
// answers 501 to Upload-Concat, so the router sends such a POST here instead.
import type { IncomingMessage } from 'node:http';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { Metadata, Uid, Upload } from '@tus/utils';
import { httpError, toHttp } from '../server/errors.js';
import type { Grant } from '../middleware/upload-grant.js';
import { UPLOAD_ID, type CountingFileStore } from '../stores/tus-store.js';
import { CONCAT_KEY, OWNER_KEY, PARTIAL_KEY, TusHookError, type createTusHooks } from './tus-hooks.js';

export interface ConcatDeps {
  store: CountingFileStore;
  hooks: ReturnType<typeof createTusHooks>;
  /** TusPath, e.g. "/files/". */
  tusPath: string;
  maxUploadSize: number;
}

export interface ConcatResult {
  id: string;
  headers: Record<string, string>;
}

/** The partial upload URLs of an "Upload-Concat: final;<url> <url> …" header, as the client named them. */
function partialUrls(header: string): string[] {
  const match = /^final;(.+)$/.exec(header.trim());
  if (!match) throw httpError('E_BAD_REQUEST', { message: 'Invalid Upload-Concat' });
  return match[1]!.trim().split(/\s+/);
}

function partialIds(urls: string[], tusPath: string): string[] {
  return urls.map((url) => {
    let pathname: string;
    try {
      pathname = new URL(url, 'http://upload.invalid').pathname;
    } catch {
      throw httpError('E_BAD_REQUEST', { message: 'Invalid Upload-Concat: not a URL' });
    }
    const id = pathname.startsWith(tusPath) ? pathname.slice(tusPath.length) : '';
    if (!UPLOAD_ID.test(id)) throw httpError('E_BAD_REQUEST', { message: 'Invalid Upload-Concat' });
    return id;
  });
}

export async function concatenateFinal(deps: ConcatDeps, req: IncomingMessage, grant: Grant, concatHeader: string, metadataHeader: string | undefined): Promise<ConcatResult> {
  // tus 1.0.0, Concatenation: "The Client MUST NOT include the Upload-Length header in the final upload creation."
  if (req.headers['upload-length'] !== undefined) throw httpError('E_BAD_REQUEST', { message: 'Upload-Length must not be sent with Upload-Concat: final' });
  const urls = partialUrls(concatHeader);
  const ids = partialIds(urls, deps.tusPath);
  // "Response to HEAD request against partial or final upload MUST include the Upload-Concat header and its
  // value as received in the upload creation request."
  const concat = `final;${urls.join(' ')}`;
  const parts: Array<{ id: string; size: number }> = [];
  for (const id of ids) {
    const record = await deps.store.configstore.get(id);
    if (!record?.metadata?.[PARTIAL_KEY]) throw httpError('E_BAD_REQUEST', { message: 'Upload-Concat names an unknown partial upload' });
    if (record.metadata[OWNER_KEY] !== grant.subject) throw httpError('E_FORBIDDEN');
    const dataPath = path.join(deps.store.directory, id);
    const { size } = await stat(dataPath);
    // "The Server MUST NOT concatenate partial uploads that are not finished."
    if (record.size === undefined || size !== record.size) throw httpError('E_BAD_REQUEST', { message: 'Partial upload not finished' });
    parts.push({ id, size });
  }
  const total = parts.reduce((sum, part) => sum + part.size, 0);
  if (total > Math.min(deps.maxUploadSize, grant.maxSize)) throw httpError('E_TOO_LARGE');
  let metadata: Record<string, string | null> | undefined;
  try {
    metadata = metadataHeader ? Metadata.parse(metadataHeader) : undefined;
  } catch {
    throw httpError('E_BAD_REQUEST', { message: 'Invalid Upload-Metadata' });
  }

  const tusReq = { runtime: { node: { req } } };
  const upload = new Upload({ id: Uid.rand(), size: total, offset: 0, metadata });
  try {
    upload.metadata = { ...(await deps.hooks.onUploadCreate(tusReq, upload)).metadata, [CONCAT_KEY]: concat };
    await deps.store.create(upload);
    // Each partial is decrypted with its own IV; the final upload's write encrypts with its own.
    const store = deps.store;
    const joined = Readable.from(
      (async function* () {
        for (const part of parts) yield* await store.plaintextOf(part.id);
      })(),
    );
    upload.offset = await deps.store.write(joined, upload.id, 0);
    const written = await deps.store.getUpload(upload.id);
    const { headers } = await deps.hooks.onUploadFinish(tusReq, written);
    // "The Server MAY delete partial uploads after concatenation."
    await Promise.all(ids.map((id) => deps.store.remove(id).catch(() => undefined)));
    return { id: upload.id, headers: { ...headers, 'Upload-Concat': concat } };
  } catch (err) {
    await deps.store.remove(upload.id).catch(() => undefined);
    throw err instanceof TusHookError ? toHttp(err.cause) : err;
  }
}
