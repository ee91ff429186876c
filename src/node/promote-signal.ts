/**
 * The promote signal file (PostgreSQL's `promote` file in the data directory, which
 * `pg_ctl promote` writes): a running standby opened on a directory (`dir`) looks for
 * `<dir>/promote`, promotes itself when it appears, then removes it. `walship promote`
 * writes it. A standby removes a leftover one when it opens, once it holds the directory's
 * lock (as PostgreSQL's postmaster does after taking its lock file), so a request made to a
 * node that was not running never promotes a later one by surprise, and an open refused with
 * `WAL_LOCKED` leaves the running node's request alone.
 */
export const PROMOTE_SIGNAL_FILE = 'promote';
