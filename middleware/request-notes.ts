// What a request's handlers learn that its metrics need when it ends: the door and tenant that took it, the
// signing scheme, the upload it committed, the catalogue code of its refusal. Kept on the request itself, so
// nothing is shared between requests.
const NOTES = Symbol('request notes');

export interface RequestNotes {
  door?: 'legacy' | 'tus';
  /** The tenant prefix (UploadSubDir or a [[Tenants]] Prefix). */
  tenant?: string;
  /** v, v2, token, jwt (legacy) or grant (tus). */
  scheme?: string;
  /** An upload this request finished and committed; startedAt (ms) for a tus upload's creation. */
  committed?: { size: number; startedAt?: number };
  /** The catalogue code of the error this request was answered with. */
  code?: string;
}

export function note(req: object, fields: RequestNotes): void {
  const holder = req as { [NOTES]?: RequestNotes };
  holder[NOTES] = { ...holder[NOTES], ...fields };
}

export function notesOf(req: object): RequestNotes {
  return (req as { [NOTES]?: RequestNotes })[NOTES] ?? {};
}
