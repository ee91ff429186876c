#!/bin/bash
# The PostgreSQL 15 side of bench section 8 (promotion, issue #12; run as root; npm run bench
# runs it itself for section 8 when it can). A primary and streaming standbys on this machine,
# fsync on; every promotion gets a fresh standby (pg_basebackup -R -X stream from the primary).
# Per promotion the clock starts just before `pg_ctl promote -W` and stops when an INSERT on
# the promoted node commits: a small libpq client (compiled here) holds one connection to the
# standby, spawns pg_ctl, then retries the INSERT every POLL_US until it is accepted (while
# the node is in recovery it fails with "read-only transaction"; an open session can write as
# soon as recovery ends). Cases (RUNS promotions each):
#   idle     the standby streams from a running, idle primary;
#   loaded   the same while pgbench commits RATE one-row inserts/s on the primary (-R RATE,
#            CLIENTS clients), started WARM_S seconds before the promotion;
#   cascade  a second standby S2 streams from the standby S (cascading); after S's first
#            accepted INSERT, the time until that row is visible on S2 (S2 follows the new
#            timeline over its own connection: PostgreSQL's walsender ends the old timeline's
#            stream and S2 asks for the new one);
#   repoint  S and S2 both stream from the primary; the primary is stopped (a failover),
#            S is promoted, and after its first accepted INSERT S2 is re-pointed at S
#            (ALTER SYSTEM SET primary_conninfo + pg_reload_conf(), recovery_target_timeline
#            'latest', the default); the time until the row is visible on S2.
# Prints each promotion, then per case n, p50, p99 (nearest rank: with 20 runs, the highest),
# min and max in ms, and "samples <case>: ..." lines that bench/run.ts reads.
# Works under /tmp/pgpromote, ports 55452 (primary), 55453 (S), 55454 (S2).
# RUNS, CASES, RATE, CLIENTS, WARM_S and POLL_US can be set in the environment.
set -u
B=/usr/lib/postgresql/15/bin
D=/tmp/pgpromote
RUNS=${RUNS:-20}
CASES=${CASES:-idle loaded cascade repoint}
RATE=${RATE:-5000}
CLIENTS=${CLIENTS:-8}
WARM_S=${WARM_S:-1.5}
POLL_US=${POLL_US:-200}
PP=55452; SP=55453; S2P=55454
asp() { runuser -u postgres -- "$@"; }
q() { asp $B/psql -h 127.0.0.1 -p "$1" -U postgres -d postgres -Atq -c "$2"; }
conninfo() { echo "host=127.0.0.1 port=$1 user=postgres dbname=postgres"; }
die() { echo "pg-promote: $*" >&2; exit 1; }

cleanup() {
  [ -n "${LOAD_PID:-}" ] && kill "$LOAD_PID" 2>/dev/null
  for n in s2 s primary; do [ -f $D/$n/postmaster.pid ] && asp $B/pg_ctl -D $D/$n -m immediate -w stop >/dev/null 2>&1; done
  rm -rf $D
}
trap cleanup EXIT
cleanup
mkdir -p $D; chown postgres:postgres $D; cd $D

# The timing client: one connection to the standby (and one to S2), pg_ctl spawned in between.
cat > $D/promote-client.c <<'C'
#include <libpq-fe.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
extern char **environ;
static double now_ms(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e3 + t.tv_nsec / 1e6; }
static PGconn *connect_to(const char *info) {
  PGconn *c = PQconnectdb(info);
  if (PQstatus(c) != CONNECTION_OK) { fprintf(stderr, "connect %s: %s", info, PQerrorMessage(c)); exit(1); }
  return c;
}
static void run(PGconn *c, const char *sql, ExecStatusType want) {
  PGresult *r = PQexec(c, sql);
  if (PQresultStatus(r) != want) { fprintf(stderr, "%s: %s", sql, PQerrorMessage(c)); exit(1); }
  PQclear(r);
}
/* usage: promote-client PG_CTL DATADIR ID POLL_US STANDBY_CONNINFO [S2_CONNINFO [REPOINT_CONNINFO]]
   prints: total_ms pg_ctl_ms attempts [follow_ms_from_start follow_ms_from_commit polls] */
