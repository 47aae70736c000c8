// Prosody's built-in mod_http_file_share with an external base URL (docs/protocols.md, "Other XMPP servers"):
// PUT <base>/<slot>/<urlencoded filename> with "Authorization: Bearer <JWT>", HS256 with the shared secret,
// claims sub iat exp slot filename filesize filetype [expires]. The checks are Prosody's own: signature, exp
// at the start of the request, slot = first path segment, Content-Length = filesize (413 otherwise).
import { errors, jwtVerify, type JWTPayload } from 'jose';
import type { SlotRequest, SlotResult, SlotVerifier } from './slot-verifier.js';

interface FileShareClaims extends JWTPayload {
  slot?: unknown;
  filename?: unknown;
  filesize?: unknown;
  filetype?: unknown;
  expires?: unknown;
}

function bearerOf(request: SlotRequest): string | undefined {
  const header = request.headers.authorization;
  const value = Array.isArray(header) ? header[0] : header;
  const match = value === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(value);
  return match?.[1];
}

export class FileShareJwtVerifier implements SlotVerifier {
  readonly scheme = 'jwt';
  readonly priority = 3;
  private readonly keys: readonly Uint8Array[];

  constructor(secrets: readonly string[]) {
    this.keys = secrets.map((s) => new TextEncoder().encode(s));
  }

  async verify(request: SlotRequest): Promise<SlotResult> {
    const token = bearerOf(request);
    if (token === undefined) return { verdict: 'absent' };
    const invalid = (code: 'E_MAC_INVALID' | 'E_SLOT_EXPIRED' | 'E_SLOT_MISMATCH' | 'E_SIZE_MISMATCH', reason: string): SlotResult => ({
      verdict: 'invalid',
      code,
      reason,
      scheme: this.scheme,
    });

    let claims: FileShareClaims | undefined;
    for (const key of this.keys) {
      try {
        // Only HS256: "none", RS*/ES* and other HMAC sizes are refused before any claim is read.
        ({ payload: claims } = await jwtVerify<FileShareClaims>(token, key, { algorithms: ['HS256'] }));
        break;
      } catch (err) {
        // jose checks the signature before the claims, so "expired" means it was ours.
        if (err instanceof errors.JWTExpired) return invalid('E_SLOT_EXPIRED', 'Upload slot expired');
        if (err instanceof errors.JWSSignatureVerificationFailed) continue;
        return invalid('E_MAC_INVALID', 'Invalid upload token');
      }
    }
    if (!claims) return invalid('E_MAC_INVALID', 'Invalid upload token');
    if (typeof claims.exp !== 'number') return invalid('E_MAC_INVALID', 'Upload token without expiry');

    const [slot, ...rest] = request.path.split('/');
    if (typeof claims.slot !== 'string' || claims.slot !== slot) return invalid('E_SLOT_MISMATCH', 'Upload slot does not match the URL');
    if (typeof claims.filename === 'string' && claims.filename !== rest.join('/')) {
      return invalid('E_SLOT_MISMATCH', 'File name does not match the upload slot');
    }
    if (claims.filesize !== request.size) return invalid('E_SIZE_MISMATCH', 'Size does not match the upload slot');
    return {
      verdict: 'valid',
      grant: {
        scheme: this.scheme,
        ...(typeof claims.filetype === 'string' && claims.filetype !== '' ? { contentType: claims.filetype } : {}),
        ...(typeof claims.sub === 'string' ? { owner: claims.sub } : {}),
        ...(typeof claims.expires === 'number' ? { expiresAt: new Date(claims.expires * 1000) } : {}),
      },
    };
  }
}
