// The few object operations the S3 backend needs, on the AWS SDK v3. Every failure to reach the store (refused
// connection, timeout, a 5xx, refused credentials, a missing bucket) becomes one error, E_STORAGE_DOWN (503), so
// the rest of the server knows one way in which storage goes away; "no such key" is an answer, not a failure.
// The SDK is loaded when the backend is opened: a server on the file system never loads it.
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import type { CompletedPart, S3Client } from '@aws-sdk/client-s3';
import { httpError, RETRY_AFTER_SECONDS } from '../server/errors.js';
import type { Logger } from '../server/logger.js';

export interface S3Settings {
  /** "" for AWS itself. */
  endpoint: string;
  region: string;
  bucket: string;
  /** "" for the SDK's usual sources (environment, shared files, instance roles). */
  accessKeyId: string;
  secretAccessKey: string;
  forcePathStyle: boolean;
}

/** Tests: smaller parts and shorter waits than an operator needs. */
export interface S3Tuning {
  partBytes?: number;
  connectTimeoutMs?: number;
}

const MIN_PART_BYTES = 5 * 1024 * 1024;
const DEFAULT_PART_BYTES = 16 * 1024 * 1024;
const MAX_PARTS = 10_000;
/** Parts in flight per file: enough to fill a link, each read from the staged file, never buffered. */
const PARTS_AT_ONCE = 4;
const DELETE_BATCH = 1000;
const MAX_SOCKETS = 1024;

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

function isNoSuchKey(err: unknown): boolean {
  const name = (err as { name?: string } | undefined)?.name;
  // HEAD answers carry no body, hence no code: a bare 404 there means the key (a missing bucket is another 404,
  // and it is a fault of the setup, reported as storage down).
  return name === 'NoSuchKey' || name === 'NotFound' || (statusOf(err) === 404 && name !== 'NoSuchBucket');
}

function down(err: unknown): never {
  throw httpError('E_STORAGE_DOWN', { cause: err, headers: { 'Retry-After': String(RETRY_AFTER_SECONDS) } });
}

type Sdk = typeof import('@aws-sdk/client-s3');

export class S3Objects {
  private readonly partBytes: number;

  private constructor(
    private readonly sdk: Sdk,
    private readonly client: S3Client,
    readonly bucket: string,
    tuning: S3Tuning,
  ) {
    this.partBytes = tuning.partBytes ?? DEFAULT_PART_BYTES;
  }

  static async open(settings: S3Settings, logger: Logger, tuning: S3Tuning = {}): Promise<S3Objects> {
    const sdk = await import('@aws-sdk/client-s3');
    const client = new sdk.S3Client({
      region: settings.region,
      ...(settings.endpoint !== '' ? { endpoint: settings.endpoint } : {}),
      forcePathStyle: settings.forcePathStyle,
      ...(settings.accessKeyId !== '' ? { credentials: { accessKeyId: settings.accessKeyId, secretAccessKey: settings.secretAccessKey } } : {}),
      // A streamed body with the SDK's default CRC trailer is refused (411) by engines that lack trailers
      // (radosgw, older MinIO); checksums only where S3 requires them.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // A download holds its connection for as long as its client reads: the SDK's 50 would make the 51st
      // download wait for one of them to finish.
      requestHandler: { connectionTimeout: tuning.connectTimeoutMs ?? 5000, requestTimeout: 60_000, httpAgent: { maxSockets: MAX_SOCKETS }, httpsAgent: { maxSockets: MAX_SOCKETS } },
      // The SDK's own notes (a streamed body it will not retry) go to the debug log, not to the console.
      logger: { debug: () => undefined, info: () => undefined, warn: (...args: unknown[]) => logger.debug('s3.sdk', { note: args.map(String).join(' ') }), error: (...args: unknown[]) => logger.debug('s3.sdk', { note: args.map(String).join(' ') }) },
    });
    return new S3Objects(sdk, client, settings.bucket, tuning);
  }

