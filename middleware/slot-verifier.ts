// The contract of an XMPP upload-slot verifier: one implementation per signing scheme (v, v2, token, the
// Prosody file-share JWT). A verifier looks at the request's query or headers and says whether it carries
// its scheme's signature and whether that signature is right, with a reason a client can show its user.
// It never reads the body, compares MACs in constant time, and never throws for bad input.
import type { ErrorCode } from '../server/errors.js';

export interface SlotRequest {
  /** Percent-decoded path relative to the tenant prefix, e.g. "0bd8…/cat picture.jpg". */
  path: string;
  /** Declared Content-Length. */
  size: number;
  /** The Content-Type header byte for byte, or application/octet-stream when absent. */
  contentType: string;
  query: Readonly<Record<string, unknown>>;
  headers: Readonly<Record<string, string | string[] | undefined>>;
}

/** What a valid signature says about the upload beyond "allowed". */
export interface SlotGrant {
  scheme: string;
  /** Content type to store when the signature fixes it (JWT filetype); else the request's. */
  contentType?: string;
  /** Who uploads, when the scheme names them (JWT sub, ejabberd user dir). */
  owner?: string;
  /** When the file itself should expire (JWT expires). */
  expiresAt?: Date;
}

export type SlotResult =
  | { verdict: 'absent' }
  | { verdict: 'invalid'; code: ErrorCode; reason: string; scheme: string }
  | { verdict: 'valid'; grant: SlotGrant };

export interface SlotVerifier {
  /** Scheme name used in logs: "v", "v2", "token", "jwt". */
  readonly scheme: string;
  /** Higher wins when a request carries several schemes (jwt, then v2/token, then v). */
  readonly priority: number;
  verify(request: SlotRequest): Promise<SlotResult>;
}

/** Runs the verifiers in priority order: the first scheme present decides. */
export async function verifySlot(verifiers: readonly SlotVerifier[], request: SlotRequest): Promise<SlotResult> {
  for (const verifier of [...verifiers].sort((a, b) => b.priority - a.priority)) {
    const result = await verifier.verify(request);
    if (result.verdict !== 'absent') return result;
  }
  return { verdict: 'absent' };
}
