// The contract of an XMPP upload-slot verifier: one implementation per signing scheme (v, v2, token, …).
// A verifier looks at the request's query (or headers) and says whether it carries its scheme's MAC and
// whether that MAC is right. It never reads the body and compares in constant time.

export interface SlotRequest {
  /** Percent-decoded path relative to the upload base, e.g. "0bd8…/cat picture.jpg". */
  path: string;
  /** Declared Content-Length. */
  size: number;
  /** The Content-Type header byte for byte, or application/octet-stream when absent. */
  contentType: string;
  query: Readonly<Record<string, unknown>>;
  headers: Readonly<Record<string, string | string[] | undefined>>;
}

export type SlotVerdict = 'absent' | 'valid' | 'invalid';

export interface SlotVerifier {
  /** Scheme name used in logs: "v", "v2", "token". */
  readonly scheme: string;
  /** Higher wins when a request carries several schemes (v2/token before v). */
  readonly priority: number;
  verify(request: SlotRequest): SlotVerdict;
}
