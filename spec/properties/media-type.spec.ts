// Property: whatever type an uploader stored, a download announces exactly one well-formed media type that
// cannot split or extend the header, and lets a browser render it in place only when it is media that runs
// nothing (images other than SVG/XML, video, audio, plain text). Types with control characters are refused
// at upload, and nothing else is.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { HttpError } from '../../server/errors.js';
import { checkUploadType, OCTET_STREAM, servedType, type ServedType } from '../../middleware/media-type.js';
import { anyString, params, timeoutFor } from '../helpers/fuzz.js';

const PIECES = [
  'text/html', 'TEXT/HTML', 'text/html ', 'image/svg+xml', 'IMAGE/SVG+XML', 'image/svg', 'image/x-svg', 'image/svg-xml', 'image/x.xml', 'image/png',
  'IMAGE/PNG', 'image/png,text/html', 'image/png, text/html', 'text/plain', 'Text/Plain', 'video/mp4', 'audio/ogg', 'application/xhtml+xml',
  'application/octet-stream', 'text/xml', '*/*', 'image/*', 'image/', '/png', 'image//png', 'image/png/x',
  ',', ';', ';;', '; ', '"', '\\', '=', '/', 'charset=', 'charset=utf-8', 'CHARSET=UTF-8', 'charset="utf-8"', 'charset="a,b"', 'charset=a,b',
  'charset="\r\n"', 'charset=utf-8;charset=x', 'x=1', ' ', '\t', '\r', '\n', '\r\n', '\0', '\x7f', '\x0b', '\x1b', '\u0085', 'é', '\u2028', '\ufeff',
];
const biasedType = fc.array(fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...PIECES) }, { weight: 1, arbitrary: anyString(6) }), { minLength: 1, maxLength: 6 }).map((p) => p.join(''));
const storedType = fc.oneof({ weight: 1, arbitrary: anyString(60) }, { weight: 3, arbitrary: biasedType });

const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
/** One media type as RFC 9110 writes it, lower-case essence, at most a token charset. */
const ONE_MEDIA_TYPE = new RegExp(`^[!#$%&'*+.^_\`|~0-9a-z-]+/[!#$%&'*+.^_\`|~0-9a-z-]+(?:; charset=${TOKEN})?$`);
/** The safe-to-render rule, written out independently of the module. */
function safeInline(essence: string): boolean {
  const [top, sub, ...more] = essence.split('/');
  if (more.length > 0 || sub === undefined || sub === '') return false;
  if (top === 'image') return !sub.includes('svg') && !sub.includes('xml');
  return top === 'video' || top === 'audio' || essence === 'text/plain';
}

/** Commas outside quoted strings: what makes a browser see a list of types. */
function hasBareComma(value: string): boolean {
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (quoted && c === '\\') i++;
    else if (c === '"') quoted = !quoted;
    else if (c === ',' && !quoted) return true;
  }
  return false;
}

function served(stored: string): ServedType {
  try {
    return servedType(stored);
  } catch (err) {
    assert.fail(`servedType(${JSON.stringify(stored)}) threw ${String(err)}`);
  }
}

describe('media types under hostile input (property)', () => {
  it('a download type never carries CR, LF or another control character', function () {
    this.timeout(timeoutFor(20_000, 0.05, 20_000));
    fc.assert(
      fc.property(storedType, (stored) => {
        const { contentType } = served(stored);
        // eslint-disable-next-line no-control-regex -- C0, DEL and C1 controls are the point
        assert.ok(!/[\u0000-\u001f\u007f-\u009f]/.test(contentType), `${JSON.stringify(stored)} is served as ${JSON.stringify(contentType)}`);
      }),
      params(20_000),
    );
  });

  it('a download type is plain ASCII, which any client can read and Node can always send', function () {
    this.timeout(timeoutFor(20_000, 0.05, 20_000));
    fc.assert(
      fc.property(storedType, (stored) => {
        const { contentType } = served(stored);
        assert.match(contentType, /^[\x20-\x7e]*$/, `${JSON.stringify(stored)} is served as ${JSON.stringify(contentType)}`);
      }),
      params(20_000),
    );
  });

  it('a download type is never a comma list a browser would take the last type of', function () {
    this.timeout(timeoutFor(20_000, 0.05, 20_000));
    fc.assert(
      fc.property(storedType, (stored) => {
        const { contentType } = served(stored);
        assert.ok(!hasBareComma(contentType), `${JSON.stringify(stored)} is served as ${JSON.stringify(contentType)}`);
      }),
      params(20_000),
    );
  });

  it('a download announces exactly one media type, or application/octet-stream', function () {
    this.timeout(timeoutFor(20_000, 0.05, 20_000));
    fc.assert(
      fc.property(storedType, (stored) => {
        const { contentType, inline } = served(stored);
        assert.ok(contentType === OCTET_STREAM || ONE_MEDIA_TYPE.test(contentType), `${JSON.stringify(stored)} is served as ${JSON.stringify(contentType)}`);
        if (contentType === OCTET_STREAM) assert.equal(inline, false);
        // Serving what we serve changes nothing: the answer is already in its final form.
        assert.deepEqual(served(contentType), { contentType, inline });
      }),
      params(20_000),
    );
  });

  it('only images (not SVG or XML), video, audio and plain text are shown inline', function () {
    this.timeout(timeoutFor(20_000, 0.05, 20_000));
    fc.assert(
      fc.property(storedType, (stored) => {
        const { contentType, inline } = served(stored);
        const essence = contentType.split(';')[0]!;
        if (inline) assert.ok(safeInline(essence), `${JSON.stringify(stored)} is inline as ${JSON.stringify(contentType)}`);
        const typePart = stored.split(';')[0]!.trim().toLowerCase();
        if (['text/html', 'application/xhtml+xml', 'image/svg+xml'].includes(typePart) || typePart.includes(',')) {
          assert.equal(inline, false, `${JSON.stringify(stored)} is inline`);
        }
      }),
      params(20_000),
    );
  });

  it('an upload type is refused (400) exactly when it has a control character or is over 255 characters', function () {
    this.timeout(timeoutFor(20_000, 0.05, 20_000));
    const long = fc.integer({ min: 250, max: 260 }).chain((n) => biasedType.map((t) => t.padEnd(n, 'x').slice(0, n)));
    fc.assert(
      fc.property(fc.oneof(storedType, long), (type) => {
        // eslint-disable-next-line no-control-regex -- C0 controls and DEL are the point
        const refuse = /[\u0000-\u001f\u007f]/.test(type) || type.length > 255;
        let result: string | undefined;
        try {
          result = checkUploadType(type);
        } catch (err) {
          assert.ok(err instanceof HttpError && err.status === 400, `checkUploadType(${JSON.stringify(type)}) threw ${String(err)}`);
        }
        if (refuse) assert.equal(result, undefined, `accepted ${JSON.stringify(type)}`);
        else assert.equal(result, type, `refused ${JSON.stringify(type)}`);
      }),
      params(20_000),
    );
  });
});
