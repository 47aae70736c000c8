// The one error type of the server and the one place that turns any thrown value into an HTTP answer.
// Public messages are fixed per code; causes (paths, errno, stacks) go to the log only.
import { ERRORS } from '@tus/utils';

export interface HttpErrorOptions {
  headers?: Record<string, string>;
  cause?: unknown;
  /** Overrides the catalogue message when a more specific public text helps the client. */
  message?: string;
  /**
   * RFC 9457 problem details (type and extension members): the answer is then application/problem+json with
   * these members and the message as its title.
   */
  problem?: Readonly<Record<string, unknown>>;
}

export class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly problem: Readonly<Record<string, unknown>> | undefined;

  constructor(status: number, code: string, message: string, options: HttpErrorOptions = {}) {
    super(options.message ?? message, { cause: options.cause });
    this.name = 'HttpError';
    this.status = status;
    this.code = code;
    this.headers = options.headers ?? {};
    this.problem = options.problem;
  }
}

/** Every code the server answers with; the README lists each one (a test checks it). */
export const CATALOGUE = {
  E_BAD_REQUEST: [400, 'Bad request'],
  E_BAD_PATH: [400, 'Invalid upload path'],
  E_INCOMPLETE: [400, 'Fewer bytes arrived than Content-Length announced'],
  E_GRANT: [401, 'Upload grant required'],
  E_FORBIDDEN: [403, 'Forbidden'],
  E_MAC_MISSING: [403, 'Missing signature'],
  E_MAC_INVALID: [403, 'Invalid signature'],
  E_SLOT_EXPIRED: [403, 'Upload slot expired'],
  E_SLOT_MISMATCH: [403, 'Upload slot does not match the URL'],
  E_EXTENSION: [403, 'File extension not allowed'],
  E_IP_REFUSED: [403, 'Your address is not allowed to use this server'],
  E_INFECTED: [422, 'File rejected: malware detected'],
  E_NOT_FOUND: [404, 'Not found'],
  E_CLIENT: [400, 'Request refused'],
  E_METHOD: [405, 'Method not allowed'],
  E_EXISTS: [409, 'File already exists'],
  E_OFFSET_MISMATCH: [409, 'Upload-Offset does not match the offset of the upload'],
  E_INCONSISTENT_LENGTH: [400, 'Inconsistent length values for the upload'],
  E_UPLOAD_COMPLETED: [400, 'Upload is already completed'],
  E_EXPIRED: [410, 'File expired'],
  E_LENGTH_REQUIRED: [411, 'Content-Length required'],
  E_PRECONDITION: [412, 'Precondition failed'],
  E_TOO_LARGE: [413, 'File too large'],
  E_QUOTA: [413, 'Quota exceeded'],
  E_SIZE_MISMATCH: [413, 'Size does not match the upload slot'],
  E_SCAN_TOO_LARGE: [413, 'File too large for the virus scanner'],
  E_MEDIA_TYPE: [415, 'Unsupported media type'],
  E_RANGE: [416, 'Range not satisfiable'],
  E_RATE_LIMITED: [429, 'Too many requests, slow down'],
  E_INTERNAL: [500, 'Internal server error'],
  E_KEY_UNKNOWN: [500, 'Stored file cannot be decrypted'],
  E_INTEGRITY: [500, 'Stored file is damaged'],
  E_SCANNER_DOWN: [503, 'Virus scanner unavailable, try again later'],
  E_SCAN_QUEUE_FULL: [503, 'Too many uploads waiting for the virus scanner, try again later'],
  E_OVERLOADED: [503, 'Server busy, try again later'],
  E_ADMISSION_FULL: [503, 'Too many uploads at once, try again later'],
  E_BUSY: [503, 'Upload is busy with another request, try again later'],
  E_COORDINATION_DOWN: [503, 'Shared state unavailable, try again later'],
  E_TENANT_QUOTA: [507, 'Storage quota exceeded'],
  E_STORAGE_DOWN: [503, 'Storage unavailable, try again later'],
  E_TOO_MANY_CONNECTIONS: [503, 'Too many connections from your address, try again later'],
  E_DISK_FULL: [507, 'Insufficient storage'],
} as const satisfies Record<string, readonly [number, string]>;

export type ErrorCode = keyof typeof CATALOGUE;

/** What a 503 for a passing shortage (descriptors, connections) asks the client to wait. */
export const RETRY_AFTER_SECONDS = 10;

export function httpError(code: ErrorCode, options: HttpErrorOptions = {}): HttpError {
  const [status, message] = CATALOGUE[code];
  return new HttpError(status, code, message, options);
}

function errnoOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

/** The 4xx status a library error carries (Express, body parsers, http-errors), if any. */
function clientStatusOf(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const { status, statusCode } = err as { status?: unknown; statusCode?: unknown };
  const value = typeof status === 'number' ? status : statusCode;
  return typeof value === 'number' && value >= 400 && value < 500 ? value : undefined;
}

/** An error of the tus library ({ status_code, body }: its ERRORS table, or our hooks' wrapper). */
function tusErrorOf(err: unknown): { status_code: number; body: string; cause?: unknown } | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const { status_code: status, body } = err as { status_code?: unknown; body?: unknown };
  return typeof status === 'number' && typeof body === 'string' ? { status_code: status, body, cause: (err as { cause?: unknown }).cause } : undefined;
}

/**
 * Maps anything thrown to an HttpError: ours pass through; a library's 4xx keeps its status, with its
 * message only when the library marks it safe to show (expose, or the tus library's fixed ERRORS texts);
 * a full disk is 507; no descriptors 503; the rest a plain 500.
 */
export function toHttp(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  const tus = tusErrorOf(err);
  if (tus) {
    // Our hooks wrap an error for the library; its cause is what happened.
    if (tus.cause !== undefined) return toHttp(tus.cause);
    // Another request holds the upload and did not let go in time: a passing state, not a fault.
    if (err === ERRORS.ERR_LOCK_TIMEOUT) return httpError('E_BUSY', { cause: err, headers: { 'Retry-After': String(RETRY_AFTER_SECONDS) } });
    if (tus.status_code >= 400 && tus.status_code < 500) {
      return new HttpError(tus.status_code, tus.status_code === 400 ? 'E_BAD_REQUEST' : 'E_CLIENT', tus.body.trim() || CATALOGUE.E_CLIENT[1], { cause: err });
    }
    return httpError('E_INTERNAL', { cause: err });
  }
  const clientStatus = clientStatusOf(err);
  if (clientStatus !== undefined) {
    const exposed = (err as { expose?: unknown }).expose === true && err instanceof Error ? err.message : undefined;
    const code = clientStatus === 400 ? 'E_BAD_REQUEST' : 'E_CLIENT';
    return new HttpError(clientStatus, code, exposed ?? CATALOGUE[code][1], { cause: err });
  }
  const errno = errnoOf(err);
  if (errno === 'ENOSPC' || errno === 'EDQUOT') return httpError('E_DISK_FULL', { cause: err });
  // Out of descriptors is a passing condition of this process, not a fault of the request.
  if (errno === 'EMFILE' || errno === 'ENFILE') return httpError('E_OVERLOADED', { cause: err, headers: { 'Retry-After': String(RETRY_AFTER_SECONDS) } });
  return httpError('E_INTERNAL', { cause: err });
}
