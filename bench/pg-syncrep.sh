#!/bin/bash
# The PostgreSQL 15 side of bench section 6 (run as root, not part of npm run bench): a primary
# and two streaming standbys (s1, s2) on this machine, fsync on, and pgbench with one 100-byte
# insert per transaction at every synchronous_commit level, 1 and 16 clients, under
# 'FIRST 1 (s1)', then 'on' under 'ANY 1 (s1, s2)' and 'FIRST 2 (s1, s2)'. Prints tps per case
# (median of RUNS runs of SECONDS seconds). Works under /tmp/pgsync, ports 55442-55444.
set -u
B=/usr/lib/postgresql/15/bin
D=/tmp/pgsync
RUNS=${RUNS:-3}
SECS=${SECS:-5}
asp() { runuser -u postgres -- "$@"; }
pq() { asp $B/psql -h 127.0.0.1 -p 55442 -U postgres -d postgres -Atq -c "$1"; }

cleanup() {
  for n in s2 s1 primary; do [ -d $D/$n ] && asp $B/pg_ctl -D $D/$n -m immediate -w stop >/dev/null 2>&1; done
  rm -rf $D
}
trap cleanup EXIT
cleanup
mkdir -p $D; chown postgres:postgres $D; cd $D

asp $B/initdb -D $D/primary -U postgres --auth=trust >/dev/null
cat >> $D/primary/postgresql.conf <<C
listen_addresses = '127.0.0.1'
port = 55442
wal_level = replica
max_wal_senders = 4
max_wal_size = 4GB
checkpoint_timeout = 30min
fsync = on
synchronous_standby_names = ''
C
echo "host replication all 127.0.0.1/32 trust" >> $D/primary/pg_hba.conf
asp $B/pg_ctl -D $D/primary -l $D/primary.log -w start >/dev/null
for i in 1 2; do
  asp $B/pg_basebackup -h 127.0.0.1 -p 55442 -U postgres -D $D/s$i -R -X stream -c fast
  sed -i "s/primary_conninfo = '/primary_conninfo = 'application_name=s$i /" $D/s$i/postgresql.auto.conf
  printf "port = 5544%d\nhot_standby = on\nfsync = on\n" $((2 + i)) >> $D/s$i/postgresql.conf
  asp $B/pg_ctl -D $D/s$i -l $D/s$i.log -w start >/dev/null
done
pq "create table t(id bigint, v text)"
echo "insert into t values (1, repeat('x', 100));" > $D/insert.sql
chown postgres:postgres $D/insert.sql
sleep 1
echo "pg_test_fsync, one 8 KiB write + fdatasync: $(asp $B/pg_test_fsync -s 2 -f $D/fsync.tmp 2>/dev/null | awk '/fdatasync .*ops\/sec/ {print $2, $3, $4, $5; exit}')"

names() {
  pq "alter system set synchronous_standby_names = '$1'" && pq "select pg_reload_conf()" >/dev/null
  until [ "$(pq "select count(*) from pg_stat_replication where state = 'streaming'")" = 2 ]; do sleep 0.1; done
  sleep 0.5
  echo "synchronous_standby_names = '$1': $(pq "select string_agg(application_name || ' ' || sync_state, ', ' order by application_name) from pg_stat_replication")"
}
run() { # level clients -> median tps
  local tps=()
  for r in $(seq 1 $RUNS); do
    tps+=($(PGOPTIONS="-c synchronous_commit=$1" asp $B/pgbench -h 127.0.0.1 -p 55442 -U postgres -n -f $D/insert.sql -c $2 -j $2 -T $SECS postgres 2>/dev/null | awk '/^tps/ {printf "%d", $3}'))
    pq "checkpoint"
  done
  printf '%s\n' "${tps[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

names 'FIRST 1 (s1)'
for level in off local remote_write on remote_apply; do
  echo "FIRST 1 (s1) $level: 1 client $(run $level 1) tps, 16 clients $(run $level 16) tps"
done
for n in 'ANY 1 (s1, s2)' 'FIRST 2 (s1, s2)'; do
  names "$n"
  echo "$n on: 1 client $(run on 1) tps, 16 clients $(run on 16) tps"
done