  private async send<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      return down(err);
    }
  }

  async ping(): Promise<boolean> {
    await this.send(() => this.client.send(new this.sdk.HeadBucketCommand({ Bucket: this.bucket })));
    return true;
  }

  async exists(key: string): Promise<boolean> {
    try {
      await this.client.send(new this.sdk.HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return true;
    } catch (err) {
      if (isNoSuchKey(err)) return false;
      return down(err);
    }
  }

  async getJson<T>(key: string): Promise<T | undefined> {
    let text: string;
    try {
      const answer = await this.client.send(new this.sdk.GetObjectCommand({ Bucket: this.bucket, Key: key }));
      text = await answer.Body!.transformToString('utf8');
    } catch (err) {
      if (isNoSuchKey(err)) return undefined;
      return down(err);
    }
    return JSON.parse(text) as T;
  }

  /** One PUT: S3 makes an object visible whole or not at all. */
  async putJson(key: string, value: unknown): Promise<void> {
    const body = JSON.stringify(value);
    await this.send(() => this.client.send(new this.sdk.PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: 'application/json' })));
  }

  /**
   * Copies a file of size bytes to key: one PUT when it fits in a part, else a multipart upload whose parts are
   * read from the file as they go (a few at a time), so memory does not grow with the file.
   */
  async putFile(key: string, filePath: string, size: number): Promise<void> {
    const partBytes = Math.max(this.partBytes, MIN_PART_BYTES, Math.ceil(size / MAX_PARTS));
    if (size <= partBytes) {
      await this.send(() => this.client.send(new this.sdk.PutObjectCommand({ Bucket: this.bucket, Key: key, Body: size === 0 ? Buffer.alloc(0) : createReadStream(filePath, { end: size - 1 }), ContentLength: size })));
      return;
    }
    const { UploadId } = await this.send(() => this.client.send(new this.sdk.CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key })));
    try {
      const count = Math.ceil(size / partBytes);
      const parts: CompletedPart[] = new Array<CompletedPart>(count);
      let next = 0;
      let failed = false;
      const worker = async () => {
        // After one part failed the upload is lost: the other workers send no more parts.
        while (next < count && !failed) {
          const index = next++;
          const start = index * partBytes;
          const length = Math.min(partBytes, size - start);
          const body = createReadStream(filePath, { start, end: start + length - 1 });
          try {
            const { ETag } = await this.send(() => this.client.send(new this.sdk.UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId, PartNumber: index + 1, Body: body, ContentLength: length })));
            parts[index] = { ETag, PartNumber: index + 1 };
          } catch (err) {
            failed = true;
            body.destroy();
            throw err;
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(PARTS_AT_ONCE, count) }, worker));
      await this.send(() => this.client.send(new this.sdk.CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId, MultipartUpload: { Parts: parts } })));
    } catch (err) {
      // Best effort: a store that went away keeps the parts until its lifecycle rule removes them (README).
      await this.client.send(new this.sdk.AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId })).catch(() => undefined);
      throw err;
    }
  }

  /** Bytes start..end inclusive of key, and the object's whole size; undefined when there is no such key. */
  async getRange(key: string, start: number, end: number): Promise<{ body: Readable; total: number } | undefined> {
    try {
      const answer = await this.client.send(new this.sdk.GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=${start}-${end}` }));
      const total = Number(/\/(\d+)$/.exec(answer.ContentRange ?? '')?.[1] ?? answer.ContentLength);
      return { body: answer.Body as Readable, total };
    } catch (err) {
      if (isNoSuchKey(err)) return undefined;
      return down(err);
    }
  }

  async delete(keys: readonly string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH);
      const answer = await this.send(() => this.client.send(new this.sdk.DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } })));
      const failed = (answer.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
      if (failed.length > 0) down(new Error(`delete of ${failed[0]!.Key ?? '?'} failed: ${failed[0]!.Code ?? ''} ${failed[0]!.Message ?? ''}`));
    }
  }

  /** Every key below prefix, in S3's (lexicographic) order. */
  async *list(prefix: string): AsyncGenerator<string> {
    let token: string | undefined;
    do {
      const page = await this.send(() => this.client.send(new this.sdk.ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) })));
      for (const item of page.Contents ?? []) if (item.Key) yield item.Key;
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  close(): void {
    this.client.destroy();
  }
}
