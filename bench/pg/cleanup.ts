/**
 * What must be undone however the run ends (normally, on an error, on Ctrl-C or SIGTERM):
 * PostgreSQL servers (daemons that outlive us unless stopped), child processes, temp dirs.
 * Each action is synchronous so that it also runs from a signal handler right before exit.
 */

const actions: (() => void)[] = [];

/** Registers `action`; the returned function unregisters it (once the thing is gone already). */
export function onCleanup(action: () => void): () => void {
  actions.push(action);
  return () => {
    const at = actions.indexOf(action);
    if (at >= 0) actions.splice(at, 1);
  };
}

/** Runs every registered action, newest first (servers before the directory they live in); each failure is printed, none stops the rest. */
export function cleanupNow(): void {
  while (actions.length > 0) {
    const action = actions.pop() as () => void;
    try {
      action();
    } catch (err) {
      console.error(`cleanup: ${(err as Error).message}`);
    }
  }
}
