// Drives the dashboard in headless Chromium (the system's, through playwright-core;
// no browser is downloaded) and checks what a person would see.
//
//   node test/browser.mjs --url URL --artifacts DIR --expect-models a,b,c
//        [--key KEY --other-key KEY]     keys configured: the page asks for a key once,
//                                        the other tenant's key sees none of the models
//        [--no-prompt]                   no keys configured: the page never asks
//        [--expect-incidents JSON]       {from, to, incidents: [{model, state, start, end,
//                                        detectors, peak_detector, anomalies, calls_kind,
//                                        calls: [{id, latency_ms, failed, input, output}]}],
//                                        seeded_models}, newest first: what the incidents
//                                        table shows over [from, to), and the calls each
//                                        one's Calls link lists, slowest first
//        [--no-payload-key KEY]          a key of the demo's tenant that `[payloads] readers`
//                                        leaves out: it gets an incident's calls without payloads
//        [--tenant T]                    the demo's tenant, as the usage view must name it
//                                        (default: `demo` with keys, else `default`)
//        [--expect-payloads]             payload capture is on: a call of the drill-down and
//                                        of a group's slowest shows its payload on click
//                                        (else no call has one)
//        [--expect-budgets]              budgets are configured: the usage view draws the
//                                        tenant's bars (else it says there are none)
//   env CHROMIUM (default /usr/bin/chromium)
//
// Prints one line per check; exits 1 on the first failure, with a screenshot of it.
import { mkdtemp, mkdir, readFile, rm } from 'node:fs/promises';
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
const expectedIncidents = option('--expect-incidents') ? JSON.parse(option('--expect-incidents')) : null;
// The incidents' calls, posted with a key of their own, count in the usage ledger too.
const seededModels = expectedIncidents?.seeded_models ?? [];
const usageModels = [...new Set([...expectedModels, ...seededModels])].sort();
const demoTenant = option('--tenant') ?? (noPrompt ? 'default' : 'demo');
const expectBudgets = process.argv.includes('--expect-budgets');
const expectPayloads = process.argv.includes('--expect-payloads');
const noPayloadKey = option('--no-payload-key');
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
async function screenshot(name, target = page) {
  if (!target) return;
  const path = join(artifacts, `${label}-${name}.png`);
  await target.screenshot({ path, fullPage: true });
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

const MINUTE_MS = 60_000;
/** The metric block's fields as the breakdown table shows them, read from an answer. */
const BLOCK_FIELDS = {
  requests: (block) => block.requests,
  errors: (block) => block.errors,
  error_rate: (block) => block.error_rate,
  p50: (block) => block.latency_ms.p50,
  p95: (block) => block.latency_ms.p95,
  p99: (block) => block.latency_ms.p99,
  ttft_p95: (block) => block.ttft_ms.p95,
  input_tokens: (block) => block.input_tokens,
  output_tokens: (block) => block.output_tokens,
  cost_usd: (block) => block.cost_usd,
  unique_users: (block) => block.unique_users,
};
let breakdownPage = null;
let incidentsPage = null;
let usagePage = null;

/** GET an API path from inside `target`, with the key the page keeps; `params` as pairs. */
async function api(target, path, params = []) {
  return target.evaluate(async ({ path: route, params: pairs }) => {
    const address = new URL(route, window.location.href);
    for (const [name, value] of pairs) address.searchParams.append(name, String(value));
    const stored = window.localStorage.getItem('ais.apiKey');
    const headers = stored ? { Authorization: `Bearer ${stored}` } : {};
    const response = await fetch(address, { headers, cache: 'no-store' });
    return { status: response.status, body: await response.json() };
  }, { path, params });
}

/**
 * Waits until an event at or after `since` is readable: the demo sends in time order
 * through one log, so every event before `since` is then in the store too.
 */
async function waitForEventsSince(target, since) {
  await target.evaluate(async ({ since: from, patience }) => {
    const deadline = Date.now() + patience;
    const stored = window.localStorage.getItem('ais.apiKey');
    const headers = stored ? { Authorization: `Bearer ${stored}` } : {};
    for (;;) {
      const response = await fetch(`v1/events?from=${from}&limit=1`, { headers, cache: 'no-store' });
      const body = await response.json();
      if (response.ok && body.events.length > 0) return;
      if (Date.now() > deadline) throw new Error(`no event at or after ${from} within ${patience} ms`);
      await new Promise((resolve) => { setTimeout(resolve, 250); });
    }
  }, { since, patience: WAIT_MS });
}

/** Waits until the page shows what its URL says (a refresh begun after the last change). */
async function waitForView(target) {
  await target.waitForFunction(
    () => document.body.dataset.state === 'ready' && document.body.dataset.shown === window.location.hash.slice(1),
    null,
    { timeout: WAIT_MS, polling: 250 },
  );
}

/**
 * Waits until the calls section lists what `want` names (`source`, and the group's
 * `key` or the `incident`'s id) as read for the page's current view.
 */
async function waitForCalls(target, want) {
  try {
    await waitForView(target);
    await target.waitForFunction(
      (wanted) => {
        const section = document.querySelector('#slowest');
        return !section.hidden && section.dataset.state === 'ready' && section.dataset.source === wanted.source
          && (wanted.key === undefined || section.dataset.key === wanted.key)
          && (wanted.incident === undefined || section.dataset.incident === wanted.incident);
      },
      want,
      { timeout: WAIT_MS, polling: 250 },
    );
  } catch (error) {
    // Say what the page showed instead: the section, its message, the page's status.
    const shown = await target.evaluate(() => {
      const section = document.querySelector('#slowest');
      const message = document.querySelector('#slowest-error');
      return {
        page: document.body.dataset.state,
        status: document.querySelector('#status').textContent,
        hidden: section.hidden,
        ...section.dataset,
        error: message.hidden ? null : message.textContent,
      };
    });
    throw new Error(`the calls section did not list ${JSON.stringify(want)}: ${JSON.stringify(shown)} (${error.message})`);
  }
}

/** The calls the calls section lists, in its order, as the rows carry them. */
async function listedCalls(target) {
  return target.$$eval('#slowest-events tbody tr.call', (trs) => trs.map((tr) => JSON.parse(tr.dataset.event)));
}

/**
 * Clicks the `index`th call of the calls section; returns the call's id, whether it
 * offers a payload, whether the payload row under it is open, and its text.
 */
async function openCall(target, index) {
  const row = target.locator('#slowest-events tbody tr.call').nth(index);
  await row.click();
  return row.evaluate((tr) => {
    const detail = tr.nextElementSibling?.classList.contains('payload') ? tr.nextElementSibling : null;
    return {
      id: JSON.parse(tr.dataset.event).event_id,
      user: JSON.parse(tr.dataset.event).user_id ?? null,
      hasPayload: tr.classList.contains('has-payload'),
      open: Boolean(detail && !detail.hidden),
      input: detail?.querySelector('pre.input')?.textContent ?? null,
      output: detail?.querySelector('pre.output')?.textContent ?? null,
    };
  });
}

/** The breakdown table as numbers: each row's kind, key and fields, and its sparklines. */
async function breakdownRows(target) {
  return target.$$eval('#breakdown tbody tr, #breakdown tfoot tr', (rows) => rows.map((row) => ({
    kind: row.dataset.kind,
    key: row.dataset.key,
    values: Object.fromEntries([...row.querySelectorAll('td[data-field]')]
      .map((td) => [td.dataset.field, td.dataset.value === '' ? null : Number(td.dataset.value)])),
    sparks: Object.fromEntries([...row.querySelectorAll('svg.spark')]
      .map((svg) => [svg.dataset.metric, { points: Number(svg.dataset.points), sum: Number(svg.dataset.sum) }])),
  })));
}

/** Every number of the table equals the breakdown `answer`, groups in its order. */
function checkTableEquals(rows, answer, by, what) {
  const groups = rows.filter((row) => row.kind === 'group');
  const keys = answer.groups.map((group) => JSON.stringify(group.key[by] ?? null));
  check(
    JSON.stringify(groups.map((row) => row.key)) === JSON.stringify(keys),
    `${what}: the table lists the API's groups in its order: ${keys.join(', ')}`,
  );
  const expected = [
    ...answer.groups.map((group) => ['group', group]),
    ...(answer.other ? [['other', answer.other]] : []),
    ['total', answer.total],
  ];
  check(rows.length === expected.length, `${what}: ${rows.length} rows = groups + ${answer.other ? 'other + ' : ''}total`);
  const mismatches = [];
  expected.forEach(([kind, block], i) => {
    if (rows[i].kind !== kind) mismatches.push(`row ${i} is ${rows[i].kind}, not ${kind}`);
    for (const [field, read] of Object.entries(BLOCK_FIELDS)) {
      const want = read(block) ?? null;
      if (rows[i].values[field] !== want) mismatches.push(`row ${i} ${field}: ${rows[i].values[field]} != ${want}`);
    }
  });
  check(mismatches.length === 0, `${what}: every number equals /v1/query/breakdown${mismatches.length ? `: ${mismatches.join('; ')}` : ''}`);
}

/** The models table as {model: requests}. */
async function modelsShown(target) {
  const rows = await target.$$eval('#models tbody tr', (trs) => trs.map((tr) => [tr.dataset.model, Number(tr.dataset.requests)]));
  return Object.fromEntries(rows);
}

function summaryRequests(summary) {
  return Object.fromEntries(summary.models.map((entry) => [entry.model, entry.requests]));
}

/** The filters of the page's URL fragment. */
function urlFilters(target) {
  return new URLSearchParams(new URL(target.url()).hash.slice(1)).getAll('filter');
}

/**
 * The breakdown view, in a page of its own over a past range (fixed numbers while the
 * demo keeps sending): by region, sorted, a group turned into a filter chip that the
 * whole page follows, the view restored from its URL, a group's slowest calls, a group
 * without the field, and the server's message for a refused dimension.
 */
async function checkBreakdown() {
  const minute = Math.floor(Date.now() / MINUTE_MS) * MINUTE_MS;
  const to = minute - 2 * MINUTE_MS;
  const from = to - 30 * MINUTE_MS;
  await waitForEventsSince(page, to);

  const view = await context.newPage();
  breakdownPage = view;
  const errors = [];
  let expectRefusal = false;
  view.on('console', (message) => {
    const refused = expectRefusal && message.text().includes('status of 400');
    if (message.type() === 'error' && !refused) errors.push(message.text());
  });
  view.on('pageerror', (error) => errors.push(String(error)));
  const requested = [];
  view.on('request', (request) => {
    const address = new URL(request.url());
    if (address.pathname.startsWith('/v1/')) requested.push(address);
  });
  const range = [['from', from], ['to', to]];

  await view.goto(`${url}#range=custom&from=${from}&to=${to}`);
  await waitForView(view);
  // No auto-refresh: every request from here on follows a change the test made.
  await view.selectOption('#refresh', '0');
  check(await view.isHidden('#breakdown'), 'breakdown: no table before a dimension is picked');

  await view.selectOption('#breakdown-by', 'region');
  await waitForView(view);
  const shownRange = await view.$eval('#breakdown', (table) => [table.dataset.by, Number(table.dataset.from), Number(table.dataset.to)]);
  check(shownRange[0] === 'region' && shownRange[1] === from && shownRange[2] === to, `breakdown by region over [${from}, ${to})`);
  const byRegion = await api(view, 'v1/query/breakdown', [['by', 'region'], ...range]);
  check(byRegion.status === 200, `/v1/query/breakdown?by=region answers 200 (${byRegion.status})`);
  check(byRegion.body.groups.length >= 2, `the demo's traffic has ${byRegion.body.groups.length} regions`);
  let rows = await breakdownRows(view);
  checkTableEquals(rows, byRegion.body, 'region', 'by region');
  const groupRows = rows.filter((row) => row.kind === 'group');
  check(
    groupRows.every((row) => row.sparks.requests && row.sparks.requests.sum === row.values.requests),
    `each region's requests sparkline adds up to its requests (${groupRows.map((row) => row.sparks.requests?.sum).join(', ')})`,
  );
  check(
    groupRows.every((row) => row.sparks.latency_p95 && row.sparks.latency_p95.points > 0),
    'each region has a p95 sparkline with points',
  );
  check(rows.every((row) => row.kind === 'group' || Object.keys(row.sparks).length === 0), 'the other and total rows carry no sparkline');

  // Sorting: the server ranks by the clicked column, descending first, then ascending.
  await view.click('#breakdown th[data-order="latency_ms.p95"]');
  await waitForView(view);
  const byP95 = await api(view, 'v1/query/breakdown', [['by', 'region'], ...range, ['order', 'latency_ms.p95']]);
  rows = await breakdownRows(view);
  checkTableEquals(rows, byP95.body, 'region', 'sorted by p95, descending');
  let p95s = rows.filter((row) => row.kind === 'group').map((row) => row.values.p95);
  check(p95s.every((value, i) => i === 0 || p95s[i - 1] >= value), `rows by p95 descending: ${p95s.join(', ')}`);
  await view.click('#breakdown th[data-order="latency_ms.p95"]');
  await waitForView(view);
  const byP95Ascending = await api(view, 'v1/query/breakdown', [['by', 'region'], ...range, ['order', 'latency_ms.p95'], ['asc', 'true']]);
  rows = await breakdownRows(view);
  checkTableEquals(rows, byP95Ascending.body, 'region', 'sorted by p95, ascending');
  p95s = rows.filter((row) => row.kind === 'group').map((row) => row.values.p95);
  check(p95s.every((value, i) => i === 0 || p95s[i - 1] <= value), `rows by p95 ascending: ${p95s.join(', ')}`);
  const sortShown = await view.$eval('#breakdown', (table) => [table.dataset.order, table.dataset.sortOrder]);
  check(sortShown[0] === 'latency_ms.p95' && sortShown[1] === 'ascending', `the header shows the sort: ${sortShown.join(' ')}`);

  // A click on a group: a chip, the URL, and every chart and table filtered by it.
  const region = JSON.parse(rows.find((row) => row.kind === 'group').key);
  check(/^[A-Za-z0-9_-]+$/.test(region), `the region ${region} needs no escaping`);
  const regionFilter = `region:${region}`;
  const regionRequests = rows.find((row) => row.kind === 'group').values.requests;
  const mark = requested.length;
  await view.locator('#breakdown tbody tr.group').first().locator('td.key').click();
  await waitForView(view);
  const chips = await view.$$eval('#chips .chip', (nodes) => nodes.map((node) => node.dataset.filter));
  check(JSON.stringify(chips) === JSON.stringify([regionFilter]) && await view.isVisible('#chips'), `a chip appears: ${chips.join(', ')}`);
  check(JSON.stringify(urlFilters(view)) === JSON.stringify([regionFilter]), `the URL carries the filter: ${new URL(view.url()).hash}`);
  const filteredSummary = await api(view, 'v1/query/summary', [...range, ['filter', regionFilter]]);
  check(filteredSummary.status === 200, `/v1/query/summary?filter=${regionFilter} answers 200`);
  const wanted = summaryRequests(filteredSummary.body);
  let shownModels = await modelsShown(view);
  check(JSON.stringify(shownModels, Object.keys(shownModels).sort()) === JSON.stringify(wanted, Object.keys(wanted).sort()),
    `the models table equals the filtered summary: ${JSON.stringify(shownModels)}`);
  const filteredTotal = Object.values(wanted).reduce((sum, n) => sum + n, 0);
  check(filteredTotal === regionRequests, `the filtered summary counts the group's ${regionRequests} requests (${filteredTotal})`);
  const after = requested.slice(mark).filter((address) => /\/v1\/(query\/(summary|timeseries|breakdown)|events)$/.test(address.pathname));
  const unfiltered = after.filter((address) => !address.searchParams.getAll('filter').includes(regionFilter));
  const charted = after.filter((address) => address.pathname.endsWith('/timeseries')).length;
  check(after.length > 0 && charted >= 10 && unfiltered.length === 0,
    `every summary, chart and breakdown request since carries the filter (${after.length} requests${unfiltered.length ? `; without: ${unfiltered.map(String).join(' ')}` : ''})`);

  // The URL alone restores the view: dimension, sort, filter.
  await view.reload();
  await waitForView(view);
  const restored = await view.$$eval('#chips .chip', (nodes) => nodes.map((node) => node.dataset.filter));
  check(JSON.stringify(restored) === JSON.stringify([regionFilter]), `after a reload the chip is back: ${restored.join(', ')}`);
  check(await view.inputValue('#breakdown-by') === 'region', 'after a reload the dimension is region again');
  const restoredSort = await view.$eval('#breakdown', (table) => [table.dataset.by, table.dataset.order, table.dataset.sortOrder]);
  check(restoredSort.join(' ') === 'region latency_ms.p95 ascending', `after a reload the table is ${restoredSort.join(' ')}`);
  shownModels = await modelsShown(view);
  check(JSON.stringify(shownModels, Object.keys(shownModels).sort()) === JSON.stringify(wanted, Object.keys(wanted).sort()),
    'after a reload the models table is still filtered');

  // The same view from a query string, as a link written by hand would give it.
  const query = new URLSearchParams([
    ['range', 'custom'], ['from', from], ['to', to], ['by', 'region'],
    ['order', 'latency_ms.p95'], ['asc', '1'], ['filter', regionFilter],
  ]);
  await view.goto(`${url}?${query}`);
  await waitForView(view);
  const fromQuery = await view.$$eval('#chips .chip', (nodes) => nodes.map((node) => node.dataset.filter));
  const queryTable = await view.$eval('#breakdown', (table) => [table.dataset.by, table.dataset.order, table.dataset.sortOrder]);
  check(JSON.stringify(fromQuery) === JSON.stringify([regionFilter]) && queryTable.join(' ') === 'region latency_ms.p95 ascending',
    `a query string opens the same view (${queryTable.join(' ')}, ${fromQuery.join(', ')}) and moves into the fragment: ${new URL(view.url()).hash}`);
  check(new URL(view.url()).search === '' && JSON.stringify(urlFilters(view)) === JSON.stringify([regionFilter]), 'the query string is gone from the URL');
  shownModels = await modelsShown(view);
  check(JSON.stringify(shownModels, Object.keys(shownModels).sort()) === JSON.stringify(wanted, Object.keys(wanted).sort()),
    'opened from the query string, the models table is filtered');
  await view.selectOption('#refresh', '0');

  // Another dimension under the chip: the models of that region.
  await view.selectOption('#breakdown-by', 'model');
  await waitForView(view);
  const byModel = await api(view, 'v1/query/breakdown', [['by', 'model'], ...range, ['order', 'latency_ms.p95'], ['asc', 'true'], ['filter', regionFilter]]);
  rows = await breakdownRows(view);
  checkTableEquals(rows, byModel.body, 'model', `by model within ${regionFilter}`);

  // A group's slowest calls: every one in the region and of the model, slowest first.
  const modelRow = rows.find((row) => row.kind === 'group');
  const model = JSON.parse(modelRow.key);
  await view.locator('#breakdown tbody tr.group').first().locator('button.slowest').click();
  await waitForCalls(view, { source: 'group', key: modelRow.key });
  const slowest = await listedCalls(view);
  check(slowest.length > 0, `slowest calls of ${model} in ${region}: ${slowest.length} listed`);
  check(slowest.every((event) => event.region === region && event.model === model),
    `every listed call is in ${region} and of ${model}`);
  const latencies = slowest.map((event) => event.latency_ms);
  check(latencies.every((value, i) => i === 0 || latencies[i - 1] >= value), `slowest first: ${latencies.slice(0, 5).join(', ')}, …`);
  check(latencies.every((value) => value >= Math.floor(modelRow.values.p95)), `every listed call is at or above the group's p95 (${modelRow.values.p95} ms)`);
  check(slowest.every((event) => Date.parse(event.timestamp) >= from && Date.parse(event.timestamp) < to), 'every listed call is in the range');

  // The list is part of the view: in the URL, and back after a reload.
  const slowestIds = slowest.map((event) => event.event_id);
  const named = new URLSearchParams(new URL(view.url()).hash.slice(1)).get('slowest');
  check(named === modelRow.key, `the URL names the group whose calls are listed: slowest=${named}`);
  await view.reload();
  await waitForCalls(view, { source: 'group', key: modelRow.key });
  await view.selectOption('#refresh', '0');
  const reloaded = (await listedCalls(view)).map((event) => event.event_id);
  check(JSON.stringify(reloaded) === JSON.stringify(slowestIds), `after a reload the same ${reloaded.length} calls are listed`);

  // A click shows the call's payload as stored: the API's own answer for that call,
  // whose input names the call's user (the demo's prompts do). Without capture no call
  // offers one.
  const payloadRows = await view.$$eval('#slowest-events tbody tr.payload', (trs) => trs.filter((tr) => tr.hidden).length);
  if (expectPayloads) {
    check(payloadRows === slowest.length, `each of the ${slowest.length} listed calls carries a payload, hidden until clicked (${payloadRows})`);
    const shown = await openCall(view, 0);
    const call = slowest[0];
    const minuteOf = Math.floor(Date.parse(call.timestamp) / MINUTE_MS) * MINUTE_MS;
    const stored = await api(view, 'v1/events', [
      ['from', minuteOf], ['to', minuteOf + MINUTE_MS], ['model', call.model],
      ['min_latency_ms', Math.floor(call.latency_ms)], ['include', 'payloads'], ['limit', 1000],
    ]);
    const own = stored.body.events.find((event) => event.event_id === call.event_id);
    check(own && typeof own.input === 'string' && own.input.endsWith(` from ${call.user_id}`),
      `the API keeps the slowest call's payload, naming its user ${call.user_id}`);
    // A failed call has no answer: the page says none was kept.
    const output = own.output ?? '(none kept)';
    check(shown.id === call.event_id && shown.open && shown.input === own.input && shown.output === output,
      `a click on the slowest call shows its input and output: ${JSON.stringify(shown)}`);
  } else {
    check(payloadRows === 0 && !(await openCall(view, 0)).hasPayload, `capture off: no listed call carries a payload (${payloadRows})`);
  }
  await screenshot('breakdown', view);

  // The group without the field: `error_type` is missing on successful calls.
  await view.selectOption('#breakdown-by', 'error_type');
  await waitForView(view);
  const byErrorType = await api(view, 'v1/query/breakdown', [['by', 'error_type'], ...range, ['order', 'latency_ms.p95'], ['asc', 'true'], ['filter', regionFilter]]);
  rows = await breakdownRows(view);
  checkTableEquals(rows, byErrorType.body, 'error_type', `by error_type within ${regionFilter}`);
  check(await view.isHidden('#slowest'), 'a new dimension closes the slowest calls');
  await view.click('#breakdown tbody tr.group[data-key="null"] td.key');
  await waitForView(view);
  const twoChips = await view.$$eval('#chips .chip', (nodes) => nodes.map((node) => node.dataset.filter));
  check(JSON.stringify(twoChips) === JSON.stringify([regionFilter, 'error_type:null']), `the missing field is the chip error_type:null: ${twoChips.join(', ')}`);
  const okOnly = await api(view, 'v1/query/summary', [...range, ['filter', regionFilter], ['filter', 'error_type:null']]);
  const wantedOk = summaryRequests(okOnly.body);
  shownModels = await modelsShown(view);
  check(JSON.stringify(shownModels, Object.keys(shownModels).sort()) === JSON.stringify(wantedOk, Object.keys(wantedOk).sort()),
    `the models table equals the summary under both filters: ${JSON.stringify(shownModels)}`);
  const errorRates = await view.$$eval('#models tbody tr td:nth-child(4)', (cells) => cells.map((td) => td.textContent));
  check(errorRates.every((text) => text === '0%'), `without an error type no call failed: ${errorRates.join(', ')}`);

  // Many values: the top 10 users and the rest merged into "other".
  await view.click('#chips .chip[data-filter="error_type:null"] button');
  await view.selectOption('#breakdown-by', 'user_id');
  await view.selectOption('#breakdown-top', '10');
  await waitForView(view);
  check(JSON.stringify(urlFilters(view)) === JSON.stringify([regionFilter]), 'a removed chip leaves the URL');
  const byUser = await api(view, 'v1/query/breakdown', [['by', 'user_id'], ...range, ['top', 10], ['order', 'latency_ms.p95'], ['asc', 'true'], ['filter', regionFilter]]);
  check(byUser.body.groups.length === 10 && byUser.body.other !== null, `more than 10 users in ${region}: an "other" group`);
  rows = await breakdownRows(view);
  checkTableEquals(rows, byUser.body, 'user_id', `top 10 users within ${regionFilter}`);
  const otherShown = await view.$eval('#breakdown tfoot tr.other', (tr) => getComputedStyle(tr.cells[0]).fontStyle);
  check(otherShown === 'italic', 'the other row is set apart from the groups');
  // The key column sorts the top values by requests on the page, A first.
  await view.click('#breakdown th[data-order="key"]');
  await waitForView(view);
  const byRequests = await api(view, 'v1/query/breakdown', [['by', 'user_id'], ...range, ['top', 10], ['filter', regionFilter]]);
  const keysSorted = byRequests.body.groups.map((group) => group.key.user_id).sort((a, b) => a.localeCompare(b));
  rows = await breakdownRows(view);
  const keysShown = rows.filter((row) => row.kind === 'group').map((row) => JSON.parse(row.key));
  check(JSON.stringify(keysShown) === JSON.stringify(keysSorted), `sorted by key: the top 10 by requests, A first: ${keysShown.join(', ')}`);

  // Removing the last chip: the page follows.
  await view.click(`#chips .chip[data-filter="${regionFilter}"] button`);
  await waitForView(view);
  check(urlFilters(view).length === 0 && await view.isHidden('#chips'), 'without chips the URL carries no filter');
  const unfilteredSummary = await api(view, 'v1/query/summary', range);
  const wantedAll = summaryRequests(unfilteredSummary.body);
  shownModels = await modelsShown(view);
  check(JSON.stringify(shownModels, Object.keys(shownModels).sort()) === JSON.stringify(wantedAll, Object.keys(wantedAll).sort()),
    `the models table is the whole range's summary again: ${JSON.stringify(shownModels)}`);

  // A dimension the server refuses: its message in place of the table.
  // From here on the browser logs the refusals (the test's and the page's) as errors.
  expectRefusal = true;
  const badKey = 'k'.repeat(65);
  const refusal = await api(view, 'v1/query/breakdown', [['by', `attr.${badKey}`], ...range]);
  check(refusal.status === 400 && refusal.body.error, `an attribute key of 65 bytes is refused: ${refusal.body.error}`);
  await view.selectOption('#breakdown-by', 'attr');
  await view.fill('#breakdown-attr', badKey);
  await view.press('#breakdown-attr', 'Enter');
  await waitForView(view);
  const shownError = await view.textContent('#breakdown-error');
  check(await view.isVisible('#breakdown-error') && shownError.includes(refusal.body.error),
    `the server's message is shown: ${shownError}`);
  check(await view.isHidden('#breakdown'), 'no blank table beside the message');

  expectRefusal = false;
  if (noPrompt) await checkEscapes(view);

  check(errors.length === 0, `no errors in the breakdown page's console${errors.length ? `: ${errors.join(' | ')}` : ''}`);
  await view.close();
  breakdownPage = null;
}

/** The incidents table: one entry per incident row, in the page's order. */
async function incidentRows(target) {
  return target.$$eval('#incidents tbody tr.incident', (rows) => rows.map((row) => ({
    id: row.dataset.id,
    model: row.dataset.model,
    state: row.dataset.state,
    start: Number(row.dataset.start),
    detectors: row.dataset.detectors.split(',').sort(),
    peak_detector: row.dataset.peakDetector,
    anomalies: Number(row.dataset.anomalies),
    end: row.querySelector('td.end').textContent,
  })));
}

/** The incidents table lists exactly `expected` (newest first), field by field. */
function checkIncidentRows(rows, expected, what) {
  check(rows.length === expected.length, `${what}: ${rows.length} incident rows, ${expected.length} expected`);
  const mismatches = [];
  expected.forEach((want, i) => {
    for (const field of ['model', 'state', 'start', 'detectors', 'peak_detector', 'anomalies']) {
      if (JSON.stringify(rows[i][field]) !== JSON.stringify(want[field])) {
        mismatches.push(`row ${i} ${field}: ${JSON.stringify(rows[i][field])} != ${JSON.stringify(want[field])}`);
      }
    }
    if ((rows[i].end === 'ongoing') !== (want.state === 'firing')) mismatches.push(`row ${i} ends "${rows[i].end}" while ${want.state}`);
  });
  check(mismatches.length === 0, `${what}: models, states, starts, detectors, peaks and anomalies as seeded${mismatches.length ? `: ${mismatches.join('; ')}` : ''}`);
}

/**
 * The incidents of anomalies written into the store before the server started, over
 * their past range: one row each, their anomalies behind a button, a link that narrows
 * the page to one, and the server's `truncated` said on the page.
 */
async function checkIncidents({ from, to, incidents }) {
  const view = await context.newPage();
  incidentsPage = view;
  const errors = [];
  let expectForbidden = false;
  view.on('console', (message) => {
    // A key left out of `[payloads] readers` is refused payloads: the browser logs it.
    const forbidden = expectForbidden && message.text().includes('status of 403');
    if (message.type() === 'error' && !forbidden) errors.push(message.text());
  });
  view.on('pageerror', (error) => errors.push(String(error)));
  await view.goto(`${url}#range=custom&from=${from}&to=${to}`);
  await waitForView(view);
  await view.selectOption('#refresh', '0');
  checkIncidentRows(await incidentRows(view), incidents, 'incidents');
  const firing = incidents.filter((incident) => incident.state === 'firing').length;
  const counted = await view.textContent('#incident-count');
  check(counted === `${incidents.length} (${firing} firing)`, `the heading counts them: ${counted}`);
  check(await view.isHidden('#incidents-truncated') && await view.isHidden('#incidents-empty'), 'neither "truncated" nor "no incidents" is shown');
  const headers = await view.$$eval('#incidents > thead th', (cells) => cells.map((th) => th.getAttribute('scope')));
  check(headers.every((scope) => scope === 'col'), `the table's ${headers.length} headers are column headers`);

  // A row's anomalies: closed, opened by its button, still open after a refresh.
  const widest = incidents.reduce((best, incident, i) => (incident.anomalies > incidents[best].anomalies ? i : best), 0);
  const row = view.locator('#incidents tbody tr.incident').nth(widest);
  const members = view.locator('#incidents tbody tr.members').nth(widest);
  check(await members.isHidden(), 'an incident\'s anomalies are hidden at first');
  await row.locator('button.expand').click();
  const listed = () => members.locator('tr.anomaly').evaluateAll((trs) => trs.map((tr) => tr.dataset.detector).sort());
  const wantMembers = incidents[widest].detectors;
  check(await members.isVisible() && await row.locator('button.expand').getAttribute('aria-expanded') === 'true',
    `its button opens the anomalies of ${incidents[widest].model}`);
  check(JSON.stringify(await listed()) === JSON.stringify(wantMembers), `its anomalies are listed: ${(await listed()).join(', ')}`);
  const refreshesBefore = Number(await view.getAttribute('body', 'data-refreshes'));
  await view.click('#refresh-now');
  await view.waitForFunction((n) => Number(document.body.dataset.refreshes) > n, refreshesBefore, { timeout: WAIT_MS });
  check(await members.isVisible() && JSON.stringify(await listed()) === JSON.stringify(wantMembers), 'a refresh keeps them open');
  await screenshot('incidents', view);

  // Show: the page narrowed to the firing incident's model, from before its start.
  const shown = incidents.find((incident) => incident.state === 'firing') ?? incidents[0];
  const index = incidents.indexOf(shown);
  const link = view.locator('#incidents tbody tr.incident').nth(index).locator('a.incident-view');
  const href = await link.getAttribute('href');
  await link.click();
  await waitForView(view);
  const hash = new URLSearchParams(new URL(view.url()).hash.slice(1));
  check(new URL(view.url()).hash === new URL(href, view.url()).hash, `Show goes where its link points: ${href}`);
  check(hash.get('model') === shown.model && hash.get('range') === 'custom'
    && Number(hash.get('from')) < shown.start && Number(hash.get('to')) > shown.start,
  `Show narrows the page to ${shown.model} around ${shown.start}: ${hash}`);
  check(await view.textContent('#focus-model') === shown.model && await view.inputValue('#range') === 'custom', 'the focus and the range controls follow');
  const narrowed = incidents.filter((incident) => incident.model === shown.model
    && incident.start < Number(hash.get('to')));
  checkIncidentRows(await incidentRows(view), narrowed, `incidents of ${shown.model}`);

  // The server cut its read short: the page says so.
  const incidentsApi = (address) => address.pathname.endsWith('/v1/incidents');
  await view.route(incidentsApi, async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    await route.fulfill({ response, json: { ...body, truncated: true } });
  });
  await view.click('#refresh-now');
  await view.waitForFunction(() => document.querySelector('#incidents').dataset.truncated === 'true', null, { timeout: WAIT_MS });
  check(await view.isVisible('#incidents-truncated'), 'a truncated answer is said above the table');
  await view.unroute(incidentsApi);

  // Calls: each incident's link narrows the page to it and lists the calls behind it.
  const rangeUrl = `${url}#range=custom&from=${from}&to=${to}`;
  for (const incident of incidents) await checkIncidentCalls(view, rangeUrl, incident);

  // The list is part of the view: a reload lists the same calls.
  const last = incidents[incidents.length - 1];
  const listedIds = (await listedCalls(view)).map((event) => event.event_id);
  const id = await view.$eval('#slowest', (section) => section.dataset.incident);
  await view.reload();
  await waitForCalls(view, { source: 'incident', incident: id });
  await view.selectOption('#refresh', '0');
  const reloaded = (await listedCalls(view)).map((event) => event.event_id);
  check(JSON.stringify(reloaded) === JSON.stringify(listedIds), `after a reload the incident's ${reloaded.length} calls are listed again`);

  // A key that may not read payloads gets the same calls, without them.
  if (noPayloadKey) {
    expectForbidden = true;
    const readKey = await view.evaluate((other) => {
      const stored = window.localStorage.getItem('ais.apiKey');
      window.localStorage.setItem('ais.apiKey', other);
      return stored;
    }, noPayloadKey);
    await view.reload();
    await waitForCalls(view, { source: 'incident', incident: id });
    await view.selectOption('#refresh', '0');
    const bare = await listedCalls(view);
    const offered = await view.$$eval('#slowest-events tbody tr.has-payload, #slowest-events tbody tr.payload', (trs) => trs.length);
    check(JSON.stringify(bare.map((event) => event.event_id)) === JSON.stringify(listedIds) && offered === 0,
      `a key without payload rights gets the ${last.model} incident's ${bare.length} calls, no payload offered (${offered})`);
    check(bare.every((event) => event.input === undefined && event.output === undefined), 'and no payload text reaches the page');
    await view.evaluate((stored) => window.localStorage.setItem('ais.apiKey', stored), readKey);
    expectForbidden = false;
  }

  check(errors.length === 0, `no errors in the incidents page's console${errors.length ? `: ${errors.join(' | ')}` : ''}`);
  await view.close();
  incidentsPage = null;
}

