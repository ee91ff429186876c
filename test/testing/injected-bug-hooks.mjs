// Module hooks (node:module's register) that load a few walship source files with deliberate
// bugs written into them, each behind a switch the test flips for one test only
// (globalThis.__walshipInjectedBug, see injected-bugs.ts): mutation testing of the simulation's
// checker, with no test hook in walship's sources. Registered after tsx's hooks, these run
// first: a mutated file is read, edited and transpiled here; every other file goes on to tsx.
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

/** @type {readonly { bug: string; file: string; from: string; to: string }[]} */
let mutations = [];

export function initialize(data) {
  mutations = data.mutations;
}

export async function load(url, context, nextLoad) {
  const path = url.startsWith('file:') ? fileURLToPath(url.split('?')[0]) : '';
  const mine = mutations.filter((m) => path.endsWith(m.file));
  if (mine.length === 0) return nextLoad(url, context);
  let source = await readFile(path, 'utf8');
  for (const m of mine) {
    const found = source.split(m.from).length - 1;
    // The text a bug replaces must be there exactly once: a changed source fails loudly here.
    if (found !== 1) throw new Error(`injected bug '${m.bug}': the text to replace occurs ${found} times in ${m.file}, not once; update test/testing/injected-bugs.ts`);
    source = source.replace(m.from, () => m.to);
  }
  const ts = (await import('typescript')).default;
  const { outputText } = ts.transpileModule(source, {
    fileName: path,
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext, verbatimModuleSyntax: true, sourceMap: false },
  });
  return { format: 'module', source: outputText, shortCircuit: true };
}
