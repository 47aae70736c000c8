// The HMAC-SHA256 query schemes of mod_http_upload_external and Metronome (PROTOCOL.md, "The MAC"):
//   v     HMAC(secret, "<path> <size>")
//   v2    HMAC(secret, "<path>\0<size>\0<content-type>")
//   token same message as v2
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { SlotRequest, SlotVerdict, SlotVerifier } from './slot-verifier.js';

const HEX_MAC = /^[0-9a-fA-F]{64}$/;

export function hmacHex(secret: string, message: string): string {
  return createHmac('sha256', Buffer.from(secret, 'utf8')).update(message, 'utf8').digest('hex');
}

/** Constant-time comparison of a hex MAC from a client (either case) with the expected digest. */
export function macMatches(given: string, expectedHex: string): boolean {
  if (!HEX_MAC.test(given)) return false;
  return timingSafeEqual(Buffer.from(given, 'hex'), Buffer.from(expectedHex, 'hex'));
}

export type HmacScheme = 'v' | 'v2' | 'token';

export function slotMessage(scheme: HmacScheme, path: string, size: number, contentType: string): string {
  return scheme === 'v' ? `${path} ${size}` : `${path}\0${size}\0${contentType}`;
}

export function signSlot(secret: string, scheme: HmacScheme, path: string, size: number, contentType: string): string {
  return hmacHex(secret, slotMessage(scheme, path, size, contentType));
}

class HmacQueryVerifier implements SlotVerifier {
  constructor(
    readonly scheme: HmacScheme,
    readonly priority: number,
    private readonly secret: string,
  ) {}

  verify(request: SlotRequest): SlotVerdict {
    const given = request.query[this.scheme];
    if (given === undefined) return 'absent';
    if (typeof given !== 'string') return 'invalid';
    const expected = signSlot(this.secret, this.scheme, request.path, request.size, request.contentType);
    return macMatches(given, expected) ? 'valid' : 'invalid';
  }
}

/** The three query schemes for one secret, highest priority first. */
export function hmacVerifiers(secret: string): SlotVerifier[] {
  return [new HmacQueryVerifier('v2', 2, secret), new HmacQueryVerifier('token', 2, secret), new HmacQueryVerifier('v', 1, secret)];
}

/** Runs the verifiers in priority order: the first scheme present decides. */
export function verifySlot(verifiers: readonly SlotVerifier[], request: SlotRequest): { verdict: SlotVerdict; scheme?: string } {
  for (const verifier of [...verifiers].sort((a, b) => b.priority - a.priority)) {
    const verdict = verifier.verify(request);
    if (verdict !== 'absent') return { verdict, scheme: verifier.scheme };
  }
  return { verdict: 'absent' };
}
