import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { inspect } from 'node:util';
import { isWalshipError } from '../../src/errors.js';
import { CompiledAuth, compileAuth, type AuthMatch, type AuthOptions, type AuthRule } from '../../src/protocol/auth-rules.js';
import { ScramClient, parseScramVerifier } from '../../src/protocol/scram.js';

const PENCIL_VERIFIER =
  'SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=';

type Case = [user: string, address: string | undefined, expected: AuthMatch];

async function checkTable(rules: AuthRule[], cases: Case[]): Promise<void> {
  const auth = await compileAuth({ rules });
  for (const [user, address, expected] of cases) {
    assert.deepEqual(auth.match(user, address), expected, `${user} from ${String(address)}`);
  }
}

const NO_MATCH: AuthMatch = { method: 'reject', ruleIndex: -1 };
const scram = (ruleIndex: number): AuthMatch => ({ method: 'scram-sha-256', ruleIndex });
const trust = (ruleIndex: number): AuthMatch => ({ method: 'trust', ruleIndex });
const reject = (ruleIndex: number): AuthMatch => ({ method: 'reject', ruleIndex });

describe('CompiledAuth.match', () => {
  it('matches users by name or "all", case-sensitively, first match winning', async () => {
    await checkTable(
      [
        { user: 'blocked', address: 'all', method: 'reject' },
        { user: 'alice', address: 'all', method: 'trust' },
        { user: 'all', address: 'all', method: 'scram-sha-256' },
        { user: 'alice', address: 'all', method: 'reject' },
      ],
      [
        ['blocked', '10.0.0.1', reject(0)],
        ['alice', '10.0.0.1', trust(1)],
        ['Alice', '10.0.0.1', scram(2)],
        ['bob', '10.0.0.1', scram(2)],
        ['', undefined, scram(2)],
      ],
    );
  });

  it('rejects when no rule matches', async () => {
    await checkTable([{ user: 'alice', address: '127.0.0.1', method: 'trust' }], [
      ['bob', '127.0.0.1', NO_MATCH],
      ['alice', '127.0.0.2', NO_MATCH],
      ['alice', undefined, NO_MATCH],
    ]);
  });

  it('matches IPv4 CIDR blocks, single hosts, /0 and /32', async () => {
    await checkTable(
      [
        { user: 'a', address: '10.0.0.0/8', method: 'scram-sha-256' },
        { user: 'b', address: '192.168.1.5', method: 'scram-sha-256' },
        { user: 'c', address: '192.168.1.6/32', method: 'scram-sha-256' },
        { user: 'd', address: '0.0.0.0/0', method: 'scram-sha-256' },
        { user: 'e', address: '172.16.0.0/12', method: 'scram-sha-256' },
        { user: 'f', address: '10.0.0.0/31', method: 'trust' },
      ],
      [
        ['a', '10.0.0.0', scram(0)],
        ['a', '10.255.255.255', scram(0)],
        ['a', '11.0.0.0', NO_MATCH],
        ['a', '9.255.255.255', NO_MATCH],
        ['b', '192.168.1.5', scram(1)],
        ['b', '192.168.1.4', NO_MATCH],
        ['b', '192.168.1.6', NO_MATCH],
        ['c', '192.168.1.6', scram(2)],
        ['c', '192.168.1.7', NO_MATCH],
        ['d', '1.2.3.4', scram(3)],
        ['d', '255.255.255.255', scram(3)],
        ['d', '::1', NO_MATCH],
        ['d', undefined, NO_MATCH],
        ['e', '172.31.255.255', scram(4)],
        ['e', '172.32.0.0', NO_MATCH],
        ['e', '172.15.255.255', NO_MATCH],
        ['f', '10.0.0.1', trust(5)],
        ['f', '10.0.0.2', NO_MATCH],
      ],
    );
  });

  it('matches IPv6 CIDR blocks, single hosts, /0 and /128', async () => {
    await checkTable(
      [
        { user: 'a', address: '2001:db8::/32', method: 'scram-sha-256' },
        { user: 'b', address: '::1', method: 'trust' },
        { user: 'c', address: '2001:db8::7/128', method: 'scram-sha-256' },
        { user: 'd', address: '::/0', method: 'scram-sha-256' },
        { user: 'e', address: 'fe80::/10', method: 'trust' },
        { user: 'f', address: '2001:db8:0:0:1::/80', method: 'trust' },
      ],
      [
        ['a', '2001:db8::1', scram(0)],
        ['a', '2001:db8:ffff:ffff:ffff:ffff:ffff:ffff', scram(0)],
        ['a', '2001:DB8:1::5', scram(0)],
        ['a', '2001:db9::', NO_MATCH],
        ['a', '2001:db7:ffff::', NO_MATCH],
        ['b', '::1', trust(1)],
        ['b', '0:0:0:0:0:0:0:1', trust(1)],
        ['b', '::2', NO_MATCH],
        ['b', '127.0.0.1', NO_MATCH],
        ['c', '2001:db8::7', scram(2)],
        ['c', '2001:db8::8', NO_MATCH],
        ['d', '::', scram(3)],
        ['d', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', scram(3)],
        ['d', '10.0.0.1', NO_MATCH],
        ['e', 'fe80::1', trust(4)],
        ['e', 'febf:ffff::1', trust(4)],
        ['e', 'fec0::1', NO_MATCH],
        ['e', 'fe80::1%eth0', trust(4)],
        ['f', '2001:db8::1:0:0:9', trust(5)],
        ['f', '2001:db8::2:0:0:9', NO_MATCH],
      ],
    );
  });

  it('matches IPv4-mapped IPv6 peers against IPv4 rules, and IPv6 rules against IPv6 peers only', async () => {
    await checkTable(
      [
        { user: 'a', address: '127.0.0.0/8', method: 'trust' },
        { user: 'b', address: '::ffff:10.0.0.0/104', method: 'trust' },
        { user: 'c', address: '::1/128', method: 'trust' },
        { user: 'd', address: '::/0', method: 'trust' },
      ],
      [
        ['a', '127.0.0.1', trust(0)],
        ['a', '::ffff:127.0.0.1', trust(0)],
        ['a', '::ffff:7f00:1', trust(0)],
        ['a', '::FFFF:127.1.2.3', trust(0)],
        ['a', '::ffff:128.0.0.1', NO_MATCH],
        // Not mapped: IPv4-compatible and NAT64 forms are plain IPv6.
        ['a', '::127.0.0.1', NO_MATCH],
        ['a', '64:ff9b::127.0.0.1', NO_MATCH],
        ['b', '::ffff:10.1.2.3', trust(1)],
        ['b', '10.1.2.3', NO_MATCH],
        ['c', '::ffff:127.0.0.1', NO_MATCH],
        ['d', '::ffff:1.2.3.4', trust(3)],
        ['d', '1.2.3.4', NO_MATCH],
      ],
    );
  });

  it('masks host bits set in a rule address', async () => {
    await checkTable(
      [
        { user: 'a', address: '10.1.2.3/8', method: 'trust' },
        { user: 'b', address: '2001:db8::dead:beef/32', method: 'trust' },
        { user: 'c', address: '192.168.77.77/0', method: 'trust' },
      ],
      [
        ['a', '10.200.0.1', trust(0)],
        ['a', '11.1.2.3', NO_MATCH],
        ['b', '2001:db8:1::', trust(1)],
        ['c', '8.8.8.8', trust(2)],
      ],
    );
  });

  it('matches a peer without an IP address only with "all"', async () => {
    await checkTable(
      [
        { user: 'a', address: '0.0.0.0/0', method: 'trust' },
        { user: 'a', address: '::/0', method: 'trust' },
        { user: 'a', address: 'all', method: 'scram-sha-256' },
      ],
      [
        ['a', undefined, scram(2)],
        ['a', 'memory:standby-1', scram(2)],
        ['a', '', scram(2)],
        ['a', '10.0.0.1 ', scram(2)],
        ['a', '10.0.0.1', trust(0)],
        ['a', '::1', trust(1)],
      ],
    );
  });

  it('rejects everyone when auth is not configured or has no rules', async () => {
    for (const auth of [undefined, {}, { users: { alice: { verifier: PENCIL_VERIFIER } } }] as (AuthOptions | undefined)[]) {
      const compiled = await compileAuth(auth);
      for (const address of ['127.0.0.1', '::1', undefined]) {
        assert.deepEqual(compiled.match('alice', address), NO_MATCH);
      }
    }
  });

  it('refuses arguments of the wrong type', async () => {
    const auth = await compileAuth({ rules: [] });
    assert.throws(() => auth.match(42 as never, undefined), (err: unknown) => isWalshipError(err, 'INVALID_ARGUMENT'));
    assert.throws(() => auth.match('a', 42 as never), (err: unknown) => isWalshipError(err, 'INVALID_ARGUMENT'));
  });
});

describe('compileAuth validation', () => {
  const rule = (address: string, method = 'trust'): unknown => ({ rules: [{ user: 'all', address: '::1', method: 'trust' }, { user: 'all', address, method }] });
  const invalid: [string, unknown, RegExp][] = [
    ['a prefix over 32 for IPv4', rule('10.0.0.0/33'), /auth\.rules\.1\.address/],
    ['a prefix over 128 for IPv6', rule('::1/129'), /auth\.rules\.1\.address/],
    ['an empty prefix', rule('10.0.0.0/'), /auth\.rules\.1\.address/],
    ['a prefix with a leading zero', rule('10.0.0.0/08'), /auth\.rules\.1\.address/],
    ['a negative prefix', rule('10.0.0.0/-1'), /auth\.rules\.1\.address/],
    ['two prefixes', rule('10.0.0.0/8/8'), /auth\.rules\.1\.address/],
    ['a short IPv4 address', rule('10.0.0/8'), /auth\.rules\.1\.address/],
    ['a host name', rule('localhost'), /auth\.rules\.1\.address/],
    ['an IPv6 zone', rule('fe80::1%eth0'), /auth\.rules\.1\.address/],
    ['"all" with a prefix', rule('all/8'), /auth\.rules\.1\.address/],
    ['"ALL" in capitals', rule('ALL'), /auth\.rules\.1\.address/],
    ['an empty address', rule(''), /auth\.rules\.1\.address/],
    ['an unknown method', rule('all', 'md5'), /auth\.rules\.1\.method must be one of/],
    ['a missing method', { rules: [{ user: 'all', address: 'all' }] }, /auth\.rules\.0 must have required property 'method'/],
    ['an unknown rule key', { rules: [{ user: 'all', address: 'all', method: 'trust', database: 'replication' }] }, /auth\.rules\.0 has unknown option "database"/],
    ['an empty user', { rules: [{ user: '', address: 'all', method: 'trust' }] }, /auth\.rules\.0\.user/],
    ['rules that are not an array', { rules: {} }, /auth\.rules must be array/],
    ['an unknown top-level key', { user: {} }, /auth has unknown option "user"/],
    ['auth that is not an object', null, /auth must be object/],
    ['a user with both password and verifier', { users: { bob: { password: 'x', verifier: PENCIL_VERIFIER } } }, /auth\.users\."bob" must have exactly one/],
    ['a user with neither', { users: { bob: {} } }, /auth\.users\."bob" must have exactly one/],
    ['an empty password', { users: { bob: { password: '' } } }, /auth\.users\.bob\.password/],
    ['an unknown user key', { users: { bob: { password: 'x', salt: 'y' } } }, /auth\.users\.bob has unknown option "salt"/],
    ['an invalid verifier', { users: { bob: { verifier: 'md5abcdef' } } }, /auth\.users\."bob"\.verifier: invalid SCRAM verifier/],
    ['a verifier with too few iterations', { users: { bob: { verifier: PENCIL_VERIFIER.replace('$4096:', '$1000:') } } }, /auth\.users\."bob"\.verifier.*iteration count/],
    ['a user named "all"', { users: { all: { password: 'x' } } }, /auth\.users\."all".*reserved/],
  ];
  for (const [what, auth, message] of invalid) {
    it(`refuses ${what} with INVALID_OPTIONS`, async () => {
      await assert.rejects(compileAuth(auth as AuthOptions), (err: unknown) => {
        assert.ok(isWalshipError(err, 'INVALID_OPTIONS'), inspect(err));
        assert.match((err as Error).message, message);
        assert.doesNotMatch((err as Error).message, /WG5d8oPm|wfPLwcE6|md5abcdef/);
        return true;
      });
    });
  }

  it('refuses a short mock secret', async () => {
    await assert.rejects(compileAuth({}, { mockSecret: Buffer.alloc(4) }), (err: unknown) => isWalshipError(err, 'INVALID_OPTIONS'));
  });

  it('cannot be constructed except through compileAuth', () => {
    assert.throws(() => new CompiledAuth(Symbol('x') as never, [], new Map(), undefined), (err: unknown) => isWalshipError(err, 'INVALID_ARGUMENT'));
  });

  it('does not modify the configuration it is given', async () => {
    const auth: AuthOptions = {
      users: { alice: { password: 'pw' }, bob: { verifier: PENCIL_VERIFIER } },
      rules: [{ user: 'all', address: '10.1.2.3/8', method: 'scram-sha-256' }],
    };
    const before = structuredClone(auth);
    await compileAuth(auth);
    assert.deepEqual(auth, before);
  });
});

describe('users and verifiers', () => {
  it('turns plain passwords into verifiers and keeps given verifiers as they are', async () => {
    const auth = await compileAuth({ users: { alice: { password: 'pencil' }, bob: { verifier: PENCIL_VERIFIER } } });
    const alice = auth.verifier('alice');
    assert.ok(alice !== null);
    assert.equal(alice.iterations, 4096);
    assert.notDeepEqual(alice.salt, parseScramVerifier(PENCIL_VERIFIER).salt);
    assert.deepEqual(auth.verifier('bob'), parseScramVerifier(PENCIL_VERIFIER));
    assert.equal(auth.verifier('carol'), null);
    assert.equal(auth.verifier('toString'), null);
    assert.equal(auth.verifier('__proto__'), null);
  });

  it('lets the right password in through scramServer, for a password or a verifier', async () => {
    const auth = await compileAuth({ users: { alice: { password: 'secret' }, bob: { verifier: PENCIL_VERIFIER } } });
    for (const [user, password] of [['alice', 'secret'], ['bob', 'pencil']] as const) {
      const client = new ScramClient(password);
      const server = auth.scramServer(user);
      const result = server.serverFinal(await client.clientFinal(server.serverFirst(client.clientFirst())));
      assert.equal(result.ok, true, user);
      client.verifyServerFinal(result.message);
    }
  });

  it('fails a wrong password and an unknown user the same way', async () => {
    const auth = await compileAuth({ users: { alice: { password: 'secret' } } }, { mockSecret: Buffer.alloc(32, 1) });
    const attempt = async (user: string): Promise<{ serverFirst: string; result: unknown }> => {
      const client = new ScramClient('guess');
      const server = auth.scramServer(user);
      const serverFirst = server.serverFirst(client.clientFirst());
      return { serverFirst, result: server.serverFinal(await client.clientFinal(serverFirst)) };
    };
    const known = await attempt('alice');
    const unknown = await attempt('mallory');
    assert.deepEqual(unknown.result, known.result);
    assert.deepEqual(known.result, { ok: false, message: 'e=invalid-proof' });
    const shape = (m: string): string => m.replace(/r=[^,]+/, 'r=*').replace(/s=[A-Za-z0-9+/]{22}==/, 's=*');
    assert.equal(shape(unknown.serverFirst), shape(known.serverFirst));
  });

  it('gives unknown users a salt that is stable for the same secret, and the usual iteration count', async () => {
    const users = { a: { verifier: PENCIL_VERIFIER.replace('$4096:', '$8192:') }, b: { verifier: PENCIL_VERIFIER.replace('$4096:', '$8192:') }, c: { verifier: PENCIL_VERIFIER } };
    const mockSecret = Buffer.alloc(32, 3);
    const first = await compileAuth({ users }, { mockSecret });
    const second = await compileAuth({ users }, { mockSecret });
    const challenge = (auth: CompiledAuth, user: string): string => auth.scramServer(user).serverFirst('n,,n=,r=abc').replace(/^r=[^,]+,/, '');
    assert.equal(challenge(first, 'ghost'), challenge(second, 'ghost'));
    assert.notEqual(challenge(first, 'ghost'), challenge(first, 'spectre'));
    assert.match(challenge(first, 'ghost'), /,i=8192$/);
    assert.match(challenge(await compileAuth(undefined), 'ghost'), /,i=4096$/);
  });
});

describe('redaction', () => {
  it('never shows passwords or verifiers in JSON or inspect output', async () => {
    const auth = await compileAuth({
      users: { alice: { password: 'hunter2-secret' }, bob: { verifier: PENCIL_VERIFIER } },
      rules: [{ user: 'alice', address: '10.0.0.0/8', method: 'scram-sha-256' }],
    });
    const alice = auth.verifier('alice');
    assert.ok(alice !== null);
    const secrets = ['hunter2-secret', 'WG5d8oPm', 'wfPLwcE6', alice.storedKey.toString('base64'), alice.serverKey.toString('base64')];
    const shown = [
      JSON.stringify(auth),
      inspect(auth),
      inspect(auth, { showHidden: true, depth: Infinity }),
      inspect({ status: { auth } }, { depth: Infinity }),
      JSON.stringify({ auth }),
      String(auth),
    ];
    for (const text of shown) for (const secret of secrets) assert.ok(!text.includes(secret), `leaked in ${text}`);
    assert.deepEqual(JSON.parse(JSON.stringify(auth)), {
      users: ['alice', 'bob'],
      rules: [{ user: 'alice', address: '10.0.0.0/8', method: 'scram-sha-256' }],
    });
    assert.match(inspect(auth), /CompiledAuth .*alice/s);
  });
});

describe('salts of plain-password users', () => {
  it('are stable across recompiles and derived like an unknown user’s mock salt', async () => {
    const { compileAuth: compile } = await import('../../src/protocol/auth-rules.js');
    const secret = Buffer.alloc(32, 9);
    const a = await compile({ users: { repl: { password: 'pw-1234567' } } }, { mockSecret: secret });
    const b = await compile({ users: { repl: { password: 'pw-1234567' } } }, { mockSecret: secret });
    assert.deepEqual(a.verifier('repl')?.salt, b.verifier('repl')?.salt);
    const first = a.scramServer('repl', { nonce: 'server' }).serverFirst('n,,n=,r=client');
    const mock = a.scramServer('nobody', { nonce: 'server' }).serverFirst('n,,n=,r=client');
    // Same shape for a configured and an unknown user: only the per-user salt differs.
    assert.equal(first.replace(/s=[^,]+/, 's=X'), mock.replace(/s=[^,]+/, 's=X'));
  });
});
