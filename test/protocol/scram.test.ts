import assert from 'node:assert/strict';
import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';
import { describe, it } from 'node:test';
import { inspect } from 'node:util';
import fc from 'fast-check';
import { isWalshipError, type ErrorCode } from '../../src/errors.js';
import {
  SCRAM_MAX_ITERATIONS,
  SCRAM_MAX_MESSAGE_BYTES,
  SCRAM_MIN_ITERATIONS,
  ScramClient,
  ScramServer,
  parseScramVerifier,
  scramVerifier,
  type ParsedVerifier,
} from '../../src/protocol/scram.js';

// RFC 7677, section 3.
const RFC = {
  user: 'user',
  password: 'pencil',
  clientNonce: 'rOprNGfwEbeRWgbNEkqO',
  serverNonce: '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0',
  salt: Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64'),
  clientFirst: 'n,,n=user,r=rOprNGfwEbeRWgbNEkqO',
  serverFirst: 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
  clientFinal: 'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
  serverFinal: 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
};

/** What PostgreSQL stores for password "pencil" with the RFC's salt (checked against Python's hashlib too). */
const PENCIL_VERIFIER =
  'SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=';

/** RFC 5802's formulas, written out independently of the code under test. */
function rfcKeys(password: Uint8Array, salt: Buffer, iterations: number): { salted: Buffer; storedKey: Buffer; serverKey: Buffer } {
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  return {
    salted,
    storedKey: createHash('sha256').update(clientKey).digest(),
    serverKey: createHmac('sha256', salted).update('Server Key').digest(),
  };
}

function rfcVerifier(password: Uint8Array, salt: Buffer, iterations: number): string {
  const { storedKey, serverKey } = rfcKeys(password, salt, iterations);
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

/** An independent client-final-message, for exchanges the ScramClient never makes (e.g. a "y" header). */
function rfcClientFinal(password: string, clientFirstBare: string, serverFirst: string, gs2Header: string): string {
  const fields = Object.fromEntries(serverFirst.split(',').map((part) => [part[0], part.slice(2)]));
  const { salted } = rfcKeys(Buffer.from(password), Buffer.from(fields['s'] ?? '', 'base64'), Number(fields['i']));
  const withoutProof = `c=${Buffer.from(gs2Header).toString('base64')},r=${fields['r']}`;
  const authMessage = `${clientFirstBare},${serverFirst},${withoutProof}`;
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const signature = createHmac('sha256', createHash('sha256').update(clientKey).digest()).update(authMessage).digest();
  const proof = Buffer.from(clientKey.map((byte, i) => byte ^ (signature[i] ?? 0)));
  return `${withoutProof},p=${proof.toString('base64')}`;
}

function assertCode(code: ErrorCode, pattern?: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert.ok(isWalshipError(err, code), `expected ${code}, got ${inspect(err)}`);
    if (pattern !== undefined) assert.match((err as Error).message, pattern);
    return true;
  };
}

async function exchange(
  clientPassword: string,
  verifier: ParsedVerifier | null,
  serverOptions: ConstructorParameters<typeof ScramServer>[1] = {},
): Promise<{ client: ScramClient; serverFirst: string; clientFinal: string; result: ReturnType<ScramServer['serverFinal']> }> {
  const client = new ScramClient(clientPassword);
  const server = new ScramServer(verifier, serverOptions);
  const serverFirst = server.serverFirst(client.clientFirst());
  const clientFinal = await client.clientFinal(serverFirst);
  return { client, serverFirst, clientFinal, result: server.serverFinal(clientFinal) };
}

describe('SCRAM-SHA-256 test vector (RFC 7677)', () => {
  it('client and server produce exactly the RFC messages', async () => {
    const verifier = parseScramVerifier(await scramVerifier(RFC.password, { salt: RFC.salt }));
    const client = new ScramClient(RFC.password, { user: RFC.user, nonce: RFC.clientNonce });
    const server = new ScramServer(verifier, { user: RFC.user, nonce: RFC.serverNonce });

    assert.equal(client.clientFirst(), RFC.clientFirst);
    assert.equal(server.serverFirst(RFC.clientFirst), RFC.serverFirst);
    assert.equal(await client.clientFinal(RFC.serverFirst), RFC.clientFinal);
    assert.deepEqual(server.serverFinal(RFC.clientFinal), { ok: true, message: RFC.serverFinal });
    client.verifyServerFinal(RFC.serverFinal);
  });

  it('accepts messages as bytes', async () => {
    const client = new ScramClient(RFC.password, { user: RFC.user, nonce: RFC.clientNonce });
    const server = new ScramServer(parseScramVerifier(PENCIL_VERIFIER), { nonce: RFC.serverNonce });
    client.clientFirst();
    assert.equal(server.serverFirst(Buffer.from(RFC.clientFirst)), RFC.serverFirst);
    assert.equal(await client.clientFinal(new TextEncoder().encode(RFC.serverFirst)), RFC.clientFinal);
    assert.equal(server.serverFinal(Buffer.from(RFC.clientFinal)).ok, true);
    client.verifyServerFinal(Buffer.from(RFC.serverFinal));
  });
});

