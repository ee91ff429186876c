import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

// Runs the example as `npm start` does, in a process of its own, and checks what it shows.
it('archive-shipping.ts: a standby with no connection to the primary restores its WAL from the archive, segment by segment', async () => {
  const example = fileURLToPath(new URL('archive-shipping.ts', import.meta.url));
  const { stdout } = await promisify(execFile)(process.execPath, ['--conditions=walship-source', '--import', import.meta.resolve('tsx'), example], { timeout: 90_000 });
  assert.match(stdout, /^standby from the base backup: order 1, order 2, order 3$/m, stdout);
  const committed = /^committed up to (0\/[0-9A-F]+); the standby still has 3 orders: their segment is not archived yet$/m.exec(stdout);
  assert.ok(committed !== null, `the standby shows nothing of a segment not yet archived:\n${stdout}`);
  assert.match(stdout, /^archive: 000000010000000000000001$/m, 'the switched segment is archived, under its WAL file name');
  assert.ok(
    stdout.includes(`standby (restoring) restored up to ${committed[1]}: order 1, order 2, order 3, order 4, order 5, order 6\n`),
    `the standby, still restoring, has every order once the segment is archived:\n${stdout}`,
  );
});
