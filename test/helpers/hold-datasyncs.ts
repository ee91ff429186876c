import type { Storage } from '../../src/index.js';

/** A hold on `storage`'s fdatasyncs, from {@link holdDatasyncs}. */
export interface DatasyncHold {
  /** fdatasyncs waiting now. */
  readonly waiting: number;
  /** Lets the waiting fdatasyncs finish, or fail with `error`; later ones are held again. */
  release(error?: Error): void;
  /** Lets the waiting ones finish and holds no more. */
  stop(): void;
  /** Holds from now on again (after {@link stop}, or when made with `holding: false`). */
  hold(): void;
}

/**
 * Holds every fdatasync of a file opened from `storage` from now on (not of `.tmp` files,
 * i.e. segments being created) until released, so a test can look at a log whose writes
 * are not yet durable. With `holding: false` nothing is held until {@link DatasyncHold.hold}
 * (a node opened on `storage` first, held later: its files are open by then).
 */
export function holdDatasyncs(storage: Storage, options: { holding?: boolean } = {}): DatasyncHold {
  let held: { go: () => void; fail: (error: Error) => void }[] = [];
  let holding = options.holding ?? true;
  const open = storage.open.bind(storage);
  storage.open = async (name, options) => {
    const file = await open(name, options);
    if (name.endsWith('.tmp')) return file;
    const datasync = file.datasync.bind(file);
    file.datasync = async () => {
      if (holding) await new Promise<void>((go, fail) => held.push({ go, fail }));
      await datasync();
    };
    return file;
  };
  const release = (error?: Error): void => {
    const now = held;
    held = [];
    for (const h of now) if (error === undefined) h.go(); else h.fail(error);
  };
  return {
    get waiting() {
      return held.length;
    },
    release,
    stop() {
      holding = false;
      release();
    },
    hold() {
      holding = true;
    },
  };
}