describe('scramVerifier and parseScramVerifier', () => {
  it('produce what PostgreSQL stores, by the RFC formulas', async () => {
    assert.equal(await scramVerifier('pencil', { salt: RFC.salt }), PENCIL_VERIFIER);
    assert.equal(PENCIL_VERIFIER, rfcVerifier(Buffer.from('pencil'), RFC.salt, 4096));
    const salt = Buffer.from('0123456789abcdef0123');
    assert.equal(await scramVerifier('correct horse', { salt, iterations: 5000 }), rfcVerifier(Buffer.from('correct horse'), salt, 5000));
  });

  it('draws a fresh 16-byte salt and uses 4096 iterations by default', async () => {
    const a = parseScramVerifier(await scramVerifier('pencil'));
    const b = parseScramVerifier(await scramVerifier('pencil'));
    assert.equal(a.iterations, 4096);
    assert.equal(a.salt.length, 16);
    assert.notDeepEqual(a.salt, b.salt);
    const expected = rfcKeys(Buffer.from('pencil'), a.salt, 4096);
    assert.deepEqual(a.storedKey, expected.storedKey);
    assert.deepEqual(a.serverKey, expected.serverKey);
  });

  it('parses the fields of a PostgreSQL verifier', () => {
    const parsed = parseScramVerifier(PENCIL_VERIFIER);
    assert.equal(parsed.iterations, 4096);
    assert.deepEqual(parsed.salt, RFC.salt);
    assert.equal(parsed.storedKey.toString('base64'), 'WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=');
    assert.equal(parsed.serverKey.toString('base64'), 'wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=');
  });

  it('redact the keys when a parsed verifier is logged or serialised', () => {
    const parsed = parseScramVerifier(PENCIL_VERIFIER);
    for (const shown of [inspect(parsed), JSON.stringify(parsed), inspect({ nested: parsed }, { depth: 5 })]) {
      assert.match(shown, /4096/);
      assert.doesNotMatch(shown, /WG5d8oPm|wfPLwcE6/);
    }
  });

  const stored = 'WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=';
  const server = 'wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=';
  const salt = 'W22ZaJ0SNY7soEsUEjb6gQ==';
  const invalid: [string, unknown, RegExp][] = [
    ['not a string', 42, /not a string/],
    ['an MD5 hash', 'md5c4ca4238a0b923820dcc509a6f75849b', /does not start with/],
    ['a lower-case scheme', `scram-sha-256$4096:${salt}$${stored}:${server}`, /does not start with/],
    ['a missing ServerKey', `SCRAM-SHA-256$4096:${salt}$${stored}`, /fields/],
    ['an extra field', `SCRAM-SHA-256$4096:${salt}$${stored}:${server}:x`, /fields/],
    ['too few iterations', `SCRAM-SHA-256$1000:${salt}$${stored}:${server}`, /iteration count/],
    ['too many iterations', `SCRAM-SHA-256$${SCRAM_MAX_ITERATIONS + 1}:${salt}$${stored}:${server}`, /iteration count/],
    ['a non-numeric iteration count', `SCRAM-SHA-256$4k:${salt}$${stored}:${server}`, /iteration count/],
    ['an empty salt', `SCRAM-SHA-256$4096:$${stored}:${server}`, /salt/],
    ['a salt that is not base64', `SCRAM-SHA-256$4096:W22Z*J0SNY7soEsUEjb6gQ==$${stored}:${server}`, /salt/],
    ['a short StoredKey', `SCRAM-SHA-256$4096:${salt}$${salt}:${server}`, /StoredKey/],
    ['non-canonical base64', `SCRAM-SHA-256$4096:${salt}$${stored.slice(0, -2)}Z=:${server}`, /StoredKey/],
    ['a ServerKey without padding', `SCRAM-SHA-256$4096:${salt}$${stored}:${server.slice(0, -1)}`, /ServerKey/],
  ];
  for (const [what, text, reason] of invalid) {
    it(`refuses ${what} with INVALID_OPTIONS, without echoing it`, () => {
      assert.throws(
        () => parseScramVerifier(text as string),
        (err: unknown) => {
          assertCode('INVALID_OPTIONS', reason)(err);
          assert.doesNotMatch((err as Error).message, /WG5d8oPm|wfPLwcE6|W22Z/);
          return true;
        },
      );
    });
  }

  it('refuses bad options', async () => {
    for (const options of [
      { iterations: 4095 },
      { iterations: SCRAM_MAX_ITERATIONS + 1 },
      { iterations: 4096.5 },
      { salt: new Uint8Array(0) },
      { salt: 'W22ZaJ0SNY7soEsUEjb6gQ==' },
      { rounds: 4096 },
    ]) {
      await assert.rejects(scramVerifier('pencil', options as never), assertCode('INVALID_OPTIONS'), JSON.stringify(options));
    }
  });

  it('refuses empty and ill-formed passwords', async () => {
    await assert.rejects(scramVerifier(''), assertCode('INVALID_ARGUMENT', /empty/));
    await assert.rejects(scramVerifier('ab\ud800cd'), assertCode('INVALID_ARGUMENT', /lone surrogate/));
    await assert.rejects(scramVerifier(42 as never), assertCode('INVALID_ARGUMENT'));
  });
});

