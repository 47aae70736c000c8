// Property: whatever a client puts in the URL below the upload base, decoding it either refuses with a 400
// or yields a path that names a file strictly inside the upload tree, with nothing a filesystem or a log
// would misread, and that the server's own URL encoding carries back to the same path.
import assert from 'node:assert/strict';
import path from 'node:path';
import fc from 'fast-check';
import { HttpError } from '../../server/errors.js';
import { encodeSlotPath } from '../../server/cli-sign.js';
import { decodeSlotPath, FileLayout, validateSlotPath } from '../../stores/file-layout.js';
import { anyString, params, timeoutFor } from '../helpers/fuzz.js';

const STORE = path.resolve('/srv/hmac-files');
const layout = new FileLayout(STORE, 'upload');
// eslint-disable-next-line no-control-regex -- the forbidden characters are the point
const FORBIDDEN = /[\u0000-\u001f\u007f\\]/;

/** Segments that have led to traversal, truncation or double decoding in other servers. */
const HOSTILE_SEGMENTS = [
  '..', '.', '%2e%2e', '%2E%2E', '%2e.', '.%2e', '%2e', '%2f', '%2F', '%00', '\0', '%0a', '%0d', '%7f', '%1b', '\\', '%5c', '%5C', '..\\',
  '//', '/', '%', '%zz', '%e0%a4%a', '%c0%ae%c0%ae', '%c0%af', '%ed%a0%80', '%f4%90%80%80', '%ff', '?', '#',
];
/** Segments that look dangerous but name an ordinary file: these must be accepted and stay where they say. */
const TRICKY_SEGMENTS = [
  '...', '....', '..a', 'a..', '.a', '%252e%252e', '%252f', '%2e%2e%2e', '%25', '%2525', 'a%2fb', '%ef%bc%8f', '%e2%88%95', '\u2215', '\uff0e\uff0e',
  '\u202e', '%e2%80%ae', '%C3%A9', 'é', '~', '.hmac', 'meta', 'staging', ' ', '%20', ';', 'C:', 'NUL', 'CON.txt', 'a', 'file.txt',
];

const longSegment = fc.integer({ min: 250, max: 260 }).chain((n) => fc.constantFrom('x', 'é', '%41', '%C3%A9').map((unit) => unit.repeat(Math.ceil(n / unit.length))));
const segment = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...HOSTILE_SEGMENTS) },
  { weight: 5, arbitrary: fc.constantFrom(...TRICKY_SEGMENTS) },
  { weight: 3, arbitrary: anyString(12) },
  { weight: 1, arbitrary: longSegment },
);
const separator = fc.oneof({ weight: 8, arbitrary: fc.constant('/') }, { weight: 1, arbitrary: fc.constantFrom('', '%2f', '%2F', '//', '\\', '%5c') });
/** Paths assembled from hostile segments and separators, the way an attacker would try them. */
const hostilePath = fc
  .array(fc.tuple(segment, separator), { minLength: 1, maxLength: 8 })
  .map((parts) => parts.map(([s, sep]) => s + sep).join(''))
  .chain((p) => fc.constantFrom(p, p.replace(/\/$/, ''), p.replace(/\/$/, ''), `/${p}`));
const slotInput = fc.oneof(
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 300 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary-ascii', maxLength: 100 }) },
  { weight: 4, arbitrary: hostilePath },
);

/** The decoded path, or the HttpError it was refused with; any other throw fails the property. */
function decodeOrRefusal(encoded: string): string | HttpError {
  try {
    return decodeSlotPath(encoded);
  } catch (err) {
    assert.ok(err instanceof HttpError, `decodeSlotPath(${JSON.stringify(encoded)}) threw ${String(err)}`);
    assert.equal(err.status, 400);
    assert.equal(err.code, 'E_BAD_PATH');
    return err;
  }
}

describe('slot paths under hostile input (property)', () => {
  it('no slot path decodes to a place outside the upload tree', function () {
    this.timeout(timeoutFor(20_000, 0.05, 20_000));
    fc.assert(
      fc.property(slotInput, (encoded) => {
        const decoded = decodeOrRefusal(encoded);
        if (decoded instanceof HttpError) return;
        const target = layout.dataPath(decoded);
        const relative = path.relative(layout.uploadRoot, target);
        // A first segment of ".." is outside; a file named "...." is not.
        const outside = relative === '' || path.isAbsolute(relative) || relative === '..' || relative.startsWith(`..${path.sep}`);
        assert.ok(!outside, `${JSON.stringify(encoded)} lands at ${target}`);
        // Nothing was normalised away: the file is exactly where the path says.
        assert.deepEqual(relative.split(path.sep), decoded.split('/'));
      }),
      params(20_000),
    );
  });

  it('an accepted slot path has no NUL, backslash or control character and fits the name limits', function () {
    this.timeout(timeoutFor(20_000, 0.05, 20_000));
    fc.assert(
      fc.property(slotInput, (encoded) => {
        const decoded = decodeOrRefusal(encoded);
        if (decoded instanceof HttpError) return;
        assert.ok(!FORBIDDEN.test(decoded), JSON.stringify(decoded));
        assert.ok(Buffer.byteLength(decoded) <= 1024);
        for (const s of decoded.split('/')) assert.ok(s !== '' && s !== '.' && s !== '..' && Buffer.byteLength(s) <= 255, JSON.stringify(decoded));
      }),
      params(20_000),
    );
  });

  it('an accepted slot path survives the URL the server hands out for it', function () {
    this.timeout(timeoutFor(20_000, 0.05, 20_000));
    fc.assert(
      fc.property(slotInput, (encoded) => {
        const decoded = decodeOrRefusal(encoded);
        if (decoded instanceof HttpError) return;
        assert.equal(decodeSlotPath(encodeSlotPath(decoded)), decoded);
        // Decoding happens once: the decoded path is a valid path in its own right, not something to decode again.
        assert.equal(validateSlotPath(decoded), decoded);
      }),
      params(20_000),
    );
  });

  it('a path the server checks is refused when no URL could carry it (lone UTF-16 surrogates)', function () {
    // validateSlotPath also checks paths that never were in a URL (a grant's prefix, from JSON, may hold
    // "\ud800"): a path that encodeURIComponent cannot encode has no download URL, and a filesystem stores
    // U+FFFD instead, so two such paths would name one file.
    this.timeout(timeoutFor(5_000, 0.05, 20_000));
    const lone = fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c));
    const withLoneSurrogate = fc
      .tuple(fc.string({ unit: 'grapheme-ascii', maxLength: 10 }), lone, fc.string({ unit: 'grapheme-ascii', maxLength: 10 }))
      .map(([a, s, b]) => `${a}${s}${b}`);
    fc.assert(
      fc.property(withLoneSurrogate, (raw) => {
        let accepted: string | undefined;
        try {
          accepted = validateSlotPath(raw);
        } catch (err) {
          assert.ok(err instanceof HttpError && err.status === 400, String(err));
        }
        assert.equal(accepted, undefined, `validateSlotPath accepted ${JSON.stringify(raw)}, which encodeSlotPath cannot encode`);
      }),
      params(5_000),
    );
  });
});
