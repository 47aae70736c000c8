// A small tmpfs mounted for one test (needs root), so a StoreDir can run out of space or inodes for real:
// the kernel answers ENOSPC exactly as a full disk would. The filler that uses the space up lives in
// <dir>/.filler, beside whatever the test keeps in the mount.
//
// tmpfs accounts data in whole pages and counts every inode: files, directories, and also every extra hard
// link (a link() needs a free inode even though no new file is made).
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, open, readdir, rm, statfs, truncate, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const FILLER = '.filler';
const SPACE = 'space';

export interface TmpfsOptions {
  sizeBytes: number;
  inodes: number;
}

export interface Tmpfs {
  /** The mount point. */
  dir: string;
  /** Bytes a new file can still take (statfs: available blocks times block size). */
  freeBytes(): Promise<number>;
  /** Inodes still free. */
  freeInodes(): Promise<number>;
  /**
   * Writes a filler file until ENOSPC, then gives back bytesToLeave (rounded up to whole pages).
   * Returns the bytes then free.
   */
  fill(bytesToLeave?: number): Promise<number>;
  /** Creates empty filler files until no inode is left, then gives back inodesToLeave. Returns the inodes then free. */
  fillInodes(inodesToLeave?: number): Promise<number>;
  /** Deletes every filler file. */
  free(): Promise<void>;
  /** Unmounts (lazily if something still holds it) and removes the mount point. Safe to call twice. */
  unmount(): Promise<void>;
}

function isNoSpace(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'ENOSPC';
}

/** Writes buffer at the end of the file until the filesystem refuses; returns the bytes written. */
async function writeUntilFull(handle: FileHandle, position: number, buffer: Buffer): Promise<number> {
  let written = 0;
  for (;;) {
    try {
      const { bytesWritten } = await handle.write(buffer, 0, buffer.length, position + written);
      if (bytesWritten === 0) return written;
      written += bytesWritten;
    } catch (err) {
      if (isNoSpace(err)) return written;
      throw err;
    }
  }
}

export async function mountTmpfs({ sizeBytes, inodes }: TmpfsOptions): Promise<Tmpfs> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hfs-tmpfs-'));
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},nr_inodes=${inodes},mode=0700`, 'tmpfs', dir]);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`mounting a tmpfs needs root: ${(err as Error).message}`, { cause: err });
  }
  const fillerDir = path.join(dir, FILLER);
  await mkdir(fillerDir);
  let mounted = true;
  const stats = () => statfs(dir);

  const tmpfs: Tmpfs = {
    dir,
    freeBytes: async () => {
      const s = await stats();
      return s.bavail * s.bsize;
    },
    freeInodes: async () => (await stats()).ffree,

    async fill(bytesToLeave = 0) {
      const file = path.join(fillerDir, SPACE);
      const handle = await open(file, 'a');
      let size: number;
      try {
        const { size: start } = await handle.stat();
        size = start + (await writeUntilFull(handle, start, Buffer.alloc(256 * 1024, 0x5a)));
        // Whatever a short write left: page by page.
        size += await writeUntilFull(handle, size, Buffer.alloc(4096, 0x5a));
      } finally {
        await handle.close();
      }
      const { bsize } = await stats();
      const leave = Math.ceil(bytesToLeave / bsize) * bsize;
      if (leave > size) throw new Error(`cannot leave ${bytesToLeave} bytes: the filler has only ${size}`);
      if (leave > 0) await truncate(file, size - leave);
      return tmpfs.freeBytes();
    },

    async fillInodes(inodesToLeave = 0) {
      const made: string[] = [];
      for (let i = 0; ; i += 1) {
        const file = path.join(fillerDir, `inode-${i}`);
        try {
          await (await open(file, 'wx')).close();
          made.push(file);
        } catch (err) {
          if (isNoSpace(err)) break;
          throw err;
        }
        if (i > 10_000_000) throw new Error('the tmpfs never ran out of inodes');
      }
      if (inodesToLeave > made.length) throw new Error(`cannot leave ${inodesToLeave} inodes: only ${made.length} filler files`);
      for (const file of made.slice(made.length - inodesToLeave)) await rm(file);
      return tmpfs.freeInodes();
    },

    async free() {
      for (const name of await readdir(fillerDir)) await rm(path.join(fillerDir, name), { force: true });
    },

    async unmount() {
      if (!mounted) return;
      try {
        await run('umount', [dir]);
      } catch {
        // Something (a stream still closing) holds the mount: detach it now, the kernel frees it later.
        await run('umount', ['-l', dir]);
      }
      mounted = false;
      await rm(dir, { recursive: true, force: true });
    },
  };
  return tmpfs;
}