describe('SCRAM passwords go through SASLprep, as in PostgreSQL', () => {
  it('hashes the prepared form, so equivalent passwords give the same verifier', async () => {
    const salt = RFC.salt;
    assert.equal(await scramVerifier('I\u00adX', { salt }), await scramVerifier('IX', { salt }));
    assert.equal(await scramVerifier('\u2168', { salt }), rfcVerifier(Buffer.from('IX'), salt, 4096));
    assert.equal(await scramVerifier(new TextEncoder().encode('\u2168'), { salt }), rfcVerifier(Buffer.from('IX'), salt, 4096));
  });

  it('hashes the raw bytes of passwords SASLprep refuses, and of passwords that are not UTF-8', async () => {
    const salt = RFC.salt;
    assert.equal(await scramVerifier('\u0627\u0031', { salt }), rfcVerifier(Buffer.from('\u0627\u0031'), salt, 4096));
    const latin1 = Buffer.from([0x70, 0xe9, 0x6e, 0x63, 0x69, 0x6c]); // "pécil" in Latin-1: not UTF-8
    assert.equal(await scramVerifier(latin1, { salt }), rfcVerifier(latin1, salt, 4096));
  });

  it('lets a client whose password differs only in normalisation log in', async () => {
    const verifier = parseScramVerifier(await scramVerifier('\ufb01le'));
    const { client, result } = await exchange('file', verifier);
    assert.equal(result.ok, true);
    client.verifyServerFinal(result.message);
  });
});

