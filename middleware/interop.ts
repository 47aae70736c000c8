// The interop versions of the IETF resumable-upload draft that clients pin in Upload-Draft-Interop-Version,
// and what differs between them:
//   3  draft-01 (Apple's URLSession on iOS 17): completeness is the inverted Upload-Incomplete, and a PATCH
//      without it completes the upload;
//   4  draft-02: Upload-Complete;
//   5  draft-03 (tus-js-client 'ietf-draft-03', iOS 18.0);
//   6  drafts 04-05 (tus-js-client 'ietf-draft-05', iOS 18.1 on): appends must be application/partial-upload,
//      Upload-Limit names the lifetime "expires";
//   7  drafts 06-08: "max-age" instead; an append that does not complete answers 204 with Upload-Complete: ?0;
//   8  drafts 09 on.
// Up to 6 the drafts recommend 201 for every successful creation and append. Upload-Length, Upload-Limit and
// problem details go to every version: a field a client does not know is one it ignores.

export const INTEROP_HEADER = 'Upload-Draft-Interop-Version';
export const INTEROP_VERSIONS = [3, 4, 5, 6, 7, 8] as const;
export type InteropVersion = (typeof INTEROP_VERSIONS)[number];

/** The version a request asks for: undefined when it is not an IETF request, null when the version is unknown. */
export function interopVersionOf(header: string | undefined): InteropVersion | null | undefined {
  if (header === undefined) return undefined;
  const version = Number(header.trim());
  return (INTEROP_VERSIONS as readonly number[]).includes(version) ? (version as InteropVersion) : null;
}

/** The header that states completeness in this version. */
export function completeHeaderName(version: InteropVersion): 'Upload-Complete' | 'Upload-Incomplete' {
  return version === 3 ? 'Upload-Incomplete' : 'Upload-Complete';
}

/** That header with its value for done. */
export function completeHeaderOf(version: InteropVersion, done: boolean): Record<string, string> {
  return version === 3 ? { 'Upload-Incomplete': done ? '?0' : '?1' } : { 'Upload-Complete': done ? '?1' : '?0' };
}

/**
 * What a request's completeness header says (already parsed as a Structured Field boolean; undefined when
 * absent or invalid); undefined when it must be there and is not. draft-01: a PATCH "MUST" carry
 * Upload-Incomplete: ?1 unless it ends the upload, so without it, it does.
 */
export function requestedCompletion(version: InteropVersion, method: string, value: boolean | undefined): boolean | undefined {
  if (version === 3) return value === undefined ? (method === 'PATCH' ? true : undefined) : !value;
  return value;
}

/** From draft-04 (version 6) on, an append "MUST" be application/partial-upload. */
export function needsPartialUploadType(version: InteropVersion): boolean {
  return version >= 6;
}

/** The Upload-Limit key of the time left: "expires" in drafts 04-05, "max-age" after. */
export function lifetimeKey(version: InteropVersion): 'expires' | 'max-age' {
  return version === 6 ? 'expires' : 'max-age';
}

/** The status of a successful append: 201 up to version 6; then 204 while incomplete, 200 when it completes. */
export function appendStatus(version: InteropVersion, done: boolean): number {
  if (version <= 6) return 201;
  return done ? 200 : 204;
}