/**
 * One incident's Calls link, from the page over the seeded range: the page narrows to
 * the incident, the URL says so, and the list holds exactly the seeded calls of its
 * model in its span (its failed ones for an error rate's), slowest first, each showing
 * its payload on click, still open after a refresh.
 */
async function checkIncidentCalls(view, rangeUrl, incident) {
  const what = `the ${incident.state} incident of ${incident.model} from ${incident.start}`;
  // A new document (a change of the fragment alone would not load the page again).
  await view.goto('about:blank');
  await view.goto(rangeUrl);
  await waitForView(view);
  await view.selectOption('#refresh', '0');
  const rows = await incidentRows(view);
  const index = rows.findIndex((row) => row.model === incident.model && row.start === incident.start);
  check(index >= 0, `${what} is listed`);
  const { id } = rows[index];
  const link = view.locator('#incidents tbody tr.incident').nth(index).locator('a.incident-calls');
  const href = await link.getAttribute('href');
  await link.click();
  await waitForCalls(view, { source: 'incident', incident: id });
  const hash = new URLSearchParams(new URL(view.url()).hash.slice(1));
  check(new URL(view.url()).hash === new URL(href, view.url()).hash, `Calls goes where its link points: ${href}`);
  check(hash.get('incident') === id && hash.get('model') === incident.model && hash.get('range') === 'custom'
    && Number(hash.get('from')) < incident.start,
  `Calls narrows the page to ${incident.model} around its start and names the incident: ${hash}`);
  const kind = await view.$eval('#slowest', (section) => section.dataset.kind);
  check(kind === incident.calls_kind, `${what} (${incident.detectors.join(', ')}) lists its ${incident.calls_kind} calls (${kind})`);
  const marked = await view.$$eval('#incidents tbody tr.incident.selected', (trs) => trs.map((tr) => tr.dataset.id));
  check(JSON.stringify(marked) === JSON.stringify([id]), 'its row is marked in the table');

  const listed = await listedCalls(view);
  const ids = listed.map((event) => event.event_id);
  const want = incident.calls.map((call) => call.id);
  check(want.length > 0 && JSON.stringify(ids) === JSON.stringify(want),
    `the ${want.length} seeded ${incident.calls_kind} calls of ${incident.model} in its span, slowest first: ${ids.join(', ')}`);
  const latencies = listed.map((event) => event.latency_ms);
  check(latencies.every((value, i) => i === 0 || latencies[i - 1] >= value), `slowest first: ${latencies.join(', ')}`);
  const inSpan = (event) => {
    const at = Date.parse(event.timestamp);
    return event.model === incident.model && at >= incident.start && (incident.end === null || at < incident.end);
  };
  check(listed.every(inSpan), `every listed call is of ${incident.model} and inside [${incident.start}, ${incident.end ?? 'now'})`);
  if (incident.calls_kind === 'failed') {
    check(listed.every((event) => event.status === 'error'), 'every listed call failed');
  }

  // The slowest listed call's payload, on click, and still open after a refresh.
  const shown = await openCall(view, 0);
  const seeded = incident.calls[0];
  check(shown.id === seeded.id && shown.open && shown.input === seeded.input && shown.output === seeded.output,
    `a click shows the call's seeded input and output: ${JSON.stringify(shown)}`);
  const refreshes = Number(await view.getAttribute('body', 'data-refreshes'));
  await view.click('#refresh-now');
  await view.waitForFunction((n) => Number(document.body.dataset.refreshes) > n, refreshes, { timeout: WAIT_MS });
  const still = await view.$eval('#slowest-events tbody tr.call', (tr) => !tr.nextElementSibling.hidden);
  check(still, 'a refresh keeps the payload open');
  await screenshot(`incident-calls-${incident.model}-${incident.calls_kind}`, view);
}