describe('SCRAM exchange', () => {
  it('authenticates both sides with the right password', async () => {
    const verifier = parseScramVerifier(await scramVerifier('s3cret pässword'));
    const { client, serverFirst, clientFinal, result } = await exchange('s3cret pässword', verifier, { user: 'alice' });
    assert.match(serverFirst, /^r=[A-Za-z0-9+/]{24}[A-Za-z0-9+/]{24},s=[A-Za-z0-9+/=]{24},i=4096$/);
    assert.match(clientFinal, /^c=biws,r=[^,]+,p=[A-Za-z0-9+/]{43}=$/);
    assert.equal(result.ok, true);
    assert.match(result.message, /^v=[A-Za-z0-9+/]{43}=$/);
    client.verifyServerFinal(result.message);
  });

  it('draws fresh nonces for every exchange', () => {
    const a = new ScramClient('x').clientFirst();
    const b = new ScramClient('x').clientFirst();
    assert.notEqual(a, b);
    const server = (first: string): string => new ScramServer(null, { user: 'u' }).serverFirst(first);
    assert.notEqual(server(a), server(a));
  });

  it('fails a wrong password, and the client reports AUTH_FAILED', async () => {
    const verifier = parseScramVerifier(await scramVerifier('right'));
    const { client, result } = await exchange('wrong', verifier);
    assert.deepEqual(result, { ok: false, message: 'e=invalid-proof' });
    assert.throws(() => client.verifyServerFinal(result.message), assertCode('AUTH_FAILED', /rejected.*invalid-proof/));
  });

  it('answers an unknown user exactly like a wrong password', async () => {
    const mockSecret = Buffer.alloc(32, 7);
    const real = parseScramVerifier(await scramVerifier('right'));
    const known = await exchange('wrong', real, { user: 'alice', mockSecret });
    const unknown = await exchange('wrong', null, { user: 'mallory', mockSecret });
    const unknownRightShape = await exchange('right', null, { user: 'mallory', mockSecret });

    const shape = (serverFirst: string): string => serverFirst.replace(/^r=[^,]+/, 'r=*').replace(/s=[^,]+/, 's=*');
    assert.equal(shape(unknown.serverFirst), shape(known.serverFirst));
    assert.equal(shape(unknown.serverFirst), 'r=*,s=*,i=4096');
    const salt = (serverFirst: string): Buffer => Buffer.from(/s=([^,]+)/.exec(serverFirst)?.[1] ?? '', 'base64');
    assert.equal(salt(unknown.serverFirst).length, salt(known.serverFirst).length);
    assert.deepEqual(known.result, { ok: false, message: 'e=invalid-proof' });
    assert.deepEqual(unknown.result, known.result);
    assert.deepEqual(unknownRightShape.result, known.result);

    // The fake salt is stable per user and secret, so repeated probes see nothing change.
    assert.deepEqual(salt(unknownRightShape.serverFirst), salt(unknown.serverFirst));
    const other = await exchange('x', null, { user: 'trudy', mockSecret });
    assert.notDeepEqual(salt(other.serverFirst), salt(unknown.serverFirst));
    const otherSecret = await exchange('x', null, { user: 'mallory', mockSecret: Buffer.alloc(32, 8) });
    assert.notDeepEqual(salt(otherSecret.serverFirst), salt(unknown.serverFirst));
    const defaultSecret = (): Buffer => salt(new ScramServer(null, { user: 'mallory' }).serverFirst('n,,n=,r=abc'));
    assert.deepEqual(defaultSecret(), defaultSecret());
  });

  it('announces the configured mock iteration count for unknown users', () => {
    const server = new ScramServer(null, { user: 'ghost', mockIterations: 600_000 });
    assert.match(server.serverFirst('n,,n=,r=abc'), /,i=600000$/);
  });

  it('fails even a proof made with the mock salt for an unknown user', () => {
    const server = new ScramServer(null, { user: 'ghost' });
    const serverFirst = server.serverFirst('n,,n=,r=abc');
    assert.deepEqual(server.serverFinal(rfcClientFinal('anything', 'n=,r=abc', serverFirst, 'n,,')), { ok: false, message: 'e=invalid-proof' });
  });

  it('ignores the user name in the SCRAM messages (the startup message names the user)', async () => {
    const verifier = parseScramVerifier(await scramVerifier('pw'));
    const client = new ScramClient('pw', { user: 'someone,else=really' });
    const first = client.clientFirst();
    assert.equal(first.slice(0, 29), 'n,,n=someone=2Celse=3Dreally,');
    const server = new ScramServer(verifier, { user: 'alice' });
    const result = server.serverFinal(await client.clientFinal(server.serverFirst(first)));
    assert.equal(result.ok, true);
    client.verifyServerFinal(result.message);
  });

  it('accepts a "y" GS2 header (the client supports channel binding, walship does not offer it)', async () => {
    const verifier = parseScramVerifier(await scramVerifier('pw'));
    const server = new ScramServer(verifier);
    const serverFirst = server.serverFirst('y,,n=,r=clientnonce');
    assert.equal(server.serverFinal(rfcClientFinal('pw', 'n=,r=clientnonce', serverFirst, 'y,,')).ok, true);
  });

  it('ignores well-formed extensions in client messages, which the proof covers', async () => {
    const verifier = parseScramVerifier(await scramVerifier('pw'));
    const server = new ScramServer(verifier, { nonce: 'servernonce' });
    const serverFirst = server.serverFirst('n,,n=,r=cn,x=ext');
    const withoutProof = 'c=biws,r=cnservernonce,x=ext';
    const { salted } = rfcKeys(Buffer.from('pw'), verifier.salt, 4096);
    const clientKey = createHmac('sha256', salted).update('Client Key').digest();
    const signature = createHmac('sha256', createHash('sha256').update(clientKey).digest())
      .update(`n=,r=cn,x=ext,${serverFirst},${withoutProof}`)
      .digest();
    const proof = Buffer.from(clientKey.map((byte, i) => byte ^ (signature[i] ?? 0))).toString('base64');
    assert.equal(server.serverFinal(`${withoutProof},p=${proof}`).ok, true);

    // The same proof with the extension stripped no longer matches.
    const stripped = new ScramServer(verifier, { nonce: 'servernonce' });
    stripped.serverFirst('n,,n=,r=cn,x=ext');
    assert.equal(stripped.serverFinal(`c=biws,r=cnservernonce,p=${proof}`).ok, false);
  });
});

