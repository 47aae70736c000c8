// The locks one server works with: the tus locker (shared by the library, our finish hook and our routers),
// the commit path's per-path and per-blob locks, and a "one at a time" for sweeps. In memory for one
// instance; over Redis (RedisEnabled) when several instances share a StoreDir.
import { MemoryLocker } from '@tus/server';
import type { Locker } from '@tus/utils';
import { createPathLock, type PathLock } from '../hooks/path-lock.js';
import { RedisLocker, redisPathLock, type RedisLeases } from './redis-locks.js';

export interface Locks {
  tus: Locker;
  /** Versioning: "move the current file aside, place the new one, prune" of one path. */
  paths: PathLock;
  /** Deduplication: adopting and releasing one blob. */
  blobs: PathLock;
  /** Runs work unless another instance runs it now; says whether it ran. */
  once(name: string, work: () => Promise<void>): Promise<boolean>;
  close(): void;
}

export function memoryLocks(): Locks {
  return {
    tus: new MemoryLocker(),
    paths: createPathLock(),
    blobs: createPathLock(),
    // One process: a sweep that overlaps another only finds what the other left.
    once: async (_name, work) => {
      await work();
      return true;
    },
    close: () => undefined,
  };
}

export function redisLocks(leases: RedisLeases): Locks {
  return {
    tus: new RedisLocker(leases),
    paths: redisPathLock(leases, 'path'),
    blobs: redisPathLock(leases, 'blob'),
    once: (name, work) => leases.once(`once:${name}`, work),
    close: () => leases.close(),
  };
}