/**
 * Values that need escaping in a filter (`|`, a leading `!`, `\`, the word `null`) and
 * an event without the field: each group of a breakdown becomes a chip that selects
 * exactly its own event. Needs a key that may write: the run without keys only.
 */
async function checkEscapes(view) {
  const minute = Math.floor(Date.now() / MINUTE_MS) * MINUTE_MS - 180 * MINUTE_MS;
  const cases = [
    ['a|b', 'endpoint:a\\|b'],
    ['!bang', 'endpoint:\\!bang'],
    ['null', 'endpoint:\\null'],
    ['back\\slash', 'endpoint:back\\\\slash'],
    ['plain', 'endpoint:plain'],
    [null, 'endpoint:null'],
  ];
  const events = cases.map(([endpoint], i) => ({
    event_id: `escape-check-${i}`,
    timestamp: minute + (i + 1) * 1000,
    model: 'gpt-4o',
    latency_ms: 100 + i,
    ...(endpoint === null ? {} : { endpoint }),
  }));
  const posted = await view.evaluate(async (body) => {
    const response = await fetch('v1/events', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    });
    return { status: response.status, body: await response.json() };
  }, events);
  check(posted.status === 202 && posted.body.accepted === events.length, `${events.length} events with awkward endpoints accepted`);
  await view.evaluate(async ({ from, count, patience }) => {
    const deadline = Date.now() + patience;
    for (;;) {
      const response = await fetch(`v1/events?from=${from}&to=${from + 60_000}`, { cache: 'no-store' });
      const body = await response.json();
      if (response.ok && body.events.length >= count) return;
      if (Date.now() > deadline) throw new Error(`the ${count} posted events did not become readable within ${patience} ms`);
      await new Promise((resolve) => { setTimeout(resolve, 250); });
    }
  }, { from: minute, count: events.length, patience: WAIT_MS });

  // A new document (a change of the fragment alone would not load the page again).
  await view.goto('about:blank');
  await view.goto(`${url}#range=custom&from=${minute}&to=${minute + MINUTE_MS}&by=endpoint`);
  await waitForView(view);
  await view.selectOption('#refresh', '0');
  const range = [['from', minute], ['to', minute + MINUTE_MS]];
  const answer = await api(view, 'v1/query/breakdown', [['by', 'endpoint'], ...range]);
  let rows = await breakdownRows(view);
  checkTableEquals(rows, answer.body, 'endpoint', 'awkward endpoints');
  check(answer.body.groups.length === cases.length, `${answer.body.groups.length} endpoint groups, (none) included`);
  for (const [endpoint, filter] of cases) {
    rows = await breakdownRows(view);
    const index = rows.filter((row) => row.kind === 'group').findIndex((row) => row.key === JSON.stringify(endpoint));
    check(index >= 0, `the group ${JSON.stringify(endpoint)} is listed`);
    await view.locator('#breakdown tbody tr.group').nth(index).locator('td.key').click();
    await waitForView(view);
    const chips = await view.$$eval('#chips .chip', (nodes) => nodes.map((node) => node.dataset.filter));
    check(JSON.stringify(chips) === JSON.stringify([filter]) && JSON.stringify(urlFilters(view)) === JSON.stringify([filter]),
      `the group ${JSON.stringify(endpoint)} is the chip and URL filter ${filter}`);
    const selected = await api(view, 'v1/events', [...range, ['filter', filter]]);
    const endpoints = selected.body.events.map((event) => event.endpoint ?? null);
    check(JSON.stringify(endpoints) === JSON.stringify([endpoint]), `${filter} selects exactly its event (${JSON.stringify(endpoints)})`);
    const shown = await modelsShown(view);
    check(JSON.stringify(shown) === JSON.stringify({ 'gpt-4o': 1 }), `the models table counts that one call: ${JSON.stringify(shown)}`);
    await view.click('#chips .chip button');
    await waitForView(view);
  }
}


