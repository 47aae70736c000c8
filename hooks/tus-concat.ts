// tus concatenation extension, final step: "Upload-Concat: final;<url> <url> …" joins partial uploads of the
// same subject into one new upload, which is then committed like any other. @tus/server answers 501 to
// Upload-Concat, so the router sends such a POST here instead.
//
// concatenation-unfinished: a final upload may name partials that are still being uploaded. It is then
// created at once and waits, and each unfinished partial's record names it (FINALS_KEY): the join happens by
// itself when the last partial finishes, on whichever instance received its last byte, or at the next HEAD or
// GET of the final upload, which is how a client learns that it is done. One join at a time per final upload,
// across instances (joinLock). Partials are removed once no waiting final upload names them any more.
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { Metadata, Uid, Upload } from '@tus/utils';
import { httpError, toHttp } from '../server/errors.js';
import type { Logger } from '../server/logger.js';
import type { Grant } from '../middleware/upload-grant.js';
import { UPLOAD_ID, type CountingFileStore } from '../stores/tus-store.js';
import type { PathLock } from './path-lock.js';
import { COMMITTED_KEY, CONCAT_KEY, FINALS_KEY, LIMIT_KEY, OWNER_KEY, PARTIAL_KEY, PARTS_KEY, TusHookError, type createTusHooks, type TusRequest } from './tus-hooks.js';

export interface ConcatDeps {
  store: CountingFileStore;
  hooks: ReturnType<typeof createTusHooks>;
  logger: Logger;
  /** TusPath, e.g. "/files/". */
  tusPath: string;
  /** The path of PublicURL ("/share" for "https://example.org/share"), "" without one: partials are named below it too. */
  publicPath: string;
  maxUploadSize: number;
  /** One join at a time per final upload: in this process, or across instances (Redis). */
  joinLock: PathLock;
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

function partialIds(urls: string[], prefixes: readonly string[]): string[] {
  return urls.map((url) => {
    let pathname: string;
    try {
      pathname = new URL(url, 'http://upload.invalid').pathname;
    } catch {
      throw httpError('E_BAD_REQUEST', { message: 'Invalid Upload-Concat: not a URL' });
    }
    const prefix = prefixes.find((p) => pathname.startsWith(p));
    const id = prefix !== undefined ? pathname.slice(prefix.length) : '';
    if (!UPLOAD_ID.test(id)) throw httpError('E_BAD_REQUEST', { message: 'Invalid Upload-Concat' });
    return id;
  });
}

/** Whether an upload is a final one that has not been joined yet. */
export function isWaitingFinal(metadata: Readonly<Record<string, string | null>> | undefined): boolean {
  return Boolean(metadata?.[PARTS_KEY]) && !metadata?.[COMMITTED_KEY];
}

type PartState = { state: 'gone' } | { state: 'unfinished'; size: number | undefined } | { state: 'finished'; size: number };

export class Concatenations {
  /** Partial id → the final uploads waiting for it (in this process). */
  private readonly waiting = new Map<string, Set<string>>();
  /** Final uploads being joined now: every trigger of the same one shares the first one's work. */
  private readonly joining = new Map<string, Promise<Record<string, string> | undefined>>();

  constructor(private readonly deps: ConcatDeps) {}

  private async partOf(id: string, owner: string | undefined): Promise<PartState> {
    const record = await this.deps.store.configstore.get(id);
    if (!record?.metadata?.[PARTIAL_KEY] || record.metadata[OWNER_KEY] !== owner) return { state: 'gone' };
    const received = await this.deps.store.received(id);
    if (received === undefined) return { state: 'gone' };
    return record.size !== undefined && received === record.size ? { state: 'finished', size: record.size } : { state: 'unfinished', size: record.size };
  }

  private limitOf(grant: Grant): number {
    return Math.min(this.deps.maxUploadSize, grant.maxSize);
  }