describe('mutual authentication', () => {
  it('rejects a server-final-message with a tampered signature', async () => {
    const verifier = parseScramVerifier(await scramVerifier('pw'));
    const { client, result } = await exchange('pw', verifier);
    assert.equal(result.ok, true);
    const signature = Buffer.from(result.message.slice(2), 'base64');
    signature[0] = (signature[0] ?? 0) ^ 1;
    assert.throws(() => client.verifyServerFinal(`v=${signature.toString('base64')}`), assertCode('AUTH_FAILED', /signature is wrong/));
  });

  it('rejects a server that holds the StoredKey but not the ServerKey', async () => {
    // A thief with StoredKey alone can check a proof but cannot sign as the server.
    const real = parseScramVerifier(await scramVerifier('pw'));
    const impostor: ParsedVerifier = { ...real, serverKey: Buffer.alloc(32, 1) };
    const { client, result } = await exchange('pw', impostor);
    assert.equal(result.ok, true);
    assert.throws(() => client.verifyServerFinal(result.message), assertCode('AUTH_FAILED'));
  });

  it('reports a server error as AUTH_FAILED with the error sanitised', async () => {
    const { client } = await exchange('pw', null);
    assert.throws(() => client.verifyServerFinal('e=other-error\u0001'), assertCode('AUTH_FAILED', /other-error\?$/));
  });
});

