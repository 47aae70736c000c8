// tus-js-client (the library Uppy uses) driving a real upload against a test server.
import { Readable } from 'node:stream';
import * as tus from 'tus-js-client';
import { grantKey, mintGrant, type MintOptions } from '../../middleware/upload-grant.js';
import type { TestServer } from './test-server.js';

export function grantFor(server: TestServer, options: Partial<MintOptions> = {}): Promise<string> {
  return mintGrant(grantKey(server.config.GrantSecret, server.config.Secret), { subject: 'alice', maxSize: 100 * 1024 * 1024, ttlSeconds: 3600, ...options });
}

export interface TusResult {
  /** The upload URL (Location). */
  url: string;
  /** X-Download-URL of the final PATCH, made absolute. */
  downloadUrl: string;
}

/** protocol: tus-js-client 4 has it (the IETF drafts), its type declarations do not yet. */
export type TusOptions = Partial<tus.UploadOptions> & { stream?: boolean; protocol?: 'tus-v1' | 'ietf-draft-03' | 'ietf-draft-05' };

/** What an upload needs of a server: its URL and TusPath (a TestServer, or nginx in front of several). */
export type TusTarget = Pick<TestServer, 'url'> & { config: Pick<TestServer['config'], 'TusPath'> };

/** Uploads data; resolves when the server committed it. */
export function tusUpload(server: TusTarget, data: Buffer, grant: string, options: TusOptions = {}): Promise<TusResult> {
  const { stream, ...rest } = options;
  return new Promise((resolve, reject) => {
    const source = stream ? Readable.from([data]) : data;
    const upload: tus.Upload = new tus.Upload(source, {
      endpoint: `${server.url}${server.config.TusPath}`,
      headers: { Authorization: `Bearer ${grant}` },
      metadata: { filename: 'file.bin', filetype: 'application/octet-stream' },
      retryDelays: [],
      ...rest,
      onError: reject,
      onSuccess: (payload) => {
        const location = payload.lastResponse.getHeader('X-Download-URL');
        if (!location || !upload.url) return reject(new Error('no X-Download-URL in the final answer'));
        resolve({ url: upload.url, downloadUrl: new URL(location, server.url).toString() });
      },
    });
    upload.start();
  });
}
