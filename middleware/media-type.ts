// The media-type rule, one place for both doors. An uploader chooses the stored type (a PUT's Content-Type,
// a file-share token's filetype, tus metadata), so it is hostile input: a type with control characters is
// refused at upload, and what a download says is derived from the strictly parsed type (RFC 9110 §8.3.1),
// never copied. Browsers take the last type of a comma list (Fetch, "extract a MIME type"), so a value that
// is not exactly one media type is served as a download of unknown bytes.
import { parse } from 'content-type';
import { httpError } from '../server/errors.js';

export const OCTET_STREAM = 'application/octet-stream';

export interface ServedType {
  /** The Content-Type header to send: the parsed essence, with a charset when it is a plain token. */
  contentType: string;
  /** Whether a browser may render it in place (Content-Disposition: inline) instead of downloading it. */
  inline: boolean;
}

// Media a browser renders in place without running anything. SVG (and any XML-based image) can carry script.
const INLINE_ESSENCE = /^(?:image\/(?!.*(?:svg|xml))[a-z0-9.+-]+|video\/[a-z0-9.+-]+|audio\/[a-z0-9.+-]+|text\/plain)$/;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f]/;

/** How a stored type is served. Never throws: whatever the uploader stored, the answer is safe. */
export function servedType(stored: string): ServedType {
  let essence: string;
  let charset: string | undefined;
  try {
    // parse() throws for anything that is not one RFC 9110 media type (a comma list, a bare word, controls).
    const parsed = parse(stored);
    essence = parsed.type;
    charset = parsed.parameters.charset;
  } catch {
    return { contentType: OCTET_STREAM, inline: false };
  }
  const withCharset = charset !== undefined && TOKEN.test(charset) ? `${essence}; charset=${charset}` : essence;
  return { contentType: withCharset, inline: INLINE_ESSENCE.test(essence) };
}

/** Refuses a type that could split or corrupt a header when served (400); returns it otherwise. */
export function checkUploadType(type: string): string {
  if (CONTROL.test(type)) throw httpError('E_BAD_REQUEST', { message: 'Invalid content type: control characters' });
  if (type.length > 255) throw httpError('E_BAD_REQUEST', { message: 'Invalid content type: too long' });
  return type;
}