describe('malformed messages', () => {
  const nonce = 'clientnonce';
  const clientFirstCases: [string, string | Uint8Array][] = [
    ['empty', ''],
    ['no GS2 header', 'n=,r=abc'],
    ['an unknown channel-binding flag', 'q,,n=,r=abc'],
    ['channel binding requested', 'p=tls-server-end-point,,n=,r=abc'],
    ['an authorization identity', 'n,a=admin,n=,r=abc'],
    ['a GS2 header that is too short', 'n,'],
    ['a GS2 header with garbage', 'n,x,n=,r=abc'],
    ['a mandatory extension', 'n,,m=ext,n=,r=abc'],
    ['attributes in the wrong order', 'n,,r=abc,n='],
    ['a missing nonce', 'n,,n='],
    ['an empty nonce', 'n,,n=,r='],
    ['a nonce with a space', 'n,,n=,r=a c'],
    ['a nonce with non-ASCII', 'n,,n=,r=abcé'],
    ['a nonce that is too long', `n,,n=,r=${'a'.repeat(129)}`],
    ['a bad escape in the user name', 'n,,n=a=3Eb,r=abc'],
    ['an extension without a value', 'n,,n=,r=abc,x='],
    ['a repeated attribute', 'n,,n=,r=abc,r=def'],
    ['an attribute without "="', 'n,,n=,r=abc,xyz'],
    ['a trailing comma', 'n,,n=,r=abc,'],
    ['a NUL character', 'n,,n=\0,r=abc'],
    ['a lone surrogate', 'n,,n=\ud800,r=abc'],
    ['invalid UTF-8', Buffer.from([0x6e, 0x2c, 0x2c, 0x6e, 0x3d, 0xff, 0x2c, 0x72, 0x3d, 0x61])],
    ['an oversized message', `n,,n=${'u'.repeat(SCRAM_MAX_MESSAGE_BYTES)},r=abc`],
    ['an oversized byte message', Buffer.alloc(SCRAM_MAX_MESSAGE_BYTES + 1, 0x61)],
    ['a message of multi-byte characters over the cap', `n,,n=${'é'.repeat(520)},r=abc`],
  ];
  for (const [what, message] of clientFirstCases) {
    it(`client-first-message with ${what} → PROTOCOL_ERROR`, () => {
      assert.throws(() => new ScramServer(null).serverFirst(message), assertCode('PROTOCOL_ERROR'));
    });
  }

  it('names channel binding and authorization identities in the error', () => {
    assert.throws(() => new ScramServer(null).serverFirst('p=tls-unique,,n=,r=abc'), assertCode('PROTOCOL_ERROR', /channel binding/));
    assert.throws(() => new ScramServer(null).serverFirst('n,a=x,n=,r=abc'), assertCode('PROTOCOL_ERROR', /authorization identit/));
  });

  it('accepts a message of exactly the maximum size', () => {
    const message = `n,,n=,r=abc,x=${'v'.repeat(SCRAM_MAX_MESSAGE_BYTES - 14)}`;
    assert.equal(Buffer.byteLength(message), SCRAM_MAX_MESSAGE_BYTES);
    assert.match(new ScramServer(null).serverFirst(message), /^r=abc/);
  });

  const proof = Buffer.alloc(32, 9).toString('base64');
  const clientFinalCases: [string, (fullNonce: string) => string][] = [
    ['a wrong channel-binding value', (r) => `c=eSws,r=${r},p=${proof}`],
    ['channel-binding data that is not base64 of the header', (r) => `c=biwsAA==,r=${r},p=${proof}`],
    ['a missing channel binding', (r) => `r=${r},p=${proof}`],
    ['a nonce that does not match', (r) => `c=biws,r=${r}x,p=${proof}`],
    ['only the client nonce', () => `c=biws,r=${nonce},p=${proof}`],
    ['a missing proof', (r) => `c=biws,r=${r}`],
    ['a proof that is not last', (r) => `c=biws,r=${r},p=${proof},x=ext`],
    ['a proof that is not base64', (r) => `c=biws,r=${r},p=${'*'.repeat(44)}`],
    ['a short proof', (r) => `c=biws,r=${r},p=${Buffer.alloc(31).toString('base64')}`],
    ['a long proof', (r) => `c=biws,r=${r},p=${Buffer.alloc(33).toString('base64')}`],
    ['a repeated nonce attribute', (r) => `c=biws,r=${r},r=${r},p=${proof}`],
    ['garbage', () => 'hello'],
  ];
  for (const [what, make] of clientFinalCases) {
    it(`client-final-message with ${what} → PROTOCOL_ERROR`, () => {
      const server = new ScramServer(null, { nonce: 'servernonce' });
      server.serverFirst(`n,,n=,r=${nonce}`);
      assert.throws(() => server.serverFinal(make(`${nonce}servernonce`)), assertCode('PROTOCOL_ERROR'));
    });
  }

  const serverFirstCases: [string, string][] = [
    ['a nonce that does not extend the client nonce', 'r=othernonce123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096'],
    ['only the client nonce', `r=${nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096`],
    ['a server nonce with a space', `r=${nonce}a b,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096`],
    ['a salt that is not base64', `r=${nonce}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096`],
    ['an empty salt', `r=${nonce}xyz,s=,i=4096`],
    ['too few iterations', `r=${nonce}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=${SCRAM_MIN_ITERATIONS - 1}`],
    ['too many iterations', `r=${nonce}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=${SCRAM_MAX_ITERATIONS + 1}`],
    ['an absurd iteration count', `r=${nonce}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999999999999`],
    ['a leading zero in the iteration count', `r=${nonce}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=04096`],
    ['a negative iteration count', `r=${nonce}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-4096`],
    ['a missing iteration count', `r=${nonce}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==`],
    ['attributes in the wrong order', `s=W22ZaJ0SNY7soEsUEjb6gQ==,r=${nonce}xyz,i=4096`],
    ['a mandatory extension', `m=ext,r=${nonce}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096`],
    ['an error instead of a challenge', 'e=other-error'],
  ];
  for (const [what, message] of serverFirstCases) {
    it(`server-first-message with ${what} → PROTOCOL_ERROR`, async () => {
      const client = new ScramClient('pw', { nonce });
      client.clientFirst();
      await assert.rejects(client.clientFinal(message), assertCode('PROTOCOL_ERROR'));
    });
  }

  const serverFinalCases: [string, string][] = [
    ['no attribute', 'hello'],
    ['an unexpected attribute', 'x=abc'],
    ['a signature that is not base64', `v=${'*'.repeat(44)}`],
    ['a short signature', `v=${Buffer.alloc(16).toString('base64')}`],
    ['an empty message', ''],
    ['a repeated attribute', `v=${Buffer.alloc(32).toString('base64')},v=x`],
  ];
  for (const [what, message] of serverFinalCases) {
    it(`server-final-message with ${what} → PROTOCOL_ERROR`, async () => {
      const { client } = await exchange('pw', null);
      assert.throws(() => client.verifyServerFinal(message), assertCode('PROTOCOL_ERROR'));
    });
  }
});

