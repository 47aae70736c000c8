// The HMAC-SHA256 query schemes of mod_http_upload_external, ejabberd and Metronome (docs/protocols.md, "The MAC"):
//   v     HMAC(secret, "<path> <size>")
//   v2    HMAC(secret, "<path>\0<size>\0<content-type>")
//   token same message as v2
// Every secret of the tenant is tried, so slots signed before a rotation stay valid during the overlap.
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { SlotRequest, SlotResult, SlotVerifier } from './slot-verifier.js';

const HEX_MAC = /^[0-9a-fA-F]{64}$/;

export function hmacHex(secret: string, message: string): string {
  return createHmac('sha256', Buffer.from(secret, 'utf8')).update(message, 'utf8').digest('hex');
}

/** Constant-time comparison of a hex MAC from a client (either case) with the expected digest. */
function macMatches(given: string, expectedHex: string): boolean {
  if (!HEX_MAC.test(given)) return false;
  return timingSafeEqual(Buffer.from(given, 'hex'), Buffer.from(expectedHex, 'hex'));
}

/** True when given is a MAC of message under any of the secrets; every secret is always tried. */
export function macMatchesAny(given: string, secrets: readonly string[], message: string): boolean {
  let matched = false;
  for (const secret of secrets) matched = macMatches(given, hmacHex(secret, message)) || matched;
  return matched;
}

export type HmacScheme = 'v' | 'v2' | 'token';

function slotMessage(scheme: HmacScheme, path: string, size: number, contentType: string): string {
  return scheme === 'v' ? `${path} ${size}` : `${path}\0${size}\0${contentType}`;
}

/** The capability to list and fetch the kept versions of a path: HMAC(secret, "versions\0<path>"). */
export function versionsMessage(path: string): string {
  return `versions\0${path}`;
}

export function signSlot(secret: string, scheme: HmacScheme, path: string, size: number, contentType: string): string {
  return hmacHex(secret, slotMessage(scheme, path, size, contentType));
}

export class HmacQueryVerifier implements SlotVerifier {
  readonly priority: number;

  constructor(
    readonly scheme: HmacScheme,
    private readonly secrets: readonly string[],
    /** ejabberd: the first segment is the uploader's user dir. */
    private readonly userDirInPath = false,
  ) {
    this.priority = scheme === 'v' ? 1 : 2;
  }

  verify(request: SlotRequest): Promise<SlotResult> {
    const given = request.query[this.scheme];
    if (given === undefined) return Promise.resolve({ verdict: 'absent' });
    const message = slotMessage(this.scheme, request.path, request.size, request.contentType);
    if (typeof given !== 'string' || !macMatchesAny(given, this.secrets, message)) {
      return Promise.resolve({ verdict: 'invalid', code: 'E_MAC_INVALID', reason: 'Invalid signature', scheme: this.scheme });
    }
    const owner = this.userDirInPath ? request.path.split('/')[0] : undefined;
    return Promise.resolve({ verdict: 'valid', grant: { scheme: this.scheme, ...(owner ? { owner } : {}) } });
  }
}
