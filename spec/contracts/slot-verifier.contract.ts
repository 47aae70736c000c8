// The contract every slot verifier keeps, run once per scheme: absent when its parameter is missing,
// valid only for the exact message, either hex case, invalid for anything else, never a throw.
import assert from 'node:assert/strict';
import type { SlotRequest, SlotVerifier } from '../../middleware/slot-verifier.js';

export interface SlotVerifierCase {
  verifier: SlotVerifier;
  /** Returns query parameters that sign request with the right secret. */
  sign(request: Omit<SlotRequest, 'query' | 'headers'>): Record<string, string>;
  /** Whether the scheme signs the Content-Type (v does not). */
  signsType: boolean;
}

const base = { path: '0bd8b7c2-1a2b-4c3d-9e8f-000000000001/cat picture.jpg', size: 23026, contentType: 'image/jpeg' };

export function slotVerifierContract(name: string, make: () => SlotVerifierCase): void {
  describe(`slot verifier contract: ${name}`, () => {
    const request = (query: Record<string, unknown>, over: Partial<SlotRequest> = {}): SlotRequest => ({ ...base, query, headers: {}, ...over });

    it('says absent when its parameter is missing', () => {
      const { verifier } = make();
      assert.equal(verifier.verify(request({})), 'absent');
    });

    it('accepts its own signature in lower and upper case hex', () => {
      const c = make();
      const query = c.sign(base);
      assert.equal(c.verifier.verify(request(query)), 'valid');
      const upper = Object.fromEntries(Object.entries(query).map(([k, v]) => [k, v.toUpperCase()]));
      assert.equal(c.verifier.verify(request(upper)), 'valid');
    });

    it('rejects another path, another size, and a truncated or non-hex MAC', () => {
      const c = make();
      const query = c.sign(base);
      assert.equal(c.verifier.verify(request(query, { path: `${base.path}x` })), 'invalid');
      assert.equal(c.verifier.verify(request(query, { size: base.size + 1 })), 'invalid');
      const [key, mac] = Object.entries(query)[0]!;
      assert.equal(c.verifier.verify(request({ [key]: mac.slice(0, 63) })), 'invalid');
      assert.equal(c.verifier.verify(request({ [key]: `${mac.slice(0, 63)}g` })), 'invalid');
      assert.equal(c.verifier.verify(request({ [key]: [mac, mac] })), 'invalid');
    });

    it('binds the content type exactly when the scheme signs it', () => {
      const c = make();
      const query = c.sign(base);
      const verdict = c.verifier.verify(request(query, { contentType: 'image/jpeg; charset=utf-8' }));
      assert.equal(verdict, c.signsType ? 'invalid' : 'valid');
    });
  });
}
