// Test runner: Node 20 does not expand globs for --test, so this lists the test files itself.
// Usage: npm test [-- <substring>...]  (only files whose path contains one of the substrings)
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

function collect(dir: string, out: string[]): void {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) collect(p, out);
    else if (name.endsWith('.test.ts')) out.push(relative(root, p));
  }
}

const files: string[] = [];
collect(join(root, 'test'), files);
const filters = process.argv.slice(2);
const selected = filters.length ? files.filter((f) => filters.some((s) => f.includes(s))) : files;
if (selected.length === 0) {
  process.stderr.write(`no test files match ${filters.join(' ')}\n`);
  process.exit(1);
}

// Node processes the tests start run from dist/ (test/helpers/entry.ts): build it now, incrementally
// (about 2 s when little changed), so it is never older than src/. If the build fails (a type error
// while working), they run from source instead and the type check reports the error.
const build = spawnSync('npm', ['run', '--silent', 'build'], {
  cwd: root,
  stdio: ['ignore', 'ignore', 'inherit'],
});
const fromDist = build.status === 0;
if (!fromDist) process.stderr.write('npm run build failed: test nodes run from source (tsx)\n');

// Integration tests start real processes with tight timeouts; running them one file at a time on
// a 2-core machine keeps timing-sensitive fault tests from starving each other.
const child = spawn(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=spec', ...selected],
  { cwd: root, stdio: 'inherit', env: { ...process.env, DSS_TEST_DIST: fromDist ? '1' : '0' } },
);
const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
process.on('SIGINT', forward('SIGINT'));
process.on('SIGTERM', forward('SIGTERM'));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