/** The usage table as numbers: each row's kind, key and fields. */
async function usageRows(target) {
  return target.$$eval('#usage tbody tr, #usage tfoot tr', (rows) => rows.map((row) => ({
    kind: row.dataset.kind,
    key: row.dataset.key,
    values: Object.fromEntries([...row.querySelectorAll('td[data-field]')]
      .map((td) => [td.dataset.field, td.dataset.value === '' ? null : Number(td.dataset.value)])),
  })));
}

const USAGE_FIELDS = ['requests', 'errors', 'input_tokens', 'output_tokens', 'cache_read_input_tokens', 'cost_usd'];

/** Every row of the usage table equals the `/v1/usage` answer: groups in order, other, total. */
function checkUsageEquals(rows, answer, what) {
  const { by } = answer;
  const keys = answer.groups.map((group) => JSON.stringify(group.key[by] ?? null));
  check(
    JSON.stringify(rows.filter((row) => row.kind === 'group').map((row) => row.key)) === JSON.stringify(keys),
    `${what}: the table lists the API's ${keys.length} groups in its order: ${keys.slice(0, 6).join(', ')}${keys.length > 6 ? ', …' : ''}`,
  );
  const expected = [
    ...answer.groups.map((group) => ['group', group]),
    ...(answer.other ? [['other', answer.other]] : []),
    ['total', answer.total],
  ];
  check(rows.length === expected.length, `${what}: ${rows.length} rows = groups + ${answer.other ? 'other + ' : ''}total`);
  const mismatches = [];
  expected.forEach(([kind, block], i) => {
    if (rows[i].kind !== kind) mismatches.push(`row ${i} is ${rows[i].kind}, not ${kind}`);
    for (const field of USAGE_FIELDS) {
      if (rows[i].values[field] !== block[field]) mismatches.push(`row ${i} ${field}: ${rows[i].values[field]} != ${block[field]}`);
    }
  });
  check(mismatches.length === 0, `${what}: every number equals /v1/usage${mismatches.length ? `: ${mismatches.join('; ')}` : ''}`);
  const total = rows[rows.length - 1];
  check(total.kind === 'total' && USAGE_FIELDS.every((field) => total.values[field] === answer.total[field]),
    `${what}: the total row is the API's total (${answer.total.requests} requests, $${answer.total.cost_usd})`);
}

