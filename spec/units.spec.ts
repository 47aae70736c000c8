import assert from 'node:assert/strict';
import { parseDuration, parseSize } from '../server/units.js';

describe('units', () => {
  it('parses every duration form of the seed and Go-style durations', () => {
    const cases: Array<[string, number]> = [
      ['30s', 30_000],
      ['65s', 65_000],
      ['4800s', 4_800_000],
      ['1m', 60_000],
      ['24h', 86_400_000],
      ['30d', 30 * 86_400_000],
      ['365d', 365 * 86_400_000],
      ['168h0m0s', 168 * 3_600_000],
      ['1h30m', 5_400_000],
      ['1.5s', 1500],
      ['250ms', 250],
    ];
    for (const [input, ms] of cases) assert.equal(parseDuration(input), ms, input);
  });

  it('rejects what is not a duration', () => {
    for (const input of ['', '10', '2w', 's', '1 h', '-5s', '1h-5m', 'abc']) assert.equal(parseDuration(input), undefined, input);
  });

  it('parses sizes with binary units', () => {
    const cases: Array<[string, number]> = [
      ['104857600', 104_857_600],
      ['100MB', 100 * 1024 ** 2],
      ['100MiB', 100 * 1024 ** 2],
      ['1GiB', 1024 ** 3],
      ['1gb', 1024 ** 3],
      ['512K', 512 * 1024],
      ['1.5k', 1536],
      ['0', 0],
    ];
    for (const [input, bytes] of cases) assert.equal(parseSize(input), bytes, input);
  });

  it('rejects what is not a size', () => {
    for (const input of ['', 'MB', '10 XB', '-1', '1e3', '99999999999TB']) assert.equal(parseSize(input), undefined, input);
  });
});
