// Drives the dashboard in headless Chromium (the system's, through playwright-core;
// no browser is downloaded) and checks what a person would see.
//
//   node test/browser.mjs --url URL --artifacts DIR --expect-models a,b,c
//        [--key KEY --other-key KEY]     keys configured: the page asks for a key once,
//                                        the other tenant's key sees none of the models
//        [--no-prompt]                   no keys configured: the page never asks
//   env CHROMIUM (default /usr/bin/chromium)
//
// Prints one line per check; exits 1 on the first failure, with a screenshot of it.
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const WAIT_MS = 90_000;

function option(name) {
  const at = process.argv.indexOf(name);
  return at > 0 ? process.argv[at + 1] : undefined;
}
const url = option('--url');
const artifacts = option('--artifacts');
const key = option('--key');
const otherKey = option('--other-key');
const noPrompt = process.argv.includes('--no-prompt');
const expectedModels = (option('--expect-models') ?? '').split(',').filter(Boolean);
const label = option('--label') ?? (noPrompt ? 'open' : 'keys');
if (!url || !artifacts || expectedModels.length === 0) {
  console.error('usage: browser.mjs --url URL --artifacts DIR --expect-models a,b [--key K --other-key K | --no-prompt]');
  process.exit(2);
}
await mkdir(artifacts, { recursive: true });

function check(condition, message) {
  if (!condition) throw new Error(message);
  console.log(`ok: ${message}`);
}