int main(int argc, char **argv) {
  if (argc < 6) { fprintf(stderr, "usage: promote-client PG_CTL DATADIR ID POLL_US CONNINFO [S2 [REPOINT]]\n"); return 2; }
  const char *pgctl = argv[1], *datadir = argv[2], *id = argv[3];
  useconds_t poll = (useconds_t)atoi(argv[4]);
  PGconn *s = connect_to(argv[5]);
  PGconn *s2 = argc > 6 ? connect_to(argv[6]) : NULL;
  PGresult *r = PQexec(s, "select pg_is_in_recovery()");
  if (PQresultStatus(r) != PGRES_TUPLES_OK || strcmp(PQgetvalue(r, 0, 0), "t") != 0) { fprintf(stderr, "the standby is not in recovery\n"); return 1; }
  PQclear(r);
  char insert[128], probe[128];
  snprintf(insert, sizeof insert, "insert into t values (%s, 'promoted')", id);
  snprintf(probe, sizeof probe, "select 1 from t where id = %s", id);
  char *args[] = { (char *)pgctl, "promote", "-W", "-s", "-D", (char *)datadir, NULL };
  pid_t pid;
  int status;
  double t0 = now_ms();
  if (posix_spawn(&pid, pgctl, NULL, NULL, args, environ) != 0) { perror("posix_spawn pg_ctl"); return 1; }
  if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) { fprintf(stderr, "pg_ctl promote failed\n"); return 1; }
  double t1 = now_ms();
  long attempts = 0;
  for (;;) {
    attempts++;
    r = PQexec(s, insert);
    ExecStatusType k = PQresultStatus(r);
    if (k == PGRES_COMMAND_OK) { PQclear(r); break; }
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (state == NULL || strcmp(state, "25006") != 0) { fprintf(stderr, "insert: %s", PQerrorMessage(s)); return 1; } /* only read_only_sql_transaction is expected */
    PQclear(r);
    usleep(poll);
  }
  double t2 = now_ms();
  if (s2 == NULL) { printf("%.3f %.3f %ld\n", t2 - t0, t1 - t0, attempts); return 0; }
  if (argc > 7) {
    char alter[512];
    snprintf(alter, sizeof alter, "alter system set primary_conninfo = '%s'", argv[7]);
    run(s2, alter, PGRES_COMMAND_OK);
    run(s2, "select pg_reload_conf()", PGRES_TUPLES_OK);
  }
  long polls = 0;
  for (;;) {
    polls++;
    r = PQexec(s2, probe);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) { fprintf(stderr, "probe: %s", PQerrorMessage(s2)); return 1; }
    int seen = PQntuples(r) > 0;
    PQclear(r);
    if (seen) break;
    if (now_ms() - t2 > 60000) { fprintf(stderr, "S2 did not show the row within 60 s\n"); return 1; }
    usleep(poll);
  }
  double t3 = now_ms();
  printf("%.3f %.3f %ld %.3f %.3f %ld\n", t2 - t0, t1 - t0, attempts, t3 - t0, t3 - t2, polls);
  return 0;
}
C
gcc -O2 -o $D/promote-client $D/promote-client.c -I"$($B/pg_config --includedir)" -L"$($B/pg_config --libdir)" -lpq || die "cannot compile the client (needs gcc and libpq-dev)"

asp $B/initdb -D $D/primary -U postgres --auth=trust >/dev/null || die "initdb failed"
cat >> $D/primary/postgresql.conf <<C
listen_addresses = '127.0.0.1'
port = $PP
wal_level = replica
max_wal_senders = 8
wal_keep_size = 2GB
max_wal_size = 4GB
checkpoint_timeout = 30min
hot_standby = on
fsync = on
C
echo "host replication all 127.0.0.1/32 trust" >> $D/primary/pg_hba.conf
asp $B/pg_ctl -D $D/primary -l $D/primary.log -w start >/dev/null || die "the primary did not start"
q $PP "create table t(id int primary key, v text)"
q $PP "create table load(v text)"
echo "insert into load values (repeat('x', 100));" > $D/load.sql
chown postgres:postgres $D/load.sql

# standby NAME PORT UPSTREAM_PORT: a fresh base backup of the primary in $D/NAME, streaming from UPSTREAM_PORT.
standby() {
  local name=$1 port=$2 up=$3
  [ -f $D/$name/postmaster.pid ] && asp $B/pg_ctl -D $D/$name -m immediate -w stop >/dev/null 2>&1
  rm -rf $D/$name
  asp $B/pg_basebackup -h 127.0.0.1 -p $PP -U postgres -D $D/$name -R -X stream -c fast || die "pg_basebackup of $name failed"
  sed -i "s/port=$PP /port=$up /; s/primary_conninfo = '/primary_conninfo = 'application_name=$name /" $D/$name/postgresql.auto.conf
  printf "port = %d\n" "$port" >> $D/$name/postgresql.conf
  asp $B/pg_ctl -D $D/$name -l $D/$name.log -w start >/dev/null || die "$name did not start"
}
# replayed PORT LSN: waits until the standby on PORT has replayed LSN.
replayed() {
  local i=0
  until [ "$(q "$1" "select pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '$2') >= 0")" = t ]; do
    sleep 0.02; i=$((i + 1)); [ $i -gt 3000 ] && die "port $1 did not replay $2 within 60 s"
  done
}
# streaming PORT NAME: waits until NAME streams from the server on PORT.
streaming() {
  local i=0
  until [ "$(q "$1" "select count(*) from pg_stat_replication where application_name = '$2' and state = 'streaming'")" = 1 ]; do
    sleep 0.02; i=$((i + 1)); [ $i -gt 3000 ] && die "$2 does not stream from port $1"
  done
}
stop() { asp $B/pg_ctl -D $D/$1 -m "$2" -w stop >/dev/null 2>&1; }

