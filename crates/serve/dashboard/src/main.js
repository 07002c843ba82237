// The built-in dashboard of `ais serve`: per-model charts, a sortable models table,
// anomalies and a drill-down into a model's recent failed or slow calls, refreshed in
// place. Everything is read from the tenant-scoped query API of the serving process.
import './style.css';
import { AuthError, currentKey, forgetKey, getJson, storeKey } from './api.js';
import { CHARTS, ChartGrid, assignColors } from './charts.js';
import * as fmt from './format.js';
import { ModelsTable, modelRow, renderAnomalies, renderEvents } from './tables.js';

const MINUTE_MS = 60_000;
/** Most points per series a chart asks for; the step grows with the range. */
const MAX_POINTS = 360;
/** Events listed in the drill-down. */
const DRILL_LIMIT = 50;
const PRESETS = {
  '15m': 15 * MINUTE_MS,
  '1h': 60 * MINUTE_MS,
  '6h': 6 * 60 * MINUTE_MS,
  '24h': 24 * 60 * MINUTE_MS,
  '7d': 7 * 24 * 60 * MINUTE_MS,
};

const $ = (id) => document.getElementById(id);

const state = {
  range: '1h',
  customFrom: null,
  customTo: null,
  model: null,
  drillKind: 'failed',
  refreshSeconds: 10,
  timer: null,
  inFlight: false,
  again: false,
  refreshes: 0,
  summary: null,
};

/** `[from, to)` in unix ms, aligned to minutes, and the step in seconds. */
function currentWindow() {
  let from;
  let to;
  if (state.range === 'custom' && state.customFrom !== null && state.customTo !== null) {
    from = Math.floor(state.customFrom / MINUTE_MS) * MINUTE_MS;
    to = Math.floor(state.customTo / MINUTE_MS) * MINUTE_MS;
  } else {
    // The current minute is included: it holds the latest events.
    to = Math.floor(Date.now() / MINUTE_MS) * MINUTE_MS + MINUTE_MS;
    from = to - (PRESETS[state.range] ?? PRESETS['1h']);
  }
  const minutes = Math.max(1, (to - from) / MINUTE_MS);
  const step = 60 * Math.max(1, Math.ceil(minutes / MAX_POINTS));
  return { from, to, step };
}

function readHash() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const range = params.get('range');
  if (range && (range in PRESETS)) state.range = range;
  if (range === 'custom') {
    const from = Number(params.get('from'));
    const to = Number(params.get('to'));
    if (Number.isFinite(from) && Number.isFinite(to) && from < to) {
      state.range = 'custom';
      state.customFrom = from;
      state.customTo = to;
    }
  }
  state.model = params.get('model') || null;
}

function writeHash() {
  const params = new URLSearchParams();
  params.set('range', state.range);
  if (state.range === 'custom') {
    params.set('from', String(state.customFrom));
    params.set('to', String(state.customTo));
  }
  if (state.model) params.set('model', state.model);
  window.history.replaceState(null, '', `#${params}`);
}

function setStatus(text, isError = false) {
  const status = $('status');
  status.textContent = text;
  status.classList.toggle('error', isError);
}

function showKeyDialog(message) {
  document.body.dataset.state = 'auth';
  $('key-message').textContent = message;
  $('key-dialog').hidden = false;
  $('key-input').focus();
}

function showKeyStatus() {
  const key = currentKey();
  $('key-status').hidden = !key;
  $('key-tail').textContent = key ? key.slice(-4) : '';
}

const charts = new ChartGrid($('charts'));
const models = new ModelsTable($('models'), $('models-empty'), (model) => focus(model));

function focus(model) {
  state.model = model;
  writeHash();
  refresh();
}

async function loadDrilldown(window, summary) {
  const section = $('drilldown');
  if (!state.model) {
    section.hidden = true;
    return;
  }
  const entry = summary.models.find((m) => m.model === state.model);
  const params = { from: window.from, to: window.to, model: state.model, limit: DRILL_LIMIT };
  if (state.drillKind === 'failed') {
    params.status = 'error';
    $('drill-note').textContent = 'Newest first.';
  } else {
    const threshold = entry?.latency_ms?.p95 ?? null;
    if (threshold !== null) params.min_latency_ms = Math.floor(threshold);
    $('drill-note').textContent = threshold === null
      ? 'Newest first.'
      : `Calls at or above this model's p95 over the range (${fmt.ms(threshold)}), newest first.`;
  }
  const answer = await getJson('v1/events', params);
  $('drill-model').textContent = state.model;
  $('drill-kind').textContent = state.drillKind;
  for (const tab of section.querySelectorAll('.tabs button')) {
    tab.classList.toggle('active', tab.dataset.kind === state.drillKind);
  }
  renderEvents($('events'), $('events-empty'), answer.events ?? []);
  section.hidden = false;
  section.dataset.model = state.model;
  section.dataset.kind = state.drillKind;
}

