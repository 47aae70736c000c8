// The contract every dedup index keeps (stores/dedup-index.ts), run once per implementation.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { DedupIndex } from '../../stores/dedup-index.js';

const sha = () => randomBytes(32).toString('hex');

export function dedupIndexContract(name: string, make: () => Promise<DedupIndex>): void {
  describe(`dedup index contract: ${name}`, () => {
    let index: DedupIndex;
    before(async () => {
      index = await make();
    });
    after(() => index.close());

    it('says first for the first reference only, and is idempotent per ref', async () => {
      const blob = sha();
      assert.equal(await index.addRef(blob, 'a'), true);
      assert.equal(await index.addRef(blob, 'a'), false);
      assert.equal(await index.addRef(blob, 'b'), false);
      assert.deepEqual((await index.refs(blob)).sort(), ['a', 'b']);
    });

    it('says last only when no reference is left, and never goes below zero', async () => {
      const blob = sha();
      await index.addRef(blob, 'a');
      await index.addRef(blob, 'b');
      assert.equal(await index.removeRef(blob, 'a'), false);
      assert.equal(await index.removeRef(blob, 'a'), false);
      assert.equal(await index.removeRef(blob, 'b'), true);
      assert.equal(await index.removeRef(blob, 'b'), true);
      assert.deepEqual(await index.refs(blob), []);
      // A blob that lost its last reference starts over.
      assert.equal(await index.addRef(blob, 'c'), true);
    });

    it('keeps the references of different blobs apart', async () => {
      const [one, two] = [sha(), sha()];
      await index.addRef(one, 'x');
      await index.addRef(two, 'x');
      assert.equal(await index.removeRef(one, 'x'), true);
      assert.deepEqual(await index.refs(two), ['x']);
    });

    it('agrees on one first reference among many at once', async () => {
      const blob = sha();
      const firsts = await Promise.all(Array.from({ length: 20 }, (_, i) => index.addRef(blob, `r${i}`)));
      assert.equal(firsts.filter(Boolean).length, 1);
      assert.equal((await index.refs(blob)).length, 20);
    });
  });
}
