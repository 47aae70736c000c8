// A throwaway single-node Ceph on loopback as the S3 engine of tests: one monitor, one OSD keeping its data in
// memory (memstore), and the radosgw S3 gateway; no manager, no cephx. Every daemon runs in the foreground
// (-f) under this process, from a private folder and config, so nothing outlives a run. The gateway alone can
// be stopped and started again (S3 going away and coming back); the cluster behind it keeps its objects.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { CreateBucketCommand, GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { ensureDebianPackages } from './debian-packages.js';
import { freePort, restartable, startDaemon, type Daemon, type Restartable } from './local-daemon.js';

const run = promisify(execFile);

export interface RunningS3 {
  /** http://127.0.0.1:PORT of radosgw. */
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** The gateway: stop() makes S3 unreachable, start() brings it back with every object. */
  gateway: Restartable;
  /** Stops every daemon and removes the folder. */
  dispose(): Promise<void>;
}

function conf(dir: string, fsid: string, monPort: number, rgwPort: number, memoryBytes: number): string {
  return `[global]
fsid = ${fsid}
mon host = v2:127.0.0.1:${monPort}
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
# radosgw's default "secure" needs cephx, which is off.
ms mon client mode = crc
keyring = /dev/null
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
pid file = ${dir}/run/$name.pid
log file = ${dir}/log/$name.log
mon cluster log file = ${dir}/log/cluster.log
crash dir = ${dir}/crash
mon data = ${dir}/mon.$id
osd data = ${dir}/osd.$id
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
# Start-up in about 1.6 s instead of 13.
paxos propose interval = 0.01
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
[osd]
osd objectstore = memstore
memstore device bytes = ${memoryBytes}
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:${rgwPort}
rgw data = ${dir}/rgw
rgw thread pool size = 64
`;
}

async function answers(url: string): Promise<boolean> {
  try {
    return (await fetch(url, { signal: AbortSignal.timeout(1000) })).status === 200;
  } catch {
    return false;
  }
}