// A fresh profile per run: nothing remembered between runs (keys, caches).
const profile = await mkdtemp(join(tmpdir(), 'ais-dashboard-test-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1400, height: 1000 },
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
// Anything requested outside the server under test fails the run.
const origin = new URL(url).origin;
const outside = [];
await context.route('**/*', (route) => {
  const target = route.request().url();
  if (!target.startsWith(origin) && !target.startsWith('data:')) {
    outside.push(target);
    return route.abort();
  }
  return route.continue();
});

let page = null;
async function screenshot(name) {
  if (!page) return;
  const path = join(artifacts, `${label}-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot: ${path}`);
}

async function enterKey(value) {
  await page.waitForSelector('#key-dialog:not([hidden])', { timeout: WAIT_MS });
  await page.fill('#key-input', value);
  await page.click('#key-form button[type=submit]');
}

/** Waits until every chart has drawn points and the table lists every model. */
async function waitForData() {
  await page.waitForFunction(
    (models) => {
      if (document.body.dataset.state !== 'ready') return false;
      const charts = [...document.querySelectorAll('figure.chart')];
      const drawn = charts.length > 0 && charts.every((chart) => Number(chart.dataset.points) > 0);
      const listed = new Set([...document.querySelectorAll('#models tbody tr')].map((tr) => tr.dataset.model));
      return drawn && models.every((model) => listed.has(model));
    },
    expectedModels,
    { timeout: WAIT_MS, polling: 250 },
  );
}

try {
  page = await context.newPage();
  const consoleErrors = [];
  page.on('console', (message) => {
    // The page probes the API without a key first: the browser logs that 401 itself.
    const expected = message.text().includes('status of 401');
    if (message.type() === 'error' && !expected) consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => consoleErrors.push(String(error)));
  await page.goto(url);

  if (noPrompt) {
    await page.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: WAIT_MS });
    check(await page.isHidden('#key-dialog'), 'no key configured: the page does not ask for one');
  } else {
    await enterKey(key);
  }
  await waitForData();
  const charts = await page.$$eval('figure.chart', (figures) =>
    figures.map((figure) => ({ id: figure.dataset.chart, points: Number(figure.dataset.points) })));
  check(charts.length >= 10, `${charts.length} charts on the page`);
  for (const chart of charts) check(chart.points > 0, `chart ${chart.id} draws ${chart.points} points`);
  const listed = await page.$$eval('#models tbody tr', (rows) => rows.map((row) => row.dataset.model));
  check(
    expectedModels.every((model) => listed.includes(model)) && listed.length === expectedModels.length,
    `the models table lists the demo's models: ${listed.join(', ')}`,
  );
  const canvases = await page.$$eval('figure.chart canvas', (nodes) => nodes.length);
  check(canvases >= charts.length, `${canvases} chart canvases drawn by uPlot`);
  await screenshot('overview');

  // A refresh updates the charts in place: the same canvases, no blank frame.
  await page.evaluate(() => { window.chartCanvases = [...document.querySelectorAll('figure.chart canvas')]; });
  const refreshesBefore = Number(await page.getAttribute('body', 'data-refreshes'));
  await page.click('#refresh-now');
  await page.waitForFunction((n) => Number(document.body.dataset.refreshes) > n, refreshesBefore, { timeout: WAIT_MS });
  const inPlace = await page.evaluate(() => {
    const now = [...document.querySelectorAll('figure.chart canvas')];
    return now.length === window.chartCanvases.length && now.every((canvas, i) => canvas === window.chartCanvases[i]);
  });
  check(inPlace, 'a refresh redraws the same chart canvases in place');

  // Sorting by p99, then by error rate: the rows follow.
  for (const [column, keyName] of [['p99', 'p99'], ['error_rate', 'error_rate'], ['cost_usd', 'cost_usd']]) {
    await page.click(`#models th[data-key="${column}"]`);
    await page.waitForFunction((k) => document.querySelector('#models').dataset.sortKey === k, keyName);
    const values = await page.$$eval('#models tbody tr', (rows) => rows.map((row) => Number(row.dataset.sortValue)));
    const order = await page.$eval('#models', (table) => table.dataset.sortOrder);
    const sorted = values.every((value, i) => i === 0
      || (order === 'descending' ? values[i - 1] >= value : values[i - 1] <= value));
    check(sorted, `sorted by ${column} (${order}): ${values.join(', ')}`);
  }

  // Drill-down: the first model's recent failed calls, then its slow ones.
  const model = listed[0];
  await page.click(`#models tbody tr[data-model="${model}"]`);
  await page.waitForFunction(
    (m) => {
      const section = document.querySelector('#drilldown');
      return !section.hidden && section.dataset.model === m && section.dataset.kind === 'failed';
    },
    model,
    { timeout: WAIT_MS },
  );
  const failed = await page.$$eval('#events tbody tr', (rows) => rows.map((row) => row.dataset.status));
  check(failed.length > 0 && failed.every((status) => status === 'error'), `drill-down lists ${failed.length} failed calls of ${model}`);
  const focused = await page.$eval('figure.chart[data-chart="request_rate"]', (figure) => Number(figure.dataset.series));
  check(focused === 1, `charts focus on ${model} alone (${focused} series)`);
  await page.click('#drilldown .tabs button[data-kind="slow"]');
  await page.waitForFunction(() => document.querySelector('#drilldown').dataset.kind === 'slow', null, { timeout: WAIT_MS });
  const slow = await page.$$eval('#events tbody tr', (rows) => rows.length);
  check(slow > 0, `drill-down lists ${slow} slow calls of ${model}`);
  await screenshot('drilldown');
  await page.click('#clear-focus');
  await page.waitForFunction(() => document.querySelector('#focus').hidden);

  const anomalies = await page.$eval('#anomalies', (table) => Number(table.dataset.count ?? 0));
  const marks = await page.$$eval('figure.chart', (figures) =>
    figures.reduce((sum, figure) => sum + Number(figure.dataset.anomalyMarks), 0));
  console.log(`info: ${anomalies} anomalies listed, ${marks} marks on the charts`);
  check(anomalies === 0 || marks > 0, 'listed anomalies are marked on the charts');

  // A reload keeps the key: no second prompt.
  await page.reload();
  await page.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: WAIT_MS });
  check(await page.isHidden('#key-dialog'), 'after a reload the page does not ask again');

  if (otherKey) {
    // Another tenant at the same browser: forget the key, enter theirs.
    await page.click('#forget-key');
    await enterKey(otherKey);
    await page.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: WAIT_MS });
    const seen = await page.$$eval('#models tbody tr', (rows) => rows.map((row) => row.dataset.model));
    check(seen.length === 0, `the other tenant's key sees no models (saw: ${seen.join(', ') || 'none'})`);
    const text = await page.textContent('main');
    check(expectedModels.every((m) => !text.includes(m)), "no first-tenant model name appears on the other tenant's page");
    const points = await page.$$eval('figure.chart', (figures) =>
      figures.reduce((sum, figure) => sum + Number(figure.dataset.points), 0));
    check(points === 0, `the other tenant's charts draw no points (${points})`);
    await screenshot('other-tenant');
  }

  check(outside.length === 0, `nothing loaded from outside ${origin} (${outside.join(', ') || 'none'})`);
  check(consoleErrors.length === 0, `no errors in the browser console${consoleErrors.length ? `: ${consoleErrors.join(' | ')}` : ''}`);
  console.log('browser checks passed');
} catch (error) {
  console.error(`FAILED: ${error.message}`);
  await screenshot('failure').catch(() => {});
  process.exitCode = 1;
} finally {
  await context.close();
  await rm(profile, { recursive: true, force: true });
}