describe('exchange state', () => {
  it('refuses calls out of order, and any call after a failure', async () => {
    const server = new ScramServer(null);
    assert.throws(() => server.serverFinal('c=biws,r=x,p=x'), assertCode('PROTOCOL_ERROR', /out of order/));
    assert.throws(() => server.serverFirst('garbage'), assertCode('PROTOCOL_ERROR'));
    assert.throws(() => server.serverFirst('n,,n=,r=abc'), assertCode('PROTOCOL_ERROR', /out of order/));

    const client = new ScramClient('pw');
    await assert.rejects(client.clientFinal('r=x,s=x,i=4096'), assertCode('PROTOCOL_ERROR', /out of order/));
    assert.throws(() => client.verifyServerFinal('v=x'), assertCode('PROTOCOL_ERROR', /out of order/));
    client.clientFirst();
    assert.throws(() => client.clientFirst(), assertCode('PROTOCOL_ERROR', /out of order/));
    await assert.rejects(client.clientFinal('garbage'), assertCode('PROTOCOL_ERROR'));
    await assert.rejects(client.clientFinal('r=x,s=x,i=4096'), assertCode('PROTOCOL_ERROR', /out of order/));
  });

  it('refuses a second clientFinal while the first is computing', async () => {
    const client = new ScramClient('pw', { nonce: 'abc' });
    client.clientFirst();
    const first = client.clientFinal('r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096');
    await assert.rejects(client.clientFinal('r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096'), assertCode('PROTOCOL_ERROR', /out of order/));
    assert.match(await first, /^c=biws,r=abcdef,p=/);
  });

  it('refuses a server reused after its exchange ended', async () => {
    const verifier = parseScramVerifier(await scramVerifier('pw'));
    const client = new ScramClient('pw');
    const server = new ScramServer(verifier);
    const final = await client.clientFinal(server.serverFirst(client.clientFirst()));
    assert.equal(server.serverFinal(final).ok, true);
    assert.throws(() => server.serverFinal(final), assertCode('PROTOCOL_ERROR', /out of order/));
  });
});

describe('options', () => {
  it('refuses bad client and server options with INVALID_OPTIONS', () => {
    const bad: [string, () => unknown][] = [
      ['client nonce with a comma', () => new ScramClient('pw', { nonce: 'a,b' })],
      ['empty client nonce', () => new ScramClient('pw', { nonce: '' })],
      ['client user with NUL', () => new ScramClient('pw', { user: 'a\0b' })],
      ['client user too long', () => new ScramClient('pw', { user: 'u'.repeat(SCRAM_MAX_MESSAGE_BYTES) })],
      ['unknown client option', () => new ScramClient('pw', { username: 'x' } as never)],
      ['short mock secret', () => new ScramServer(null, { mockSecret: Buffer.alloc(8) })],
      ['mock iterations too low', () => new ScramServer(null, { mockIterations: 1 })],
      ['server nonce too long', () => new ScramServer(null, { nonce: 'n'.repeat(129) })],
      ['unknown server option', () => new ScramServer(null, { iterations: 4096 } as never)],
    ];
    for (const [what, make] of bad) assert.throws(make, assertCode('INVALID_OPTIONS'), what);
  });

  it('refuses a verifier that is not one', () => {
    const parsed = parseScramVerifier(PENCIL_VERIFIER);
    for (const verifier of [{ ...parsed, storedKey: Buffer.alloc(31) }, { ...parsed, iterations: 1 }, {}]) {
      assert.throws(() => new ScramServer(verifier as ParsedVerifier), assertCode('INVALID_ARGUMENT'));
    }
  });

  it('refuses message arguments that are neither strings nor bytes', () => {
    assert.throws(() => new ScramServer(null).serverFirst(42 as never), assertCode('INVALID_ARGUMENT'));
  });
});

