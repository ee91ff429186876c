import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from './temp-dir.js';

const run = promisify(execFile);

/** A PEM key and certificate. */
export interface KeyPair {
  readonly key: string;
  readonly cert: string;
}

/**
 * Certificates for TLS tests, generated with `openssl` in a temporary directory that is
 * removed once they are read (EC P-256 keys, valid for two days; nothing stale is checked in).
 */
export interface TlsFixtures {
  /** The test CA that signs `server`, `client` and `wrongName`. */
  readonly ca: string;
  /** Server certificate for DNS `localhost` and IPs 127.0.0.1 and ::1, signed by `ca`. */
  readonly server: KeyPair;
  /** Client certificate (CN `standby1`), signed by `ca`. */
  readonly client: KeyPair;
  /** Server certificate for `wrong.example` only, signed by `ca`: right CA, wrong name. */
  readonly wrongName: KeyPair;
  /** A self-signed certificate for `localhost`, 127.0.0.1 and ::1 that `ca` does not vouch for. */
  readonly selfSigned: KeyPair;
  /** A second CA, trusted by nobody in the tests. */
  readonly otherCa: string;
  /** A client certificate signed by `otherCa`: untrusted by a server that trusts `ca`. */
  readonly untrustedClient: KeyPair;
}

const CURVE = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** Generates a fresh set of {@link TlsFixtures}. Takes a few hundred milliseconds. */
export async function createTlsFixtures(): Promise<TlsFixtures> {
  const { dir, cleanup } = await tempDir();
  try {
    const path = (name: string): string => join(dir, name);
    const openssl = (...args: string[]): Promise<unknown> => run('openssl', args, { cwd: dir, timeout: 30_000 });

    const makeCa = async (name: string, cn: string): Promise<void> => {
      await openssl('req', '-x509', ...CURVE, '-keyout', path(`${name}.key`), '-out', path(`${name}.crt`), '-days', '2',
        '-subj', `/CN=${cn}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    };
    const makeLeaf = async (name: string, ca: string, cn: string, extensions: string): Promise<void> => {
      await writeFile(path(`${name}.ext`), `basicConstraints=CA:FALSE\n${extensions}\n`);
      await openssl('req', '-new', ...CURVE, '-keyout', path(`${name}.key`), '-out', path(`${name}.csr`), '-subj', `/CN=${cn}`);
      await openssl('x509', '-req', '-in', path(`${name}.csr`), '-CA', path(`${ca}.crt`), '-CAkey', path(`${ca}.key`),
        '-set_serial', `0x${Date.now().toString(16)}${Math.floor(Math.random() * 0xffff).toString(16)}`, '-days', '2',
        '-extfile', path(`${name}.ext`), '-out', path(`${name}.crt`));
    };
    const serverNames = 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1';

    await Promise.all([makeCa('ca', 'walship test CA'), makeCa('other-ca', 'walship untrusted CA')]);
    await Promise.all([
      makeLeaf('server', 'ca', 'localhost', `${serverNames}\nextendedKeyUsage=serverAuth`),
      makeLeaf('client', 'ca', 'standby1', 'extendedKeyUsage=clientAuth'),
      makeLeaf('wrong-name', 'ca', 'wrong.example', 'subjectAltName=DNS:wrong.example\nextendedKeyUsage=serverAuth'),
      makeLeaf('untrusted-client', 'other-ca', 'intruder', 'extendedKeyUsage=clientAuth'),
      openssl('req', '-x509', ...CURVE, '-keyout', path('self-signed.key'), '-out', path('self-signed.crt'), '-days', '2',
        '-subj', '/CN=localhost', '-addext', serverNames),
    ]);

    const read = (name: string): Promise<string> => readFile(path(name), 'utf8');
    const pair = async (name: string): Promise<KeyPair> => ({ key: await read(`${name}.key`), cert: await read(`${name}.crt`) });
    return {
      ca: await read('ca.crt'),
      server: await pair('server'),
      client: await pair('client'),
      wrongName: await pair('wrong-name'),
      selfSigned: await pair('self-signed'),
      otherCa: await read('other-ca.crt'),
      untrustedClient: await pair('untrusted-client'),
    };
  } finally {
    await cleanup();
  }
}
