// Type-aware lint: a few correctness rules the compiler cannot enforce, not a style guide.
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  {
    // Build output, API docs, benchmark results, and the binary WAL fixture.
    ignores: ['dist/', 'docs/', 'bench/out/', 'scratch/', 'test/fixtures/wal-v1/'],
  },
  {
    // The .mjs helpers (the test runner, bench and fixture peers) are outside tsconfig.json: ESLint only parses them.
    files: ['**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      // tsconfig.json covers src, test, examples and bench, so every TS file gets full type information.
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // A dropped promise loses its rejection and its ordering; fire-and-forget must say so with `void`.
      // node:test's describe/it return promises the runner itself awaits and reports, so they are safe to drop.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it'] }] },
      ],
      // An async callback where a void one is expected (event handlers, forEach) drops its rejection too.
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      // Unused names are left to the compiler (noUnusedLocals, noUnusedParameters in tsconfig.json).
      // A new member of a union must reach every switch over it; a `default` does not count as handling it.
      '@typescript-eslint/switch-exhaustiveness-check': [
        'error',
        {
          considerDefaultExhaustiveForUnions: false,
          requireDefaultForNonUnion: false,
          allowDefaultCaseForExhaustiveSwitch: true,
        },
      ],
    },
  },
);
