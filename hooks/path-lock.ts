// One commit at a time per path, within this process: with versioning, "move the current file aside, place
// the new one, prune" must not interleave with another upload of the same path.
export type PathLock = <T>(key: string, work: () => Promise<T>) => Promise<T>;

export function createPathLock(): PathLock {
  const tails = new Map<string, Promise<unknown>>();
  return async (key, work) => {
    const previous = tails.get(key) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(work);
    tails.set(key, run);
    try {
      return await run;
    } finally {
      if (tails.get(key) === run) tails.delete(key);
    }
  };
}