/**
 * The demo keeps sending, so today's usage grows while the page reads it. Reads
 * `/v1/usage` (and `/v1/budgets`) before and after a refresh of the page until nothing
 * changed in between: the page was then given exactly that answer.
 */
async function settledUsage(view, params) {
  const deadline = Date.now() + WAIT_MS;
  const read = async () => {
    const [usage, budgets] = await Promise.all([api(view, 'v1/usage', params), api(view, 'v1/budgets')]);
    return { usage, budgets };
  };
  for (let attempt = 1; ; attempt += 1) {
    const before = await read();
    const refreshes = Number(await view.getAttribute('body', 'data-refreshes'));
    await view.click('#refresh-now');
    await view.waitForFunction((n) => Number(document.body.dataset.refreshes) > n, refreshes, { timeout: WAIT_MS });
    const after = await read();
    if (JSON.stringify(before) === JSON.stringify(after)) {
      check(after.usage.status === 200 && after.budgets.status === 200,
        `/v1/usage and /v1/budgets answer 200, unchanged across the page's refresh (attempt ${attempt})`);
      return { usage: after.usage.body, budgets: after.budgets.body };
    }
    if (Date.now() > deadline) throw new Error(`/v1/usage never held still across a refresh within ${WAIT_MS} ms`);
  }
}