describe('secrets stay out of errors and inspection', () => {
  it('never shows the password, keys or proof', async () => {
    const password = 'hunter2-very-secret';
    const verifier = parseScramVerifier(await scramVerifier(password));
    const client = new ScramClient(password);
    const server = new ScramServer(verifier);
    const serverFirst = server.serverFirst(client.clientFirst());
    const clientFinal = await client.clientFinal(serverFirst);
    const proof = clientFinal.slice(clientFinal.indexOf(',p=') + 3);
    const secrets = [password, proof, verifier.storedKey.toString('base64'), verifier.serverKey.toString('base64')];

    const shown: string[] = [inspect(client, { showHidden: true }), inspect(server, { showHidden: true }), JSON.stringify(client), JSON.stringify(server)];
    const capture = (f: () => unknown): void => {
      try {
        f();
      } catch (err) {
        shown.push((err as Error).message, inspect(err));
      }
    };
    capture(() => server.serverFinal(clientFinal.replace(proof, proof.slice(1))));
    const wrong = new ScramClient('not-it');
    const server2 = new ScramServer(verifier);
    const result = server2.serverFinal(await wrong.clientFinal(server2.serverFirst(wrong.clientFirst())));
    capture(() => wrong.verifyServerFinal(result.message));
    capture(() => client.verifyServerFinal(`v=${proof}`));
    assert.ok(shown.length >= 8);
    for (const text of shown) for (const secret of secrets) assert.ok(!text.includes(secret), `leaked in: ${text}`);
  });
});

describe('fuzzing: only coded errors escape', () => {
  const isCoded = (err: unknown, codes: ErrorCode[]): boolean => codes.some((code) => isWalshipError(err, code));
  const text = fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), fc.string({ maxLength: 200 }));
  /** A valid message with a few random splices, so fuzzing reaches past the first check. */
  const mutated = (valid: string): fc.Arbitrary<string> =>
    fc
      .array(fc.tuple(fc.nat({ max: valid.length }), fc.nat({ max: 4 }), fc.string({ unit: 'binary', maxLength: 4 })), { minLength: 1, maxLength: 3 })
      .map((edits) => edits.reduce((message, [at, remove, insert]) => message.slice(0, at) + insert + message.slice(at + remove), valid));
  const message = (valid: string): fc.Arbitrary<string | Uint8Array> =>
    fc.oneof(text, mutated(valid), fc.uint8Array({ maxLength: 200 }), mutated(valid).map((m) => Buffer.from(m)));

  it('ScramServer.serverFirst and serverFinal', async () => {
    const verifier = parseScramVerifier(PENCIL_VERIFIER);
    fc.assert(
      fc.property(fc.boolean(), message(RFC.clientFirst), message(RFC.clientFinal), (known, first, final) => {
        const server = new ScramServer(known ? verifier : null, { nonce: RFC.serverNonce });
        try {
          server.serverFirst(first);
        } catch (err) {
          assert.ok(isCoded(err, ['PROTOCOL_ERROR']), inspect(err));
          return;
        }
        try {
          const result = server.serverFinal(final);
          // A mutated proof must never pass; an untouched one may, for the known user.
          if (result.ok) assert.equal(final.toString(), RFC.clientFinal);
        } catch (err) {
          assert.ok(isCoded(err, ['PROTOCOL_ERROR']), inspect(err));
        }
      }),
      { seed: 5802, numRuns: 2000 },
    );
  });

  it('ScramClient.clientFinal and verifyServerFinal', async () => {
    await fc.assert(
      fc.asyncProperty(message(RFC.serverFirst), message(RFC.serverFinal), async (serverFirst, serverFinal) => {
        const client = new ScramClient(RFC.password, { user: RFC.user, nonce: RFC.clientNonce });
        client.clientFirst();
        try {
          await client.clientFinal(serverFirst);
        } catch (err) {
          assert.ok(isCoded(err, ['PROTOCOL_ERROR']), inspect(err));
          return;
        }
        try {
          client.verifyServerFinal(serverFinal);
          assert.equal(serverFinal.toString(), RFC.serverFinal);
        } catch (err) {
          assert.ok(isCoded(err, ['PROTOCOL_ERROR', 'AUTH_FAILED']), inspect(err));
        }
      }),
      { seed: 7677, numRuns: 300 },
    );
  });
});
