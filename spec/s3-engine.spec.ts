// The S3 engine the object-storage tests run against (spec/helpers/ceph.ts): a real radosgw on loopback that
// takes streamed bodies from the AWS SDK configured as the server's S3 client must be, answers Range reads,
// and goes away and comes back with its objects when its gateway is stopped and started.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { startS3, type RunningS3 } from './helpers/ceph.js';

describe('the S3 engine of the tests (Ceph radosgw)', function () {
  this.timeout(120_000);
  let s3: RunningS3;
  let settings: S3ClientConfig;
  before(async function () {
    this.timeout(600_000);
    s3 = await startS3();
    settings = {
      endpoint: s3.endpoint,
      region: s3.region,
      forcePathStyle: true,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
      maxAttempts: 1,
    };
  });
  after(() => s3?.dispose());

  it('stores a streamed body with checksums only when required, and serves a Range of it', async () => {
    const client = new S3Client({ ...settings, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
    try {
      await client.send(new CreateBucketCommand({ Bucket: 'engine' }));
      const data = randomBytes(3 * 1024 * 1024);
      await client.send(new PutObjectCommand({ Bucket: 'engine', Key: 'a/b.bin', Body: Readable.from([data]), ContentLength: data.length }));
      const part = await client.send(new GetObjectCommand({ Bucket: 'engine', Key: 'a/b.bin', Range: 'bytes=1000-1999' }));
      assert.deepEqual(Buffer.from(await part.Body!.transformToByteArray()), data.subarray(1000, 2000));
    } finally {
      client.destroy();
    }
  });

  it('refuses a streamed body sent with the SDK\'s default checksum trailer (411): the reason for WHEN_REQUIRED', async () => {
    const client = new S3Client(settings);
    try {
      const data = randomBytes(10_000);
      await assert.rejects(client.send(new PutObjectCommand({ Bucket: 'engine', Key: 'trailer.bin', Body: Readable.from([data]), ContentLength: data.length })), (err: { $metadata?: { httpStatusCode?: number } }) => err.$metadata?.httpStatusCode === 411);
    } finally {
      client.destroy();
    }
  });

  it('is unreachable while its gateway is stopped and keeps its objects when it is back', async () => {
    const client = new S3Client({ ...settings, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
    try {
      await client.send(new PutObjectCommand({ Bucket: 'engine', Key: 'kept.txt', Body: 'kept' }));
      await s3.gateway.stop();
      try {
        await assert.rejects(client.send(new GetObjectCommand({ Bucket: 'engine', Key: 'kept.txt' })), /ECONNREFUSED|connect/);
      } finally {
        await s3.gateway.start();
      }
      const got = await client.send(new GetObjectCommand({ Bucket: 'engine', Key: 'kept.txt' }));
      assert.equal(await got.Body!.transformToString(), 'kept');
    } finally {
      client.destroy();
    }
  });
});