/** The budget bars as numbers. */
async function budgetBars(target) {
  return target.$$eval('#budgets .budget', (items) => items.map((item) => ({
    name: item.dataset.name,
    scopeValue: item.dataset.scopeValue || null,
    tenant: item.dataset.tenant,
    model: item.dataset.model || null,
    period: item.dataset.period,
    unit: item.dataset.unit,
    spent: Number(item.dataset.spent),
    limit: Number(item.dataset.limit),
    percent: Number(item.dataset.percent),
    runsOut: item.dataset.runsOut === '' ? null : Number(item.dataset.runsOut),
    forecast: item.querySelector('.budget-forecast')?.textContent ?? null,
    width: parseFloat(item.querySelector('.budget-fill').style.width),
  })));
}

/** Every limit of `/v1/budgets` is a bar with its spend and limit, and nothing else is. */
function checkBudgetsEqual(bars, answer, what) {
  const expected = answer.budgets.flatMap((budget) => budget.limits.map((limit) => ({
    name: budget.name,
    scopeValue: budget.scope_value,
    tenant: budget.tenant,
    model: budget.model,
    period: limit.period,
    unit: limit.unit,
    spent: limit.spent,
    limit: limit.limit,
    percent: limit.percent,
    runsOut: limit.runs_out_in_minutes,
  })));
  const numbers = bars.map(({ width, forecast, ...bar }) => bar);
  check(JSON.stringify(numbers) === JSON.stringify(expected),
    `${what}: ${bars.length} budget bars equal /v1/budgets: ${bars.map((bar) => `${bar.tenant}/${bar.model ?? '*'} ${bar.period} ${bar.spent} of ${bar.limit} ${bar.unit}`).join('; ')}`);
  check(bars.every((bar) => Math.abs(bar.width - Math.min(100, bar.percent)) < 0.01),
    `${what}: each bar is filled to its percent of the limit: ${bars.map((bar) => `${bar.width.toFixed(1)}%`).join(', ')}`);
  // A budget with a forecast says when each limit runs out at the current burn, in
  // the hours /v1/budgets gives; one without says nothing of it. Budgets are told
  // apart by name (a tenant's and its users' budgets share tenant and model), and a
  // user's, key's or attribute value's bars by value too.
  const forecasting = new Set(answer.budgets.filter((budget) => budget.forecast_hours != null)
    .map((budget) => budget.name));
  check(bars.every((bar) => {
    if (!forecasting.has(bar.name)) return bar.forecast === null;
    if (bar.runsOut === null) return bar.forecast?.includes('does not run out') ?? false;
    return bar.forecast?.includes(`runs out in about ${(bar.runsOut / 60).toFixed(1)} h`) ?? false;
  }), `${what}: forecasts as /v1/budgets gives them: ${bars.map((bar) => `${bar.name}${bar.scopeValue ? ` ${bar.scopeValue}` : ''}: ${bar.forecast ?? '-'}`).join('; ')}`);
}

