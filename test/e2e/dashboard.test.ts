// The built-in dashboard in a real browser (headless Chromium through playwright-core) against a
// 3-node cluster running every role on a private Redis: the page shows the current leader, a held
// lock with its holder and fencing token (and a waiter on another lock), the queues with their
// owners and depths, and every node's cache lines with their MESI states; a release disappears
// from the page without a reload; a node that goes away is marked, and the page's own node going
// away raises the error banner. Full-page screenshots go to test-artifacts/ (dashboard.png, then
// dashboard-degraded.png and dashboard-offline.png).
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { chromium, type Browser, type Page } from 'playwright-core';
import { TestCluster } from '../helpers/cluster.js';
import { RedisServer } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const ARTIFACTS = join(ROOT, 'test-artifacts');
const CHROMIUM = process.env.DSS_CHROMIUM ?? '/usr/bin/chromium';

interface Res {
  status: number;
  body: unknown;
}

async function call(url: string, method: string, path: string, body?: unknown): Promise<Res> {
  const res = await fetch(url + path, {
    method,
    signal: AbortSignal.timeout(35_000),
    ...(body !== undefined
      ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }
      : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as unknown) : null };
}

describe('web dashboard (headless Chromium, 3 nodes with every role)', () => {
  let redis: RedisServer | undefined;
  let mem: Redis | undefined;
  let c: TestCluster | undefined;
  let browser: Browser | undefined;
  let urls: string[] = [];
  const pageErrors: string[] = [];

  before(async () => {
    // CI installs Chromium with apt; on a fresh machine it may still be arriving.
    await waitFor(`${CHROMIUM} to exist`, () => existsSync(CHROMIUM), { timeoutMs: 60_000, intervalMs: 500 });
    redis = await RedisServer.start();
    mem = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await mem.connect();
    c = await TestCluster.start({
      nodes: 3,
      roles: 'lock,queue,cache',
      env: { REDIS_URL: redis.url },
      direct: true,
      // A browser shares the 2 cores: looser timeouts than the default keep leadership steady.
      electionMinMs: 600,
      electionMaxMs: 1200,
      heartbeatMs: 100,
    });
    urls = c.nodes.map((n) => n.url);
    for (const u of urls) {
      await waitFor(`${u} ready`, async () => (await fetch(`${u}/ready`)).ok, { timeoutMs: 30_000 });
    }
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });

  after(async () => {
    // Each step on its own, so one failure does not leave the others' processes behind.
    await browser?.close().catch(() => undefined);
    mem?.disconnect();
    await c?.stop().catch(() => undefined);
    await redis?.stop().catch(() => undefined);
  });

  /** The text of `selector` once `ok` accepts it (polls the live page, no fixed sleeps). */
  const waitText = (page: Page, what: string, selector: string, ok: (text: string) => boolean) =>
    waitFor(
      what,
      async () => {
        const loc = page.locator(selector);
        if ((await loc.count()) === 0) return undefined;
        const text = await loc.first().innerText({ timeout: 1_000 });
        return ok(text) ? text : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 100 },
    );

  it('shows leader, locks, queues and MESI lines, and follows a release live', async () => {
    assert.ok(c && mem && browser);
    const [n1, n2, n3] = urls as [string, string, string];

    // A lock to watch, and a second one with a waiter queued behind its holder.
    const grant = await call(n2, 'POST', '/lock/acquire', {
      resource: 'dash-test-lock',
      client_id: 'dash-client',
      ttl_ms: 120_000,
    });
    assert.equal(grant.status, 200, JSON.stringify(grant.body));
    const token = (grant.body as { fencing_token: number }).fencing_token;
    const held = await call(n1, 'POST', '/lock/acquire', {
      resource: 'orders/42',
      client_id: 'worker-1',
      ttl_ms: 120_000,
    });
    assert.equal(held.status, 200, JSON.stringify(held.body));
    const waiting = call(n3, 'POST', '/lock/acquire', {
      resource: 'orders/42',
      client_id: 'worker-2',
      mode: 'shared',
      ttl_ms: 120_000,
      wait_ms: 30_000,
    });
    // Awaited below; a failure before that must not surface as an unhandled rejection.
    waiting.catch(() => undefined);

    // Queues: dash-test-queue ends with 2 ready and 1 pending.
    for (const m of ['a', 'b', 'c']) {
      const r = await call(n1, 'POST', '/queue/push', { queue: 'dash-test-queue', message: { m } });
      assert.equal(r.status, 201, JSON.stringify(r.body));
    }
    const popped = await call(n3, 'POST', '/queue/pop', { queue: 'dash-test-queue' });
    assert.equal(popped.status, 200, JSON.stringify(popped.body));
    assert.equal((await call(n2, 'POST', '/queue/push', { queue: 'emails', message: 'hi' })).status, 201);
    const stats = (await call(n1, 'GET', '/queue/stats?queue=dash-test-queue')).body as { owner: string };

    // Cache: M on node2; S on node1 and node3; E on node1.
    assert.equal((await call(n2, 'PUT', '/cache/dash/test-key', { value: { v: 1 } })).status, 200);
    assert.equal((await call(n3, 'PUT', '/cache/dash/shared', { value: 'x' })).status, 200);
    assert.equal((await call(n1, 'GET', '/cache/dash/shared')).status, 200);
    await mem.set('dss:mem:dash/exclusive', JSON.stringify('from memory'));
    const e = await call(n1, 'GET', '/cache/dash/exclusive');
    assert.equal((e.body as { state: string }).state, 'E', JSON.stringify(e.body));

    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.on('pageerror', (err) => pageErrors.push(`pageerror: ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error') pageErrors.push(`console: ${msg.text()}`);
    });
    let navigations = 0;
    page.on('framenavigated', (frame) => {
      if (frame === page.mainFrame()) navigations++;
    });
    // Through `/`, which redirects to the page.
    const res = await page.goto(`${n1}/`, { waitUntil: 'domcontentloaded' });
    assert.equal(res?.status(), 200);
    assert.ok(page.url().endsWith('/dashboard'), page.url());

    // The leader the nodes report (re-read while waiting: a re-election may move it).
    await waitFor(
      'the page to show the current leader and term',
      async () => {
        const st = (await call(n1, 'GET', '/status')).body as {
          raft: { leader_id: string | null; term: number };
        };
        if (st.raft.leader_id === null) return false;
        const health = await page.locator('#health').innerText({ timeout: 1_000 });
        if (!health.includes(`Leader ${st.raft.leader_id}`) || !health.includes(`term ${st.raft.term}`))
          return false;
        const row = page.locator(`#nodes tr[data-node="${st.raft.leader_id}"]`);
        return (await row.getAttribute('class', { timeout: 1_000 })) === 'is-leader';
      },
      { timeoutMs: 15_000, intervalMs: 100 },
    );
    await waitText(page, 'every node up', '#health', (t) => t.includes('3 / 3 nodes reachable'));

    const lockRow = await waitText(
      page,
      'the lock, its holder and token',
      '#locks tr[data-resource="dash-test-lock"]',
      (t) => t.includes('dash-client') && t.includes(`token ${token}`) && /expires in/.test(t),
    );
    assert.match(lockRow, /exclusive/i);
    await waitText(page, 'the waiter in line', '#locks tr[data-resource="orders/42"]', (t) =>
      /worker-1[\s\S]*worker-2/.test(t),
    );
    await waitText(
      page,
      'the queue with its owner and depths',
      '#queues tr[data-queue="dash-test-queue"]',
      (t) => t.includes(stats.owner) && /\b2\s+1\s+0\b/.test(t),
    );
    await waitText(page, 'the second queue', '#queues tr[data-queue="emails"]', (t) => t.includes('1'));
    const mesiOf = (node: string, key: string): string =>
      `#cache [data-cache-node="${node}"] [data-key="${key}"] .mesi`;
    await waitText(page, 'M on node2', mesiOf('node2', 'dash/test-key'), (t) => t === 'M');
    await waitText(page, 'S on node1', mesiOf('node1', 'dash/shared'), (t) => t === 'S');
    await waitText(page, 'S on node3', mesiOf('node3', 'dash/shared'), (t) => t === 'S');
    await waitText(page, 'E on node1', mesiOf('node1', 'dash/exclusive'), (t) => t === 'E');
    assert.equal(await page.locator('#banner').isVisible(), false, 'no error banner');

    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });

    // Release: the resource leaves the page without a reload.
    const navigationsBefore = navigations;
    const rel = await call(n3, 'POST', '/lock/release', {
      resource: 'dash-test-lock',
      client_id: 'dash-client',
    });
    assert.equal(rel.status, 200, JSON.stringify(rel.body));
    await waitFor(
      'the released lock to disappear from the page',
      async () => (await page.locator('#locks tr[data-resource="dash-test-lock"]').count()) === 0,
      { timeoutMs: 10_000, intervalMs: 100 },
    );
    assert.equal(navigations, navigationsBefore, 'the page was not reloaded');

    // The waiter is granted once its holder releases; then the table is empty.
    assert.equal(
      (await call(n1, 'POST', '/lock/release', { resource: 'orders/42', client_id: 'worker-1' })).status,
      200,
    );
    const w = await waiting;
    assert.equal(w.status, 200, JSON.stringify(w.body));
    await waitText(
      page,
      'worker-2 holding orders/42',
      '#locks tr[data-resource="orders/42"]',
      (t) => t.includes('worker-2') && !t.includes('worker-1'),
    );
    assert.equal(
      (await call(n2, 'POST', '/lock/release', { resource: 'orders/42', client_id: 'worker-2' })).status,
      200,
    );
    await waitText(page, 'the empty lock table', '#locks', (t) => t.includes('No locks held.'));
    assert.equal(navigations, navigationsBefore, 'the page was not reloaded');
    assert.deepEqual(pageErrors, [], 'no script errors or CSP violations');

    // A node that goes away is marked in the table; when the page's own node goes, a banner says so.
    await c.kill('node3');
    await waitText(page, 'node3 unreachable', '#nodes tr[data-node="node3"]', (t) =>
      t.includes('unreachable'),
    );
    await waitText(page, '2 of 3 nodes reachable', '#health', (t) => t.includes('2 / 3 nodes reachable'));
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-degraded.png'), fullPage: true });
    await c.kill('node1');
    await waitFor(
      'the error banner',
      async () =>
        (await page.locator('#banner').isVisible()) &&
        (await page.locator('#banner').innerText()).includes('Lost contact with node node1'),
      { timeoutMs: 15_000, intervalMs: 100 },
    );
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-offline.png'), fullPage: true });
    await page.close();
  });
});
