import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

// The key-value service as a user runs it: a primary and a standby, each its own process
// (main.ts), real directories, replication over TCP, and the HTTP API driven with fetch.

const MAIN = fileURLToPath(new URL('./main.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');
const PASSWORD = 'kv-example-password';
/** A guard against a hang, never a timing target. */
const HANG_MS = 60_000;

interface Started {
  readonly child: ChildProcess;
  readonly url: string;
  readonly replicationAddress: string | null;
}

const children: ChildProcess[] = [];
let dir: string;
let primary: Started;
let standby: Started;

/** Starts `main.ts` with `args` and waits for its JSON line. */
async function start(args: string[]): Promise<Started> {
  const child = spawn(process.execPath, ['--conditions=walship-source', '--import', TSX, MAIN, ...args], {
    env: { ...process.env, KV_REPL_PASSWORD: PASSWORD },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const first = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${args[0]} did not start within ${HANG_MS} ms`)), HANG_MS);
    lines.once('line', (line) => {
      clearTimeout(timer);
      resolve(line);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${args[0]} exited with ${code} before it started`));
    });
  });
  const ready = JSON.parse(first) as { url: string; replicationAddress: string | null };
  return { child, url: ready.url, replicationAddress: ready.replicationAddress };
}

/** Stops a child with SIGTERM (a clean close) and waits for it; SIGKILL if it hangs. */
async function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), HANG_MS);
  try {
    return await exited;
  } finally {
    clearTimeout(timer);
  }
}

async function json(response: Response): Promise<Record<string, unknown>> {
  assert.match(response.headers.get('content-type') ?? '', /^application\/json/, 'a JSON answer');
  return (await response.json()) as Record<string, unknown>;
}

async function put(key: string, value: string, level?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const query = level === undefined ? '' : `?level=${level}`;
  const response = await fetch(`${primary.url}/kv/${encodeURIComponent(key)}${query}`, { method: 'PUT', body: value });
  return { status: response.status, body: await json(response) };
}

