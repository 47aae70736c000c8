// Shared knobs and generators of the property-based specs (spec/properties/).
//
//   FC_NUM_RUNS=20000 npm run fuzz                           the long run: every property gets that many cases
//   FC_SEED=<seed> FC_PATH=<path> <mocha> <spec file>        replays a failure (fast-check prints both)
//   FC_STATS=1 <mocha> <spec file>                           prints what the HTTP properties' requests got
//
// where <mocha> is `npx mocha --no-config --node-option import=tsx --require spec/helpers/global-fixtures.ts`
// (what `npm run fuzz` runs): .mocharc.json's own spec glob is added to any file named on the command line, so
// plain `npx mocha <file>` runs the whole suite. Without FC_SEED every property starts from the same fixed seed, so a failure in CI
// is reproducible.
import fc from 'fast-check';

/** How many cases a property runs: n by default, FC_NUM_RUNS when set. */
export function runs(n: number): number {
  return Number(process.env.FC_NUM_RUNS ?? n);
}

const DEFAULT_SEED = 20_240_601;

/** The seed of every property: fixed unless FC_SEED says otherwise. */
export function seed(): number {
  return Number(process.env.FC_SEED ?? DEFAULT_SEED);
}

/** fast-check parameters for a property of n cases by default (count, seed, and FC_PATH to replay a shrink). */
export function params<T>(n: number, extra: fc.Parameters<T> = {}): fc.Parameters<T> {
  const replay = process.env.FC_PATH;
  return { numRuns: runs(n), seed: seed(), ...(replay ? { path: replay } : {}), ...extra };
}

/** A mocha timeout that grows with the number of cases, so the long run is not cut short. */
export function timeoutFor(n: number, msPerRun: number, floorMs: number): number {
  return Math.max(floorMs, Math.ceil(runs(n) * msPerRun));
}

/** Rejects when promise has not settled within ms: a hung request fails the property instead of the suite. */
export function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** Characters Node lets a client put in a header value: visible ASCII, space and tab. */
const HEADER_CHARS = fc.oneof(
  { weight: 20, arbitrary: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)) },
  { weight: 2, arbitrary: fc.constantFrom(' ', '\t') },
);

/** Any value a client can send as a header field (leading and trailing whitespace included). */
export function headerValue(maxLength = 80): fc.Arbitrary<string> {
  return fc.string({ unit: HEADER_CHARS, maxLength });
}

/** A header value made of the given pieces and arbitrary filler, so near-misses of valid values are common. */
export function headerFrom(pieces: readonly string[], maxParts = 6): fc.Arbitrary<string> {
  return fc
    .array(fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...pieces) }, { weight: 1, arbitrary: headerValue(12) }), { minLength: 1, maxLength: maxParts })
    .map((parts) => parts.join(''));
}

/** Strings of every kind: full Unicode, Latin-1 and control characters, and printable ASCII. */
export function anyString(maxLength = 80): fc.Arbitrary<string> {
  return fc.oneof(fc.string({ unit: 'binary', maxLength }), fc.string({ unit: 'binary-ascii', maxLength }), fc.string({ maxLength }));
}

/** Values Express's query parsers produce (strings, repeated keys as arrays, qs's nested objects), plus odd ones. */
export const queryValue: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    anyString(40),
    fc.constantFrom('', '0'.repeat(64), 'f'.repeat(64), 'F'.repeat(64), 'undefined', 'null'),
    fc.array(fc.oneof(anyString(20), tie('value')), { maxLength: 3 }),
    fc.dictionary(anyString(8), tie('value'), { maxKeys: 3 }),
    fc.constantFrom(undefined, null, 0, 1, true, Number.NaN),
  ),
})).value;

/** A query object: the keys the verifiers read, common words, prototype names and anything else. */
export function queryObject(keys: readonly string[]): fc.Arbitrary<Record<string, unknown>> {
  const key = fc.oneof(fc.constantFrom(...keys, '__proto__', 'constructor', 'toString', 'hasOwnProperty'), anyString(10));
  return fc.dictionary(key, queryValue, { maxKeys: 5 });
}

/**
 * Counts labels (answer statuses, refusal reasons) over a property's run and, with FC_STATS=1, prints them
 * at the end: the way to see whether a generator still reaches the code it was written for.
 */
export class Tally {
  private readonly counts = new Map<string, number>();
  constructor(private readonly title: string) {}

  add(label: string): void {
    this.counts.set(label, (this.counts.get(label) ?? 0) + 1);
  }

  print(): void {
    if (!process.env.FC_STATS) return;
    const total = [...this.counts.values()].reduce((a, b) => a + b, 0);
    const lines = [...this.counts].sort((a, b) => b[1] - a[1]).map(([label, n]) => `      ${((100 * n) / total).toFixed(1).padStart(5)}%  ${label}`);
    console.log(`    ${this.title} (${total} cases)\n${lines.join('\n')}`);
  }
}
