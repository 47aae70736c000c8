// Upload grants for the tus door: a JWT (HS256) that an application backend mints for one user, so any
// language's JWT library can make one. Claims (README, "Upload grants"):
//   aud  "hmac-file-server:tus"   (keeps grants and Prosody file-share tokens apart)
//   sub  the subject: who uploads; an upload can only be touched with a grant for the same subject
//   exp  expiry, unix seconds (required)
//   max_size  largest upload this grant allows, bytes (required, a positive integer)
//   filename  optional: the only file name allowed
//   prefix    optional: committed files go to <UploadSubDir>/<prefix>/<id>/<name>
// The key is GrantSecret, or when empty HKDF-SHA256(Secret, "hmac-file-server tus grant v1").
import { hkdfSync } from 'node:crypto';
import { errors, jwtVerify, SignJWT } from 'jose';
import { validateSlotPath } from '../stores/file-layout.js';

export const GRANT_AUDIENCE = 'hmac-file-server:tus';

export interface Grant {
  subject: string;
  expiresAt: Date;
  maxSize: number;
  filename?: string;
  prefix?: string;
}

export function grantKey(grantSecret: string, secret: string): Uint8Array {
  if (grantSecret !== '') return new TextEncoder().encode(grantSecret);
  return new Uint8Array(hkdfSync('sha256', secret, '', 'hmac-file-server tus grant v1', 32));
}

export interface MintOptions {
  subject: string;
  maxSize: number;
  ttlSeconds: number;
  filename?: string;
  prefix?: string;
}

export function mintGrant(key: Uint8Array, options: MintOptions): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({
    max_size: options.maxSize,
    ...(options.filename !== undefined ? { filename: options.filename } : {}),
    ...(options.prefix !== undefined ? { prefix: options.prefix } : {}),
  })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setAudience(GRANT_AUDIENCE)
    .setSubject(options.subject)
    .setIssuedAt(now)
    .setExpirationTime(now + options.ttlSeconds)
    .sign(key);
}

export type GrantCheck = { ok: true; grant: Grant } | { ok: false; reason: 'missing' | 'expired' | 'invalid' | 'malformed'; message: string };

/** Checks a grant; never throws for bad input. */
export async function verifyGrant(key: Uint8Array, token: string | undefined): Promise<GrantCheck> {
  if (token === undefined || token === '') return { ok: false, reason: 'missing', message: 'Upload grant required' };
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, key, { algorithms: ['HS256'], audience: GRANT_AUDIENCE, requiredClaims: ['sub', 'exp'] }));
  } catch (err) {
    if (err instanceof errors.JWTExpired) return { ok: false, reason: 'expired', message: 'Upload grant expired' };
    if (err instanceof errors.JWSSignatureVerificationFailed) return { ok: false, reason: 'invalid', message: 'Invalid upload grant' };
    return { ok: false, reason: 'malformed', message: 'Malformed upload grant' };
  }
  const { sub, exp, max_size: maxSize, filename, prefix } = payload;
  if (typeof sub !== 'string' || sub === '' || typeof exp !== 'number') return { ok: false, reason: 'malformed', message: 'Malformed upload grant' };
  // The tus library reads a limit of 0 as "no limit": a grant for nothing must never become one for anything.
  if (typeof maxSize !== 'number' || !Number.isSafeInteger(maxSize) || maxSize < 1) {
    return { ok: false, reason: 'malformed', message: 'Upload grant needs max_size, a positive integer' };
  }
  if (filename !== undefined && (typeof filename !== 'string' || filename.includes('/'))) return { ok: false, reason: 'malformed', message: 'Malformed upload grant' };
  if (prefix !== undefined) {
    try {
      if (typeof prefix !== 'string') throw new Error('prefix');
      validateSlotPath(prefix);
    } catch {
      return { ok: false, reason: 'malformed', message: 'Malformed upload grant' };
    }
  }
  return {
    ok: true,
    grant: {
      subject: sub,
      expiresAt: new Date(exp * 1000),
      maxSize,
      ...(typeof filename === 'string' ? { filename } : {}),
      ...(typeof prefix === 'string' ? { prefix } : {}),
    },
  };
}

/** The grant of a request: "Authorization: Bearer <grant>", or ?grant=<grant> for clients without headers. */
export function grantTokenOf(headers: { authorization?: string | undefined }, query: Readonly<Record<string, unknown>>): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(headers.authorization ?? '');
  if (match) return match[1];
  return typeof query.grant === 'string' ? query.grant : undefined;
}
