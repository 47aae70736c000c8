// Mints tokens the way Prosody's mod_http_file_share does (util.jwt, HS256 over the shared secret).
import { SignJWT } from 'jose';

export interface FileShareClaims {
  slot: string;
  filename: string;
  filesize: number;
  filetype?: string;
  /** Unix seconds after which the file should be deleted. */
  expires?: number;
}

export function fileShareToken(secret: string, claims: FileShareClaims, options: { sub?: string; expiresIn?: number } = {}): Promise<string> {
  const iat = Math.floor(Date.now() / 1000);
  return new SignJWT({ ...claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(options.sub ?? 'alice@example.test')
    .setIssuedAt(iat)
    .setExpirationTime(iat + (options.expiresIn ?? 300))
    .sign(new TextEncoder().encode(secret));
}
