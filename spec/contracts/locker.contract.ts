// The contract every lock keeps, run once per implementation: the tus Locker (@tus/utils) that the library,
// the finish hook and the routers share, and the PathLock of the commit path.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ERRORS, type Locker } from '@tus/utils';
import type { PathLock } from '../../hooks/path-lock.js';
import { toHttp } from '../../server/errors.js';

const id = () => randomBytes(8).toString('hex');
const never = () => new AbortController().signal;

/** make(acquireTimeoutMs) builds a locker whose lock() gives up after that long. */
export function lockerContract(name: string, make: (acquireTimeoutMs: number) => Promise<Locker>): void {
  describe(`tus locker contract: ${name}`, () => {
    let locker: Locker;
    let quick: Locker;
    before(async () => {
      locker = await make(10_000);
      quick = await make(300);
    });

    it('gives a lock to one holder at a time, asks the holder to let go, and hands it over on unlock', async () => {
      const upload = id();
      const first = locker.newLock(upload);
      let asked = 0;
      await first.lock(never(), () => {
        asked += 1;
      });
      let secondHas = false;
      const second = locker.newLock(upload);
      const waiting = second.lock(never(), () => undefined).then(() => (secondHas = true));
      await sleep(150);
      assert.equal(secondHas, false, 'the second request got a lock that was held');
      assert.ok(asked >= 1, 'the holder was never asked to release');
      await first.unlock();
      await waiting;
      assert.equal(secondHas, true);
      await second.unlock();
    });

    it('hands the lock over when the holder lets go because it was asked (a newer PATCH of the same upload)', async () => {
      const upload = id();
      const first = locker.newLock(upload);
      await first.lock(never(), () => void first.unlock());
      const second = locker.newLock(upload);
      const started = Date.now();
      await second.lock(never(), () => undefined);
      assert.ok(Date.now() - started < 2000, `handover took ${Date.now() - started} ms`);
      await second.unlock();
    });

    it('lets locks of different uploads be held at once', async () => {
      const a = locker.newLock(id());
      const b = locker.newLock(id());
      await a.lock(never(), () => undefined);
      await b.lock(never(), () => undefined);
      await Promise.all([a.unlock(), b.unlock()]);
    });

    it('gives up with the lock-timeout error (a 503) when the holder never lets go', async () => {
      const upload = id();
      const holder = quick.newLock(upload);
      await holder.lock(never(), () => undefined);
      await assert.rejects(quick.newLock(upload).lock(never(), () => undefined), (err) => err === ERRORS.ERR_LOCK_TIMEOUT && toHttp(err).status === 503);
      await holder.unlock();
      // Nothing was left behind by the waiter that gave up.
      const after = quick.newLock(upload);
      await after.lock(never(), () => undefined);
      await after.unlock();
    });

    it('stops waiting when the request is cancelled', async () => {
      const upload = id();
      const holder = locker.newLock(upload);
      await holder.lock(never(), () => undefined);
      const cancel = new AbortController();
      const started = Date.now();
      const waiting = locker.newLock(upload).lock(cancel.signal, () => undefined);
      setTimeout(() => cancel.abort(), 100);
      await assert.rejects(waiting);
      assert.ok(Date.now() - started < 2000);
      await holder.unlock();
    });

    it('refuses to unlock a lock that is not held', async () => {
      await assert.rejects(locker.newLock(id()).unlock());
    });
  });
}

export function pathLockContract(name: string, make: () => Promise<PathLock>): void {
  describe(`path lock contract: ${name}`, () => {
    let lock: PathLock;
    before(async () => {
      lock = await make();
    });

    it('runs the work of one key one at a time, in turn', async () => {
      const key = id();
      let inside = 0;
      let most = 0;
      const done: number[] = [];
      await Promise.all(
        Array.from({ length: 5 }, (_, i) =>
          lock(key, async () => {
            inside += 1;
            most = Math.max(most, inside);
            await sleep(20);
            inside -= 1;
            done.push(i);
          }),
        ),
      );
      assert.equal(most, 1);
      assert.equal(done.length, 5);
    });

    it('runs the work of different keys at the same time', async () => {
      let inside = 0;
      let most = 0;
      await Promise.all(
        [id(), id(), id()].map((key) =>
          lock(key, async () => {
            inside += 1;
            most = Math.max(most, inside);
            await sleep(50);
            inside -= 1;
          }),
        ),
      );
      assert.equal(most, 3);
    });

    it('passes the work\'s result and error through, and is free again after a failure', async () => {
      const key = id();
      assert.equal(await lock(key, () => Promise.resolve(42)), 42);
      await assert.rejects(lock(key, () => Promise.reject(new Error('boom'))), /boom/);
      assert.equal(await lock(key, () => Promise.resolve('again')), 'again');
    });
  });
}
