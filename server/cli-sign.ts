// `hmac-file-server sign`: prints a signed PUT URL and its GET URL, the way an XMPP server would hand them
// out, so an operator can try the server with curl and no XMPP server.
import { hmacHex, signSlot, versionsMessage, type HmacScheme } from '../middleware/slot-verifier-hmac.js';
import { validateSlotPath } from '../stores/file-layout.js';
import type { Config } from './config.js';

export interface SignRequest {
  path: string;
  size: number;
  contentType: string;
  protocol: HmacScheme;
  baseUrl?: string;
}

/** PublicURL when it is set, else the listener's own address (0.0.0.0 and :: as loopback). */
export function defaultBaseUrl(config: Pick<Config, 'ListenIP' | 'ListenPort' | 'UploadSubDir' | 'PublicURL'>): string {
  if (config.PublicURL !== '') return `${config.PublicURL}/${config.UploadSubDir}/`;
  const ip = config.ListenIP === '0.0.0.0' ? '127.0.0.1' : config.ListenIP === '::' ? '::1' : config.ListenIP;
  const host = ip.includes(':') ? `[${ip}]` : ip;
  return `http://${host}:${config.ListenPort}/${config.UploadSubDir}/`;
}

export function encodeSlotPath(slotPath: string): string {
  return slotPath.split('/').map(encodeURIComponent).join('/');
}

export function signedUrls(secret: string, base: string, request: SignRequest): { put: string; get: string; versions: string } {
  const path = validateSlotPath(request.path);
  const mac = signSlot(secret, request.protocol, path, request.size, request.contentType);
  const get = `${base.endsWith('/') ? base : `${base}/`}${encodeSlotPath(path)}`;
  return { put: `${get}?${request.protocol}=${mac}`, get, versions: `${get}?versions=${hmacHex(secret, versionsMessage(path))}` };
}
