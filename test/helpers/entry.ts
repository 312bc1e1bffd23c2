// How tests start the `dss` program as a separate process. `npm test` (test/run.ts) builds dist/
// first and sets DSS_TEST_DIST=1: a node from compiled JavaScript is healthy in about 1.1 s, against
// about 2 s from source through tsx, and the suite starts hundreds of them. A test file run on its
// own (node --import tsx --test <file>) starts them from source, so it never runs a stale build.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Arguments for `process.execPath` that run the dss CLI; append the command and its options. */
export const DSS_ENTRY: readonly string[] =
  process.env.DSS_TEST_DIST === '1'
    ? [join(ROOT, 'dist/cli/main.js')]
    : ['--import', 'tsx', join(ROOT, 'src/cli/main.ts')];