/**
 * The usage view, in a page of its own: the month so far by user, by model and by
 * tenant, every number equal to `/v1/usage`, its order and days in the URL, the
 * server's message for a scope it does not count, the incomplete note, the CSV export
 * and the budgets.
 */
async function checkUsage() {
  const view = await context.newPage();
  usagePage = view;
  const errors = [];
  let expectRefusal = false;
  view.on('console', (message) => {
    const refused = expectRefusal && message.text().includes('status of 400');
    if (message.type() === 'error' && !refused) errors.push(message.text());
  });
  view.on('pageerror', (error) => errors.push(String(error)));

  await view.goto(`${url}#view=usage`);
  await waitForView(view);
  await view.selectOption('#refresh', '0');
  check(await view.isHidden('#overview-view') && await view.isVisible('#usage') && await view.isHidden('#range-control'),
    'the Usage tab shows the usage table in place of the charts, without the minute range');

  // The default: the costliest users of the month so far, as the API's own default days.
  const defaults = await api(view, 'v1/usage', [['by', 'user_id']]);
  const { from, to } = defaults.body;
  check(from.endsWith('-01') && from.slice(0, 7) === to.slice(0, 7), `the API's default days are this month so far: ${from} → ${to}`);
  const days = [await view.inputValue('#usage-from'), await view.inputValue('#usage-to')];
  check(days.join(' ') === `${from} ${to}`, `the page's days are the same: ${days.join(' → ')}`);
  const range = [['from', from], ['to', to]];
  let settled = await settledUsage(view, [['by', 'user_id'], ...range, ['top', 20], ['order', 'cost_usd']]);
  let rows = await usageRows(view);
  checkUsageEquals(rows, settled.usage, 'by user_id');
  const users = rows.filter((row) => row.kind === 'group').map((row) => JSON.parse(row.key));
  check(users.length === 20 && users.every((user) => /^user-\d+$/.test(user)), `the top 20 are the demo's users: ${users.slice(0, 5).join(', ')}, …`);
  check(rows.some((row) => row.kind === 'other'), 'the users past the top 20 are the other row');
  const costs = rows.filter((row) => row.kind === 'group').map((row) => row.values.cost_usd);
  check(costs.every((cost, i) => i === 0 || costs[i - 1] >= cost), 'ranked by cost, costliest first');
  check(await view.$eval('#usage', (table) => `${table.dataset.tenant} ${table.dataset.order}`) === `${demoTenant} cost_usd`,
    `the caption's tenant is ${demoTenant}`);
  check(await view.isHidden('#usage-incomplete') === settled.usage.complete, `the incomplete note follows complete=${settled.usage.complete}`);
  if (expectBudgets) {
    checkBudgetsEqual(await budgetBars(view), settled.budgets, 'budgets');
    check(settled.budgets.budgets.length > 0 && settled.budgets.budgets.every((budget) => budget.tenant === demoTenant),
      `only ${demoTenant}'s budgets are read and drawn`);
  } else {
    check(settled.budgets.budgets.length === 0 && await view.isVisible('#budgets-empty'), 'no budgets configured: the view says so');
  }
  await screenshot('usage', view);

  // By model, ranked by requests: the demo's models, and the choice in the URL.
  await view.selectOption('#usage-by', 'model');
  await waitForView(view);
  await view.selectOption('#usage-order', 'requests');
  await waitForView(view);
  const hash = new URLSearchParams(new URL(view.url()).hash.slice(1));
  check(hash.get('view') === 'usage' && hash.get('usage_by') === 'model' && hash.get('usage_order') === 'requests',
    `the URL carries the view: ${new URL(view.url()).hash}`);
  settled = await settledUsage(view, [['by', 'model'], ...range, ['top', 20], ['order', 'requests']]);
  rows = await usageRows(view);
  checkUsageEquals(rows, settled.usage, 'by model, by requests');
  const models = rows.filter((row) => row.kind === 'group').map((row) => JSON.parse(row.key)).sort();
  check(JSON.stringify(models) === JSON.stringify(usageModels), `the table lists the demo's models and the seeded ones: ${models.join(', ')}`);
  const requests = rows.filter((row) => row.kind === 'group').map((row) => row.values.requests);
  check(requests.every((count, i) => i === 0 || requests[i - 1] >= count), `ranked by requests: ${requests.join(', ')}`);
  await screenshot('usage-models', view);

  // The URL alone opens the same view.
  const shared = view.url();
  await view.goto('about:blank');
  await view.goto(shared);
  await waitForView(view);
  await view.selectOption('#refresh', '0');
  const controls = [await view.inputValue('#usage-by'), await view.inputValue('#usage-order'), await view.isVisible('#usage')];
  check(controls.join(' ') === 'model requests true', `the shared link opens the usage by model by requests (${controls.join(' ')})`);

  // The CSV export, read with the page's key and saved as a file.
  const [download] = await Promise.all([view.waitForEvent('download', { timeout: WAIT_MS }), view.click('#usage-csv')]);
  const csv = await readFile(await download.path(), 'utf8');
  const lines = csv.trim().split('\r\n');
  check(download.suggestedFilename() === `usage-model-${from}-${to}.csv`, `the export is saved as ${download.suggestedFilename()}`);
  check(lines[0] === 'day,scope,value,requests,errors,input_tokens,output_tokens,cache_read_input_tokens,cost_usd',
    `the export has the billing columns: ${lines[0]}`);
  const exported = lines.slice(1).map((line) => line.split(','));
  const exportedModels = [...new Set(exported.map((fields) => fields[2]))].sort();
  check(exported.length > 0 && exported.every((fields) => fields[1] === 'model' && fields[0] >= from && fields[0] <= to),
    `${exported.length} rows of model usage, days within ${from} → ${to}`);
  check(JSON.stringify(exportedModels) === JSON.stringify(usageModels), `the export names the demo's models and the seeded ones: ${exportedModels.join(', ')}`);

  // By tenant: the key's own tenant is the one group.
  await view.selectOption('#usage-by', 'tenant');
  await waitForView(view);
  settled = await settledUsage(view, [['by', 'tenant'], ...range, ['top', 20], ['order', 'requests']]);
  rows = await usageRows(view);
  checkUsageEquals(rows, settled.usage, 'by tenant');
  check(JSON.stringify(rows.filter((row) => row.kind === 'group').map((row) => JSON.parse(row.key))) === JSON.stringify([demoTenant]),
    `by tenant: only ${demoTenant}`);

  // By key: with keys, the demo writes with one key of its own, named by an id from its
  // digest (the seeded calls with another); without keys, its events came with none and
  // are the one null group.
  await view.selectOption('#usage-by', 'key');
  await waitForView(view);
  settled = await settledUsage(view, [['by', 'key'], ...range, ['top', 20], ['order', 'requests']]);
  rows = await usageRows(view);
  checkUsageEquals(rows, settled.usage, 'by key');
  const keys = settled.usage.groups.map((group) => group.key.key);
  const writers = seededModels.length > 0 ? 2 : 1;
  check(keys.length === writers && keys.every((name) => (key ? /^k-[0-9a-f]{12}$/.test(name) : name === null)),
    `by key: the demo's ${key ? 'key' : 'missing key'}${writers > 1 ? ' and the seeding one' : ''}: ${JSON.stringify(keys)}`);

  // A typed attribute the ledger does not count: the server's message instead of a table.
  expectRefusal = true;
  await view.selectOption('#usage-by', 'attr');
  await view.fill('#usage-attr', 'customer');
  await view.press('#usage-attr', 'Enter');
  await waitForView(view);
  const refused = await api(view, 'v1/usage', [['by', 'attr.customer'], ...range]);
  check(refused.status === 400, `/v1/usage?by=attr.customer is refused: ${refused.body.error}`);
  const message = await view.textContent('#usage-error');
  check(await view.isVisible('#usage-error') && await view.isHidden('#usage') && message.includes(refused.body.error),
    `the page shows the server's message: ${message}`);
  expectRefusal = false;

  // An answer that says it is incomplete: the note says so.
  await view.selectOption('#usage-by', 'model');
  await waitForView(view);
  const usageApi = (address) => address.pathname.endsWith('/v1/usage');
  await view.route(usageApi, async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    await route.fulfill({ response, json: { ...body, complete: false } });
  });
  await view.click('#refresh-now');
  await view.waitForFunction(() => document.querySelector('#usage').dataset.complete === 'false', null, { timeout: WAIT_MS });
  check(await view.isVisible('#usage-incomplete'), 'an incomplete answer is said above the table');
  await view.unroute(usageApi);

  // Back to the overview: its charts again.
  await view.click('nav.views button[data-view="overview"]');
  await waitForView(view);
  check(await view.isVisible('#charts') && await view.isHidden('#usage-view') && !new URL(view.url()).hash.includes('view=usage'),
    'the Overview tab brings the charts back and leaves the usage out of the URL');

  check(errors.length === 0, `no errors in the usage page's console${errors.length ? `: ${errors.join(' | ')}` : ''}`);
  await view.close();
  usagePage = null;
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
  const failed = await page.$$eval('#events tbody tr:not(.payload)', (rows) => rows.map((row) => row.dataset.status));
  check(failed.length > 0 && failed.every((status) => status === 'error'), `drill-down lists ${failed.length} failed calls of ${model}`);
  const focused = await page.$eval('figure.chart[data-chart="request_rate"]', (figure) => Number(figure.dataset.series));
  check(focused === 1, `charts focus on ${model} alone (${focused} series)`);
  await page.click('#drilldown .tabs button[data-kind="slow"]');
  await page.waitForFunction(() => document.querySelector('#drilldown').dataset.kind === 'slow', null, { timeout: WAIT_MS });
  const slow = await page.$$eval('#events tbody tr:not(.payload)', (rows) => rows.length);
  check(slow > 0, `drill-down lists ${slow} slow calls of ${model}`);
  // A click shows the call's payload: the demo's input names the row's user. Without
  // capture, ingest dropped every payload and no call offers one.
  const hidden = await page.$$eval('#events tbody tr.payload', (rows) => rows.filter((row) => row.hidden).length);
  if (expectPayloads) {
    check(hidden > 0, `${hidden} calls carry a payload, hidden until clicked`);
    await page.click('#events tbody tr.has-payload');
    const shown = await page.$eval('#events tbody tr.has-payload', (row) => ({
      user: row.cells[6].textContent,
      visible: !row.nextElementSibling.hidden,
      input: row.nextElementSibling.querySelector('pre.input').textContent,
    }));
    check(shown.visible && shown.input.endsWith(` from ${shown.user}`), `a click shows the call's payload: ${JSON.stringify(shown)}`);
  } else {
    check(hidden === 0, `capture off: no call carries a payload (${hidden})`);
  }
  await screenshot('drilldown');
  await page.click('#clear-focus');
  await page.waitForFunction(() => document.querySelector('#focus').hidden);

  const anomalies = await page.$eval('#incidents', (table) => Number(table.dataset.anomaliesInRange ?? 0));
  const marks = await page.$$eval('figure.chart', (figures) =>
    figures.reduce((sum, figure) => sum + Number(figure.dataset.anomalyMarks), 0));
  console.log(`info: ${anomalies} anomalies listed, ${marks} marks on the charts`);
  check(anomalies === 0 || marks > 0, 'listed anomalies are marked on the charts');

  await checkBreakdown();
  if (expectedIncidents) await checkIncidents(expectedIncidents);
  await checkUsage();

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

    // Its usage view: nothing of the first tenant's, equal to what its key reads.
    await page.selectOption('#refresh', '0');
    await page.click('nav.views button[data-view="usage"]');
    await waitForView(page);
    const theirs = await api(page, 'v1/usage', [['by', 'user_id'], ['top', 20], ['order', 'cost_usd']]);
    check(theirs.status === 200 && theirs.body.tenant !== demoTenant && theirs.body.groups.length === 0 && theirs.body.total.requests === 0,
      `the other tenant's /v1/usage is its own and empty (tenant ${theirs.body.tenant})`);
    checkUsageEquals(await usageRows(page), theirs.body, "the other tenant's usage");
    // Its own budget may name a model the first tenant uses too: the table is checked.
    const usageText = await page.textContent('#usage-panel');
    check(!/user-\d/.test(usageText) && expectedModels.every((m) => !usageText.includes(m)) && !usageText.includes(demoTenant),
      "no user, model or tenant name of the first tenant appears in the other tenant's usage table");
    const theirBudgets = await api(page, 'v1/budgets');
    checkBudgetsEqual(await budgetBars(page), theirBudgets.body, "the other tenant's budgets");
    check(theirBudgets.body.budgets.every((budget) => budget.tenant !== demoTenant), "the other tenant's budgets are its own");
    await screenshot('other-tenant-usage');
  }

  check(outside.length === 0, `nothing loaded from outside ${origin} (${outside.join(', ') || 'none'})`);
  check(consoleErrors.length === 0, `no errors in the browser console${consoleErrors.length ? `: ${consoleErrors.join(' | ')}` : ''}`);
  console.log('browser checks passed');
} catch (error) {
  console.error(`FAILED: ${error.message}`);
  await screenshot('failure').catch(() => {});
  if (breakdownPage) await screenshot('breakdown-failure', breakdownPage).catch(() => {});
  if (incidentsPage) await screenshot('incidents-failure', incidentsPage).catch(() => {});
  if (usagePage) await screenshot('usage-failure', usagePage).catch(() => {});
  process.exitCode = 1;
} finally {
  await context.close();
  await rm(profile, { recursive: true, force: true });
}
