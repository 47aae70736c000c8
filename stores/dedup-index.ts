// The contract of the deduplication index: which stored copies refer to which content blob (by the SHA-256 of
// the plaintext). Invariants every implementation keeps (spec/contracts/dedup-index.contract.ts):
// - addRef is idempotent per (sha, ref) and says whether the blob had no reference before;
// - removeRef is idempotent and says whether no reference is left: only then may the blob go;
// - a blob's reference count is never negative, and refs of one blob never touch another's.
// The blob's bytes are hard links, so an index that forgets references costs space, never data.
export interface DedupIndex {
  /** Records that ref (a stored copy) holds blob sha; true when it is the blob's first reference. */
  addRef(sha: string, ref: string): Promise<boolean>;
  /** Drops ref from blob sha; true when the blob has no reference left. */
  removeRef(sha: string, ref: string): Promise<boolean>;
  refs(sha: string): Promise<string[]>;
  close(): Promise<void>;
}
