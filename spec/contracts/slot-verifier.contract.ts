// The contract every slot verifier keeps, run once per scheme: absent when its credential is missing,
// valid only for its own signature over this path and size, rotation-friendly (a previous secret still
// verifies), invalid for anything else, and never a throw.
import assert from 'node:assert/strict';
import type { SlotRequest, SlotVerifier } from '../../middleware/slot-verifier.js';

export interface SignedParts {
  query: Record<string, unknown>;
  headers: Record<string, string>;
}

export interface SlotVerifierCase {
  /** A verifier that accepts both 'current' and 'previous' secrets. */
  verifier: SlotVerifier;
  sign(secret: string, request: Omit<SlotRequest, 'query' | 'headers'>): Promise<SignedParts>;
  /** The same credential slot filled with rubbish. */
  garbage: SignedParts[];
}

const base = { path: '0bd8b7c2-1a2b-4c3d-9e8f-000000000001/cat picture.jpg', size: 23026, contentType: 'image/jpeg' };

export function slotVerifierContract(name: string, make: () => SlotVerifierCase): void {
  describe(`slot verifier contract: ${name}`, () => {
    const request = (parts: SignedParts, over: Partial<SlotRequest> = {}): SlotRequest => ({ ...base, ...parts, ...over });

    it('says absent when its credential is missing', async () => {
      assert.deepEqual(await make().verifier.verify(request({ query: {}, headers: {} })), { verdict: 'absent' });
    });

    it('accepts its own signature with the current and with a previous secret', async () => {
      const c = make();
      for (const secret of ['current', 'previous']) {
        const result = await c.verifier.verify(request(await c.sign(secret, base)));
        assert.equal(result.verdict, 'valid', secret);
      }
    });

    it('refuses a signature made with a secret it does not hold', async () => {
      const c = make();
      const result = await c.verifier.verify(request(await c.sign('stranger', base)));
      assert.equal(result.verdict, 'invalid');
    });

    it('refuses its signature on another path or for another size', async () => {
      const c = make();
      const parts = await c.sign('current', base);
      assert.equal((await c.verifier.verify(request(parts, { path: `${base.path}x` }))).verdict, 'invalid');
      assert.equal((await c.verifier.verify(request(parts, { path: `other/${base.path.split('/')[1]}` }))).verdict, 'invalid');
      assert.equal((await c.verifier.verify(request(parts, { size: base.size + 1 }))).verdict, 'invalid');
    });

    it('says invalid, without throwing, for rubbish in its credential', async () => {
      const c = make();
      for (const parts of c.garbage) {
        const result = await c.verifier.verify(request(parts));
        assert.equal(result.verdict, 'invalid', JSON.stringify(parts));
      }
    });
  });
}