  /** Creates the final upload of an "Upload-Concat: final;…" POST; joined at once when its partials are finished. */
  async create(req: IncomingMessage, grant: Grant, concatHeader: string, metadataHeader: string | undefined): Promise<ConcatResult> {
    const { store } = this.deps;
    // tus 1.0.0, Concatenation: "The Client MUST NOT include the Upload-Length header in the final upload creation."
    if (req.headers['upload-length'] !== undefined) throw httpError('E_BAD_REQUEST', { message: 'Upload-Length must not be sent with Upload-Concat: final' });
    const urls = partialUrls(concatHeader);
    const ids = partialIds(urls, [this.deps.tusPath, `${this.deps.publicPath}${this.deps.tusPath}`]);
    // "Response to HEAD request against partial or final upload MUST include the Upload-Concat header and its
    // value as received in the upload creation request."
    const concat = `final;${urls.join(' ')}`;
    const sizes: Array<number | undefined> = [];
    for (const id of ids) {
      const record = await store.configstore.get(id);
      if (!record?.metadata?.[PARTIAL_KEY]) throw httpError('E_BAD_REQUEST', { message: 'Upload-Concat names an unknown partial upload' });
      if (record.metadata[OWNER_KEY] !== grant.subject) throw httpError('E_FORBIDDEN');
      sizes.push(record.size);
    }
    const limit = this.limitOf(grant);
    if (sizes.every((size) => size !== undefined) && sizes.reduce((sum, size) => sum + size, 0) > limit) throw httpError('E_TOO_LARGE');
    let metadata: Record<string, string | null> | undefined;
    try {
      // "When creating a new final upload the partial uploads' metadata SHALL NOT be transferred to the new
      // final upload": what the final shows and is named by is what its own creation sent.
      metadata = metadataHeader ? Metadata.parse(metadataHeader) : undefined;
    } catch {
      throw httpError('E_BAD_REQUEST', { message: 'Invalid Upload-Metadata' });
    }

    const tusReq: TusRequest = { runtime: { node: { req } } };
    // No size until it is joined: a HEAD before then has no Upload-Offset to report.
    const upload = new Upload({ id: Uid.rand(), offset: 0, metadata });
    try {
      upload.metadata = { ...(await this.deps.hooks.onUploadCreate(tusReq, upload)).metadata, [CONCAT_KEY]: concat, [PARTS_KEY]: ids.join(' '), [LIMIT_KEY]: String(limit) };
    } catch (err) {
      throw err instanceof TusHookError ? toHttp(err.cause) : err;
    }
    await store.create(upload);
    for (const id of ids) {
      const finals = this.waiting.get(id) ?? new Set<string>();
      finals.add(upload.id);
      this.waiting.set(id, finals);
      // For another instance that receives the partial's last byte. Only final creations write the record of
      // a partial whose length is known (a PATCH declaring a deferred length writes it too, and must not be
      // undone): two naming one partial at once may lose a link, and that join then waits for a HEAD.
      const record = await store.configstore.get(id);
      if (record?.metadata && record.size !== undefined) {
        const named = new Set((record.metadata[FINALS_KEY] ?? '').split(' ').filter(Boolean)).add(upload.id);
        record.metadata = { ...record.metadata, [FINALS_KEY]: [...named].join(' ') };
        await store.configstore.set(id, record);
      }
    }
    const joined = await this.settle(upload.id, tusReq);
    if (joined) return { id: upload.id, headers: { ...joined, 'Upload-Concat': concat } };
    const expiration = store.getExpiration();
    const headers: Record<string, string> = { 'Upload-Concat': concat };
    if (expiration > 0) headers['Upload-Expires'] = new Date(Date.now() + expiration).toUTCString();
    return { id: upload.id, headers };
  }

  /** The sum of a waiting final upload's partial lengths, when every one of them is known. */
  async lengthOf(finalId: string): Promise<number | undefined> {
    const record = await this.deps.store.configstore.get(finalId);
    const ids = record?.metadata?.[PARTS_KEY]?.split(' ') ?? [];
    let total = 0;
    for (const id of ids) {
      const size = (await this.deps.store.configstore.get(id))?.size;
      if (size === undefined) return undefined;
      total += size;
    }
    return total;
  }

  /** The final uploads that name a partial: from its record (any instance) and from this process. */
  private async finalsOf(id: string): Promise<Set<string>> {
    const named = (await this.deps.store.configstore.get(id))?.metadata?.[FINALS_KEY]?.split(' ').filter(Boolean) ?? [];
    return new Set([...named, ...(this.waiting.get(id) ?? [])]);
  }

