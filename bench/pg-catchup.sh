#!/bin/bash
# The PostgreSQL 15 side of bench section 5's catch-up comparison (run as root, not part of npm run bench):
# a streaming standby stopped while ~1 GiB of WAL (1 KB rows) accumulates, then restarted;
# prints receive and replay MB/s per run. Works under /tmp/pgcatch, ports 55432/55433.
# RUNS and TARGET (WAL bytes) can be set in the environment.
set -u
B=/usr/lib/postgresql/15/bin
D=/tmp/pgcatch
P=$D/primary; S=$D/standby
RUNS=${RUNS:-3}
TARGET=${TARGET:-1073741824}
asp() { runuser -u postgres -- "$@"; }
pq() { asp $B/psql -h 127.0.0.1 -p 55432 -U postgres -d postgres -Atq -c "$1"; }
sq() { asp $B/psql -h 127.0.0.1 -p 55433 -U postgres -d postgres -Atq -c "$1" 2>/dev/null; }
now() { date +%s.%N; }
# checkpoint primary, wait for standby to replay it, restartpoint on standby -> next restart doesn't re-replay old WAL
settle() {
  pq "checkpoint"; local l=$(pq "select pg_current_wal_lsn()")
  until [ "$(sq "select pg_wal_lsn_diff(pg_last_wal_replay_lsn(),'$l')>=0")" = t ]; do sleep 0.05; done
  sq "checkpoint"
}

mkdir -p $D; chown postgres:postgres $D; cd $D
asp $B/initdb -D $P -U postgres --auth=trust >/dev/null
cat >> $P/postgresql.conf <<C
listen_addresses = '127.0.0.1'
port = 55432
wal_level = replica
max_wal_senders = 4
wal_keep_size = 4GB
max_wal_size = 4GB
checkpoint_timeout = 30min
synchronous_commit = off
fsync = on
C
echo "host replication all 127.0.0.1/32 trust" >> $P/pg_hba.conf
asp $B/pg_ctl -D $P -l $D/primary.log -w start >/dev/null
asp $B/pg_basebackup -h 127.0.0.1 -p 55432 -U postgres -D $S -R -X stream -c fast
cat >> $S/postgresql.conf <<C
port = 55433
hot_standby = on
fsync = on
C
asp $B/pg_ctl -D $S -l $D/standby.log -w start >/dev/null
sleep 1
echo "pg_stat_replication: $(pq "select application_name,state,sync_state from pg_stat_replication")"
pq "create table t(id int, v text)"
settle
asp $B/pg_ctl -D $S -m fast -w stop >/dev/null

for r in $(seq 1 $RUNS); do
  start_lsn=$(pq "select pg_current_wal_lsn()")
  n=0
  while :; do
    pq "insert into t select g, repeat('x',1000) from generate_series(1,100000) g"
    n=$((n+100000))
    d=$(pq "select pg_wal_lsn_diff(pg_current_wal_lsn(),'$start_lsn')::bigint")
    [ "$d" -ge "$TARGET" ] && break
  done
  end_lsn=$(pq "select pg_current_wal_lsn()")
  bytes=$(pq "select pg_wal_lsn_diff('$end_lsn','$start_lsn')::bigint")
  # standby must already have everything up to start_lsn; wait for WAL flush on primary
  pq "select pg_switch_wal()" >/dev/null  # ensure all WAL flushed/sent; switch record lands after end_lsn
  sync
  t0=$(now)
  asp $B/pg_ctl -D $S -l $D/standby.log start >/dev/null
  trecv=""; trepl=""; tconn=""
  while :; do
    o=$(sq "select pg_wal_lsn_diff(pg_last_wal_receive_lsn(),'$end_lsn')>=0, pg_wal_lsn_diff(pg_last_wal_replay_lsn(),'$end_lsn')>=0")
    t=$(now)
    if [ -n "$o" ]; then
      [ -z "$tconn" ] && tconn=$t
      [ -z "$trecv" ] && [ "${o%%|*}" = t ] && trecv=$t
      [ -z "$trepl" ] && [ "${o##*|}" = t ] && trepl=$t
      [ -n "$trecv" ] && [ -n "$trepl" ] && break
    fi
    sleep 0.02
  done
  pm=$(head -1 $S/postmaster.pid)
  hz=$(getconf CLK_TCK); cpu=""; for c in $(pgrep -P $pm); do cpu+="[$(tr '\0' ' ' </proc/$c/cmdline | sed 's/^postgres: //;s/ *$//')]=$(awk -v hz=$hz '{printf "%.2fs",($14+$15)/hz}' /proc/$c/stat) "; done
  python3 - "$r" "$bytes" "$n" "$t0" "$tconn" "$trecv" "$trepl" "$start_lsn" "$end_lsn" <<'PY'
import sys
r,b,n,t0,tc,tr,tp,s,e=sys.argv[1:]
b=int(b);t0,tc,tr,tp=map(float,(t0,tc,tr,tp))
mb=b/1048576
print(f"run {r}: rows={n} WAL={b} B ({mb:.1f} MiB) {s}->{e}; first-connect {tc-t0:.2f}s; "
      f"receive {tr-t0:.2f}s = {mb/(tr-t0):.1f} MiB/s; replay {tp-t0:.2f}s = {mb/(tp-t0):.1f} MiB/s")
PY
  echo "  standby child CPU (utime+stime since start): $cpu"
  settle
  asp $B/pg_ctl -D $S -m fast -w stop >/dev/null
done