ID=0
declare -A SAMPLES
add() { SAMPLES[$1]="${SAMPLES[$1]:-} $2"; }

for c in $CASES; do
  case $c in idle | loaded | cascade | repoint) ;; *) die "unknown case '$c' (idle, loaded, cascade, repoint)" ;; esac
  for r in $(seq 1 "$RUNS"); do
    ID=$((ID + 1))
    [ "$c" = repoint ] && ! [ -f $D/primary/postmaster.pid ] && { asp $B/pg_ctl -D $D/primary -l $D/primary.log -w start >/dev/null || die "the primary did not restart"; }
    standby s $SP $PP
    s2=()
    if [ "$c" = cascade ]; then standby s2 $S2P $SP; s2=("$(conninfo $S2P)"); fi
    if [ "$c" = repoint ]; then standby s2 $S2P $PP; s2=("$(conninfo $S2P)" "$(conninfo $SP) application_name=s2"); fi
    streaming $PP s
    [ "$c" = cascade ] && streaming $SP s2
    [ "$c" = repoint ] && streaming $PP s2
    lsn=$(q $PP "select pg_current_wal_lsn()")
    replayed $SP "$lsn"
    [ "$c" != idle ] && [ "$c" != loaded ] && replayed $S2P "$lsn"
    note=""
    if [ "$c" = loaded ]; then
      # pgbench runs WARM_S + 2 s; the promotion comes WARM_S s in.
      asp $B/pgbench -h 127.0.0.1 -p $PP -U postgres -n -f $D/load.sql -c "$CLIENTS" -j 2 -R "$RATE" -T "$(awk -v w="$WARM_S" 'BEGIN { print int(w + 2.999) }')" postgres > $D/pgbench.out 2>&1 &
      LOAD_PID=$!
      sleep "$WARM_S"
      note=" lag at promotion: $(q $SP "select pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())") B received not replayed"
    fi
    if [ "$c" = repoint ]; then
      stop primary fast
      lsn=$(asp $B/pg_controldata -D $D/primary | awk -F': *' '/^Latest checkpoint location/ { print $2 }')
      replayed $SP "$lsn"; replayed $S2P "$lsn"
    fi
    out=$(asp $D/promote-client $B/pg_ctl $D/s $ID "$POLL_US" "$(conninfo $SP)" "${s2[@]}") || die "$c run $r: the promotion client failed"
    read -r total pgctl attempts follow after polls <<< "$out"
    if [ "$c" = loaded ]; then
      wait "$LOAD_PID"; LOAD_PID=""
      note="$note; pgbench $(awk '/^tps/ { printf "%d tps", $3 }' $D/pgbench.out)"
    fi
    add "$c" "$total"
    add "$c-pgctl" "$pgctl"
    line="$c run $r: promote → first accepted INSERT $total ms (pg_ctl promote -W itself $pgctl ms, $attempts attempts)"
    if [ -n "${follow:-}" ]; then
      add "$c-follow" "$follow"
      add "$c-follow-after-commit" "$after"
      line="$line; row visible on S2 $follow ms after the promote began, $after ms after its commit"
    fi
    echo "$line$note"
    stop s immediate
    [ "$c" = cascade ] || [ "$c" = repoint ] && stop s2 immediate
    follow=""; after=""
  done
done

echo
echo "PostgreSQL $($B/postgres --version | awk '{ print $3 }'), $RUNS promotion(s) per case, fsync on; ms (nearest-rank percentiles):"
for key in idle idle-pgctl loaded loaded-pgctl cascade cascade-pgctl cascade-follow cascade-follow-after-commit repoint repoint-pgctl repoint-follow repoint-follow-after-commit; do
  [ -z "${SAMPLES[$key]:-}" ] && continue
  python3 - "$key" ${SAMPLES[$key]} <<'PY'
import math, sys
key, xs = sys.argv[1], sorted(float(x) for x in sys.argv[2:])
rank = lambda p: xs[min(len(xs), max(1, math.ceil(p * len(xs)))) - 1]
print(f"  {key:28} n={len(xs):3} p50 {rank(0.5):8.2f}  p99 {rank(0.99):8.2f}  min {xs[0]:8.2f}  max {xs[-1]:8.2f}")
PY
done
for key in "${!SAMPLES[@]}"; do echo "samples $key:${SAMPLES[$key]}"; done | sort