async function refresh() {
  if (state.inFlight) {
    state.again = true;
    return;
  }
  state.inFlight = true;
  clearTimeout(state.timer);
  const window = currentWindow();
  const scoped = { from: window.from, to: window.to, model: state.model };
  try {
    const [summary, anomalies, ...series] = await Promise.all([
      getJson('v1/query/summary', { from: window.from, to: window.to }),
      getJson('v1/anomalies', scoped),
      ...CHARTS.map((chart) => getJson('v1/query/timeseries', { ...scoped, metric: chart.metric, step: window.step })),
    ]);
    const results = new Map(CHARTS.map((chart, i) => [chart.id, series[i]]));
    const rangeSeconds = Math.max(1, (Math.min(Date.now(), window.to) - window.from) / 1000);
    await loadDrilldown(window, summary);

    // Everything fetched: update the page in one go.
    assignColors(summary.models.map((entry) => entry.model));
    $('key-dialog').hidden = true;
    showKeyStatus();
    charts.update(results, anomalies.anomalies ?? [], window.step);
    models.update(summary.models.map((entry) => modelRow(entry, rangeSeconds)), state.model);
    renderAnomalies($('anomalies'), $('anomalies-empty'), $('anomaly-count'), anomalies.anomalies ?? []);
    $('focus').hidden = !state.model;
    $('focus-model').textContent = state.model ?? '';
    state.summary = summary;
    state.refreshes += 1;
    document.body.dataset.state = 'ready';
    document.body.dataset.refreshes = String(state.refreshes);
    document.body.dataset.models = String(summary.models.length);
    setStatus(`Updated ${new Date().toLocaleTimeString()} · ${summary.models.length} models · ${fmt.time(window.from)} → ${fmt.time(window.to)}`);
  } catch (error) {
    if (error instanceof AuthError) {
      const message = currentKey()
        ? `The server refused the stored key (${error.message}). Enter another key.`
        : 'This server needs an API key with read access.';
      showKeyDialog(message);
    } else {
      if (state.refreshes === 0) document.body.dataset.state = 'error';
      setStatus(`Refresh failed: ${error.message}; showing the last data`, true);
    }
  } finally {
    state.inFlight = false;
    if (state.again) {
      state.again = false;
      refresh();
    } else {
      schedule();
    }
  }
}

function schedule() {
  clearTimeout(state.timer);
  if (state.refreshSeconds > 0 && document.body.dataset.state !== 'auth') {
    state.timer = setTimeout(() => {
      if (!document.hidden) refresh();
      else schedule();
    }, state.refreshSeconds * 1000);
  }
}

function wireControls() {
  const range = $('range');
  range.value = state.range;
  $('custom-range').hidden = state.range !== 'custom';
  range.addEventListener('change', () => {
    if (range.value === 'custom') {
      const { from, to } = currentWindow();
      $('from').value = fmt.localInput(state.customFrom ?? from);
      $('to').value = fmt.localInput(state.customTo ?? to);
      $('custom-range').hidden = false;
      return;
    }
    $('custom-range').hidden = true;
    state.range = range.value;
    writeHash();
    refresh();
  });
  $('apply-range').addEventListener('click', () => {
    const from = Date.parse($('from').value);
    const to = Date.parse($('to').value);
    if (!Number.isFinite(from) || !Number.isFinite(to) || from >= to) {
      setStatus('Custom range: "from" must be before "to"', true);
      return;
    }
    state.range = 'custom';
    state.customFrom = from;
    state.customTo = to;
    writeHash();
    refresh();
  });
  if (state.range === 'custom') {
    $('from').value = fmt.localInput(state.customFrom);
    $('to').value = fmt.localInput(state.customTo);
  }
  const refreshSelect = $('refresh');
  refreshSelect.addEventListener('change', () => {
    state.refreshSeconds = Number(refreshSelect.value);
    schedule();
  });
  $('refresh-now').addEventListener('click', () => refresh());
  $('clear-focus').addEventListener('click', () => focus(null));
  for (const tab of document.querySelectorAll('#drilldown .tabs button')) {
    tab.addEventListener('click', () => {
      state.drillKind = tab.dataset.kind;
      refresh();
    });
  }
  $('key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const key = $('key-input').value.trim();
    if (!key) return;
    storeKey(key);
    $('key-input').value = '';
    document.body.dataset.state = 'loading';
    refresh();
  });
  $('forget-key').addEventListener('click', () => {
    forgetKey();
    showKeyStatus();
    refresh();
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.refreshSeconds > 0) refresh();
  });
}

readHash();
wireControls();
showKeyStatus();
refresh();