  /** A partial upload received its last byte: join the final uploads that were waiting for it. */
  partialFinished(id: string, req: TusRequest): void {
    // Not awaited: the partial's PATCH is answered now; the final's HEAD waits for the join.
    void this.finalsOf(id)
      .then((finals) => Promise.all([...finals].map((finalId) => this.settle(finalId, req).catch(() => undefined))))
      .catch(() => undefined);
  }

  /**
   * Joins a final upload if every partial it names is finished: the commit's headers (X-Download-URL) when
   * it was joined now, undefined when it waits, was joined before or is gone. A join that fails removes the
   * final upload (it could never finish) and is thrown.
   */
  settle(finalId: string, req: TusRequest): Promise<Record<string, string> | undefined> {
    let run = this.joining.get(finalId);
    if (!run) {
      run = this.deps.joinLock(`concat:${finalId}`, () => this.join(finalId, req)).finally(() => this.joining.delete(finalId));
      this.joining.set(finalId, run);
    }
    return run;
  }

  private async join(finalId: string, req: TusRequest): Promise<Record<string, string> | undefined> {
    const { store } = this.deps;
    const record = await store.configstore.get(finalId);
    if (!record?.metadata || !isWaitingFinal(record.metadata)) return undefined;
    const ids = record.metadata[PARTS_KEY]!.split(' ');
    try {
      const parts: PartState[] = [];
      for (const id of ids) parts.push(await this.partOf(id, record.metadata[OWNER_KEY] ?? undefined));
      // "The Server MUST NOT concatenate partial uploads that are not finished": it waits for them.
      if (parts.some((part) => part.state === 'unfinished')) return undefined;
      if (parts.some((part) => part.state === 'gone')) throw httpError('E_BAD_REQUEST', { message: 'A partial upload of this final upload is gone' });
      const total = parts.reduce((sum, part) => sum + (part as { size: number }).size, 0);
      if (total > Number(record.metadata[LIMIT_KEY] ?? this.deps.maxUploadSize)) throw httpError('E_TOO_LARGE');
      record.size = total;
      await store.configstore.set(finalId, record);
      // Each partial is decrypted with its own IV; the final upload's write encrypts with its own.
      const joined = Readable.from(
        (async function* () {
          for (const id of ids) yield* await store.plaintextOf(id);
        })(),
      );
      await store.write(joined, finalId, 0);
      const { headers } = await this.deps.hooks.onUploadFinish(req, await store.getUpload(finalId));
      this.done(finalId, ids);
      // "The Server MAY delete partial uploads after concatenation. They MAY however be used multiple times to
      // form a final resource": kept while another final upload waits for them.
      await Promise.all(ids.map(async (id) => (await this.stillNamed(id, finalId)) || (await store.remove(id).catch(() => undefined))));
      return headers;
    } catch (err) {
      this.done(finalId, ids);
      await store.remove(finalId).catch(() => undefined);
      this.deps.logger.info('tus.concat_failed', { id: finalId, code: toHttp(err).code });
      throw err instanceof TusHookError ? toHttp(err.cause) : err;
    }
  }

  /** Whether a final upload other than this one still waits for the partial. */
  private async stillNamed(id: string, finalId: string): Promise<boolean> {
    for (const other of await this.finalsOf(id)) {
      if (other !== finalId && isWaitingFinal((await this.deps.store.configstore.get(other))?.metadata)) return true;
    }
    return false;
  }

  /** Forgets final uploads that are gone (expired, or deleted by their owner) while they waited. */
  async forgetGone(): Promise<void> {
    const finals = new Set([...this.waiting.values()].flatMap((waiting) => [...waiting]));
    for (const id of finals) {
      if (!(await this.deps.store.configstore.get(id))) this.done(id, [...this.waiting.keys()]);
    }
  }

  /** How many final uploads wait in this process (for tests). */
  get waitingCount(): number {
    return new Set([...this.waiting.values()].flatMap((waiting) => [...waiting])).size;
  }

  private done(finalId: string, ids: readonly string[]): void {
    for (const id of ids) {
      const finals = this.waiting.get(id);
      finals?.delete(finalId);
      if (finals?.size === 0) this.waiting.delete(id);
    }
  }
}
