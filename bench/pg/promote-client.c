/*
 * The timing client of bench/pg/pg-promote.ts (PostgreSQL promotion to first commit),
 * compiled at run time with gcc against libpq. One connection to the standby (and one to S2),
 * pg_ctl promote -W spawned in between, then the INSERT retried every POLL_US until accepted
 * (while the node is in recovery it fails with read_only_sql_transaction, 25006).
 */
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