/** memoryBytes: what the memstore OSD may hold (it refuses writes near 95 % of it). */
export async function startS3(options: { memoryBytes?: number } = {}): Promise<RunningS3> {
  await ensureDebianPackages({ 'ceph-mon': 'ceph-mon', 'ceph-osd': 'ceph-osd', radosgw: 'radosgw', ceph: 'ceph-common', monmaptool: 'ceph-base', 'radosgw-admin': 'radosgw' });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-ceph-'));
  const daemons: Daemon[] = [];
  let gateway: Restartable | undefined;
  const stopAll = async () => {
    await gateway?.stop();
    for (const daemon of daemons.reverse()) await daemon.stop({ graceMs: 2000 });
  };
  try {
    for (const sub of ['run', 'log', 'crash', 'rgw', 'osd.0']) await mkdir(path.join(dir, sub));
    const [monPort, rgwPort] = [await freePort(), await freePort()];
    const fsid = randomUUID();
    const config = path.join(dir, 'ceph.conf');
    await writeFile(config, conf(dir, fsid, monPort, rgwPort, options.memoryBytes ?? 2 * 1024 ** 3));
    const c = ['-c', config];
    const ceph = (...args: string[]) => run('ceph', [...c, '--connect-timeout', '15', ...args], { timeout: 30_000 });
    await run('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, path.join(dir, 'monmap')]);
    await run('ceph-mon', ['--mkfs', '-i', 'a', '--monmap', path.join(dir, 'monmap'), ...c]);
    const mon = startDaemon('ceph-mon', 'ceph-mon', ['-f', '-i', 'a', ...c], { logFile: path.join(dir, 'log', 'mon.a.log') });
    daemons.push(mon);
    const osdUuid = randomUUID();
    const { stdout: osdId } = await ceph('osd', 'new', osdUuid);
    if (osdId.trim() !== '0') throw new Error(`ceph osd new gave ${osdId.trim()}, not 0`);
    await run('ceph-osd', ['-i', '0', ...c, '--mkfs', '--osd-uuid', osdUuid]);
    const osd = startDaemon('ceph-osd', 'ceph-osd', ['-f', '-i', '0', ...c], { logFile: path.join(dir, 'log', 'osd.0.log') });
    daemons.push(osd);
    await osd.waitUntilReady(async () => /^osd\.0 up/m.test((await ceph('osd', 'dump').catch(() => ({ stdout: '' }))).stdout), {
      timeoutMs: 60_000,
      pollMs: 200,
      notReady: 'osd.0 was not up within 60 s',
    });
    const endpoint = `http://127.0.0.1:${rgwPort}`;
    gateway = restartable(dir, () => startDaemon('radosgw', 'radosgw', ['-f', '-n', 'client.rgw', ...c, '--rgw-init-timeout', '60'], { logFile: path.join(dir, 'log', 'client.rgw.log') }), {
      check: () => answers(`${endpoint}/`),
      timeoutMs: 90_000,
      notReady: 'radosgw did not answer within 90 s',
    });
    await gateway.start();
    const [accessKeyId, secretAccessKey] = ['HFSTESTACCESSKEY', 'hfs-test-secret-key'];
    await run('radosgw-admin', [...c, 'user', 'create', '--uid=test', '--display-name=test', `--access-key=${accessKeyId}`, `--secret-key=${secretAccessKey}`], { timeout: 30_000 });
    const running = gateway;
    return {
      endpoint,
      region: 'us-east-1',
      accessKeyId,
      secretAccessKey,
      gateway: { start: () => running.start(), stop: () => running.stop(), dispose: () => running.stop() },
      dispose: async () => {
        await stopAll();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await stopAll();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** A bucket of the test engine, with the server keys that use it and a client to look inside. */
export interface TestBucket {
  name: string;
  /** A client of the engine, as the server's is configured. */
  client: S3Client;
  /** StorageBackend = "s3" and the S3 keys of this bucket. */
  config: {
    StorageBackend: 's3';
    S3Endpoint: string;
    S3Bucket: string;
    S3Region: string;
    S3AccessKeyID: string;
    S3SecretAccessKey: string;
    S3ForcePathStyle: boolean;
  };
  /** Every key below prefix. */
  keys(prefix?: string): Promise<string[]>;
  object(key: string): Promise<Buffer>;
  /** Multipart uploads begun and neither completed nor aborted. */
  multipartUploads(): Promise<number>;
  /** The object's ETag (a multipart object's ends in -<parts>). */
  etag(key: string): Promise<string>;
  dispose(): void;
}

let buckets = 0;

/** A new, empty bucket: each test sees only its own objects. */
export async function createBucket(s3: RunningS3): Promise<TestBucket> {
  const name = `hfs-test-${process.pid}-${++buckets}`;
  const client = new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  await client.send(new CreateBucketCommand({ Bucket: name }));
  return {
    name,
    client,
    config: { StorageBackend: 's3', S3Endpoint: s3.endpoint, S3Bucket: name, S3Region: s3.region, S3AccessKeyID: s3.accessKeyId, S3SecretAccessKey: s3.secretAccessKey, S3ForcePathStyle: true },
    keys: async (prefix = '') => {
      const keys: string[] = [];
      let token: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket: name, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }));
        for (const item of page.Contents ?? []) keys.push(item.Key!);
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return keys.sort();
    },
    object: async (key) => Buffer.from(await (await client.send(new GetObjectCommand({ Bucket: name, Key: key }))).Body!.transformToByteArray()),
    multipartUploads: async () => ((await client.send(new ListMultipartUploadsCommand({ Bucket: name }))).Uploads ?? []).length,
    etag: async (key) => (await client.send(new HeadObjectCommand({ Bucket: name, Key: key }))).ETag ?? '',
    dispose: () => client.destroy(),
  };
}
