// Upload admission (NumWorkers, UploadQueueSize): at most NumWorkers upload bodies are received at once, up to
// UploadQueueSize more wait for a place in arrival order, and beyond that an upload is refused with 503 before
// its body is read. 0 means no limit (for either). A waiting client that goes away leaves the queue.
import { httpError, RETRY_AFTER_SECONDS } from './errors.js';

export interface AdmissionCounters {
  /** Uploads that had to wait for a place. */
  queued: number;
  /** Uploads refused because the queue was full. */
  refused: number;
}

export interface Admission {
  /** Resolves with a release function once admitted; rejects with E_ADMISSION_FULL, or when signal aborts. */
  admit(signal?: AbortSignal): Promise<() => void>;
  state(): { active: number; waiting: number };
  counters: AdmissionCounters;
}

export function createAdmission(workers: number, queueLimit: number): Admission {
  let active = 0;
  const waiting: Array<() => void> = [];
  const counters: AdmissionCounters = { queued: 0, refused: 0 };

  const releaser = () => {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = waiting.shift();
      if (next) next();
      else active -= 1;
    };
  };

  return {
    admit(signal) {
      // Without a limit the uploads are still counted, so "uploads in progress" stays true.
      if (workers === 0 || active < workers) {
        active += 1;
        return Promise.resolve(releaser());
      }
      if (queueLimit > 0 && waiting.length >= queueLimit) {
        counters.refused += 1;
        return Promise.reject(httpError('E_ADMISSION_FULL', { headers: { 'Retry-After': String(RETRY_AFTER_SECONDS) } }));
      }
      counters.queued += 1;
      return new Promise((resolve, reject) => {
        // The place passes straight from the releasing upload to this one: active stays the same.
        const grant = () => {
          signal?.removeEventListener('abort', leave);
          resolve(releaser());
        };
        const leave = () => {
          const at = waiting.indexOf(grant);
          if (at !== -1) waiting.splice(at, 1);
          reject(httpError('E_INCOMPLETE', { message: 'Client went away while waiting' }));
        };
        waiting.push(grant);
        signal?.addEventListener('abort', leave, { once: true });
      });
    },
    state: () => ({ active, waiting: waiting.length }),
    counters,
  };
}