async function get(node: Started, key: string, query = ''): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${node.url}/kv/${encodeURIComponent(key)}${query}`);
  return { status: response.status, body: await json(response) };
}

/** Polls `condition` until it holds (a hang guard, not a timing target). */
async function eventually(condition: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + HANG_MS;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${HANG_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'walship-kv-'));
  primary = await start(['primary', '--dir', join(dir, 'p'), '--sync-standbys', 's1']);
  assert.ok(primary.replicationAddress !== null, 'the primary listens for standbys');
  standby = await start(['standby', '--dir', join(dir, 's1'), '--primary', primary.replicationAddress, '--name', 's1']);
  // Bootstrapped from a base backup and streaming: the standby serves reads.
  await eventually(async () => (await json(await fetch(`${standby.url}/status`)))['readable'] === true, 'the standby to become readable');
});

after(async () => {
  // The standby first: a primary waits for its standbys to confirm its shutdown record.
  for (const child of children.reverse()) await stop(child);
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('examples/kv-store', () => {
  it('read-your-writes: a standby read with the write’s LSN sees the write', async () => {
    const written = await put('greeting', 'hello', 'local');
    assert.equal(written.status, 200, JSON.stringify(written.body));
    assert.match(String(written.body['lsn']), /^[0-9A-F]+\/[0-9A-F]+$/, 'the commit position, as PostgreSQL writes LSNs');
    const read = await get(standby, 'greeting', `?minLsn=${String(written.body['lsn'])}&timeoutMs=${HANG_MS}`);
    assert.deepEqual([read.status, read.body['value']], [200, 'hello']);
  });

  it('a write at remote_apply is visible on the synchronous standby as soon as it is acknowledged', async () => {
    const written = await put('colour', 'blue', 'remote_apply');
    assert.equal(written.status, 200, JSON.stringify(written.body));
    const read = await get(standby, 'colour');
    assert.deepEqual([read.status, read.body['value']], [200, 'blue'], 'no minLsn needed: s1 applied it before the primary answered');
  });

  it('accepts every commit level, refuses others, and deletes', async () => {
    for (const level of ['off', 'local', 'remote_write', 'on', 'remote_apply']) {
      const written = await put(`level-${level}`, level, level);
      assert.equal(written.status, 200, `${level}: ${JSON.stringify(written.body)}`);
      assert.equal(written.body['level'], level);
    }
    const bad = await put('x', 'y', 'eventually');
    assert.deepEqual([bad.status, bad.body['error']], [400, 'INVALID_ARGUMENT']);
    const gone = await fetch(`${primary.url}/kv/level-on?level=remote_apply`, { method: 'DELETE' });
    assert.equal(gone.status, 200);
    const read = await get(standby, 'level-on', `?minLsn=${String((await json(gone))['lsn'])}&timeoutMs=${HANG_MS}`);
    assert.equal(read.status, 404, 'deleted on the standby too');
  });

  it('refuses writes on the standby, bad LSNs, oversized values; a read waiting for WAL that never comes times out', async () => {
    const refused = await fetch(`${standby.url}/kv/k`, { method: 'PUT', body: 'v' });
    assert.deepEqual([refused.status, (await json(refused))['error']], [409, 'READ_ONLY']);
    const badLsn = await get(standby, 'greeting', '?minLsn=not-an-lsn');
    assert.deepEqual([badLsn.status, badLsn.body['error']], [400, 'INVALID_LSN']);
    const late = await get(standby, 'greeting', '?minLsn=FF/0&timeoutMs=50');
    assert.deepEqual([late.status, late.body['error']], [504, 'TIMEOUT']);
    const big = await fetch(`${primary.url}/kv/big`, { method: 'PUT', body: 'x'.repeat(64 * 1024 + 1) });
    assert.equal(big.status, 413);
  });

  it('/status says what each node is and how far it got', async () => {
    const p = await json(await fetch(`${primary.url}/status`));
    assert.equal(p['role'], 'primary');
    const standbys = p['standbys'] as { name: string; state: string; syncState: string }[];
    assert.deepEqual(
      standbys.map((s) => [s.name, s.state, s.syncState]),
      [['s1', 'streaming', 'sync']],
    );
    const s = await json(await fetch(`${standby.url}/status`));
    assert.equal(s['role'], 'standby');
    assert.equal(s['state'], 'streaming');
    assert.equal(s['keys'], p['keys'], 'the same keys once caught up (every write above waited for s1 or was read there)');
  });

  it('/metrics serves Prometheus text with the commits of each level and the standby’s state', async () => {
    const before = await (await fetch(`${primary.url}/metrics`)).text();
    const count = (text: string, level: string): number => Number(new RegExp(`^walship_commits_total\\{level="${level}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
    const n = 3;
    for (let i = 0; i < n; i++) assert.equal((await put(`m${i}`, 'v', 'on')).status, 200);
    const response = await fetch(`${primary.url}/metrics`);
    assert.equal(response.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
    const text = await response.text();
    assert.equal(count(text, 'on') - count(before, 'on'), n, 'three more commits at on');
    assert.match(text, /^# TYPE walship_commit_duration_seconds histogram$/m);
    assert.match(text, /^walship_replication_standby_info\{application_name="s1",client_address="127\.0\.0\.1",state="streaming",sync_state="sync"\} 1$/m);
    assert.match(text, /^# TYPE kv_store_keys gauge$/m, "the application's own gauge");
    const standbyText = await (await fetch(`${standby.url}/metrics`)).text();
    assert.match(standbyText, /^walship_standby_state\{state="streaming"\} 1$/m);
    assert.match(standbyText, /^walship_lsn_bytes\{position="replayed"\} \d+$/m);
  });

  it('both nodes stop cleanly on SIGTERM', async () => {
    assert.equal(await stop(standby.child), 0, 'the standby exits 0');
    assert.equal(await stop(primary.child), 0, 'the primary exits 0');
  });
});
