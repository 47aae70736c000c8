import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { CATALOGUE, httpError, toHttp, type ErrorCode } from '../server/errors.js';

describe('error catalogue', () => {
  it('documents every code with its status in the README', async () => {
    const readme = await readFile(path.resolve(import.meta.dirname, '../README.md'), 'utf8');
    for (const [code, [status]] of Object.entries(CATALOGUE)) {
      assert.match(readme, new RegExp(`\\| \`${code}\` \\| ${status} \\|`), `${code} is missing from the README's error table`);
    }
  });

  it('maps a full disk to 507 and anything unknown to a plain 500 without its message', () => {
    const full = Object.assign(new Error('ENOSPC: no space left on device, write /srv/x'), { code: 'ENOSPC' });
    assert.equal(toHttp(full).status, 507);
    const internal = toHttp(new Error('open /srv/secret/path failed'));
    assert.equal(internal.status, 500);
    assert.equal(internal.message, 'Internal server error');
  });

  it('keeps a library 4xx status and shows its message only when exposed', () => {
    assert.equal(toHttp(Object.assign(new Error('hidden detail'), { status: 400 })).message, 'Bad request');
    assert.equal(toHttp(Object.assign(new Error('safe detail'), { status: 431, expose: true })).message, 'safe detail');
    assert.equal(toHttp(Object.assign(new Error('x'), { statusCode: 431 })).status, 431);
  });

  it('keeps our own errors as they are', () => {
    const code: ErrorCode = 'E_EXISTS';
    assert.equal(toHttp(httpError(code)).status, 409);
  });
});
