// The built-in dashboard of `ais serve`: per-model charts, a sortable models table,
// a breakdown by any dimension, incidents of anomalies, a drill-down into a model's
// recent failed or slow calls, and the slowest calls of a breakdown group or the calls
// behind an incident; every list of calls shows a call's payloads on click. Refreshed
// in place. Filter chips (from the breakdown's groups) narrow every chart and table;
// the view (range, focus, dimension, sort, filters, the listed calls) lives in the
// URL's fragment, so a reload or a shared link shows the same.
// A second view, Usage, shows the usage ledger over UTC days and the budgets; its
// scope, days, order and top live in the fragment too.
// Everything is read from the tenant-scoped query API of the serving process.
import './style.css';
import {
  AuthError, currentKey, forgetKey, getCsv, getJson, storeKey,
} from './api.js';
import { BreakdownView, COLUMNS, SPARK_METRICS, renderSlowest, seriesByKey } from './breakdown.js';
import { CHARTS, ChartGrid, assignColors } from './charts.js';
import {
  ATTRIBUTE_PREFIX, DIMENSIONS, describeFilter, filterDimension, filterFor, filterForAny, keyLabel,
} from './filters.js';
import * as fmt from './format.js';
import { ModelsTable, modelRow, renderEvents, renderIncidents } from './tables.js';
import {
  USAGE_ORDERS, UsageTable, monthSoFar, renderBudgets, saveFile, validDay, validUsageScope,
} from './usage.js';

const MINUTE_MS = 60_000;
/** Most points per series a chart asks for; the step grows with the range. */
const MAX_POINTS = 360;
/** Events listed in the drill-down and in a group's or an incident's slowest calls. */
const DRILL_LIMIT = 50;
/**
 * Events read for a group's or an incident's slowest calls: `/v1/events` lists newest
 * first and cannot sort by latency, so the page reads this many (the API's most) and
 * sorts them.
 */
const SLOWEST_READ = 1000;
/** Most filters a request may carry (the API's bound). */
const MAX_FILTERS = 16;
const TOP_CHOICES = [10, 20, 50, 100];
/**
 * Shown before and after an incident when the page narrows to it, so the charts hold
 * the baseline it broke from and the recovery.
 */
const INCIDENT_CONTEXT_MS = 10 * MINUTE_MS;
/** What an incident's calls are: its slowest, or its failed ones (`status=error`). */
const CALL_KINDS = ['slowest', 'failed'];
const SORT_ORDERS = COLUMNS.filter((column) => column.order).map((column) => column.order);
const PRESETS = {
  '15m': 15 * MINUTE_MS,
  '1h': 60 * MINUTE_MS,
  '6h': 6 * 60 * MINUTE_MS,
  '24h': 24 * 60 * MINUTE_MS,
  '7d': 7 * 24 * 60 * MINUTE_MS,
};

const $ = (id) => document.getElementById(id);

/** The usage view's defaults: the costliest users of the month so far. */
const USAGE_DEFAULTS = { by: 'user_id', from: null, to: null, order: 'cost_usd', top: 20 };

const state = {
  // Which view is shown: `overview` (charts and tables over minutes) or `usage`.
  view: 'overview',
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
  // The breakdown: its dimension (`null`: none picked), how many groups, the sort.
  by: null,
  top: 20,
  order: 'requests',
  ascending: false,
  // Filter chips, each the text of one `filter=` parameter.
  filters: [],
  // The calls listed under the breakdown: a group's slowest, `{source: 'group', by,
  // value, p95}`, or an incident's, `{source: 'incident', id, model, from, to, kind,
  // locations}` (see `incidentCalls`); `null`: none.
  calls: null,
  // Ids of the calls whose payloads are shown, per list, so a refresh keeps them open.
  openDrill: new Set(),
  openCalls: new Set(),
  // Ids of the incidents whose anomalies are listed.
  expandedIncidents: new Set(),
  // The usage view: scope, UTC days (`null`: the month so far), ranking, groups.
  usage: { ...USAGE_DEFAULTS },
};

function validDimension(text) {
  if (!text) return false;
  if (DIMENSIONS.includes(text)) return true;
  return text.startsWith(ATTRIBUTE_PREFIX) && text.length > ATTRIBUTE_PREFIX.length;
}

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

/**
 * The view's parameters: the URL's fragment (what the page writes), else its query
 * string, so `/?by=region&filter=region:eastus` opens that view too.
 */
function viewParams() {
  const fragment = window.location.hash.slice(1);
  return new URLSearchParams(fragment || window.location.search);
}

function readHash() {
  const params = viewParams();
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
  const by = params.get('by');
  state.by = validDimension(by) ? by : null;
  const top = Number(params.get('top'));
  state.top = TOP_CHOICES.includes(top) ? top : 20;
  const order = params.get('order');
  state.order = SORT_ORDERS.includes(order) ? order : 'requests';
  state.ascending = params.get('asc') === '1';
  state.filters = params.getAll('filter').filter(Boolean).slice(0, MAX_FILTERS);
  state.calls = readCalls(params, state.by);
  state.view = params.get('view') === 'usage' ? 'usage' : 'overview';
  const usageBy = params.get('usage_by');
  const usageFrom = params.get('usage_from');
  const usageTo = params.get('usage_to');
  const usageOrder = params.get('usage_order');
  const usageTop = Number(params.get('usage_top'));
  const days = validDay(usageFrom) && validDay(usageTo) && usageFrom <= usageTo;
  state.usage = {
    by: validUsageScope(usageBy) ? usageBy : USAGE_DEFAULTS.by,
    from: days ? usageFrom : null,
    to: days ? usageTo : null,
    order: USAGE_ORDERS.includes(usageOrder) ? usageOrder : USAGE_DEFAULTS.order,
    top: TOP_CHOICES.includes(usageTop) ? usageTop : USAGE_DEFAULTS.top,
  };
}

/**
 * The listed calls a URL names: `slowest=` a group's value as JSON (of the breakdown's
 * dimension), else `incident=` an incident's id with its model, span, kind and
 * locations (`incident_at=`, one filter per dimension); `null` when neither is whole.
 */
function readCalls(params, by) {
  const slowest = params.get('slowest');
  if (slowest !== null) {
    let value;
    try {
      value = JSON.parse(slowest);
    } catch {
      return null;
    }
    const valid = by && (value === null || typeof value === 'string');
    return valid ? { source: 'group', by, value, p95: null } : null;
  }
  const id = params.get('incident');
  const model = params.get('incident_model');
  const fromText = params.get('incident_from');
  const toText = params.get('incident_to');
  const kind = params.get('incident_calls');
  const from = Number(fromText);
  const to = toText === null ? null : Number(toText);
  const span = fromText !== null && Number.isFinite(from) && (to === null || (Number.isFinite(to) && to > from));
  if (!id || !model || !span || !CALL_KINDS.includes(kind)) return null;
  const locations = params.getAll('incident_at').filter(Boolean).slice(0, MAX_FILTERS);
  return { source: 'incident', id, model, from, to, kind, locations };
}

/** Adds the listed calls (see `readCalls`) to a URL's parameters. */
function writeCalls(params, calls, by) {
  if (!calls) return;
  if (calls.source === 'group') {
    if (calls.by === by) params.set('slowest', JSON.stringify(calls.value));
    return;
  }
  params.set('incident', calls.id);
  params.set('incident_model', calls.model);
  params.set('incident_from', String(calls.from));
  if (calls.to !== null) params.set('incident_to', String(calls.to));
  params.set('incident_calls', calls.kind);
  for (const location of calls.locations) params.append('incident_at', location);
}

/** The URL fragment of a view (the page's state, or one derived from it). */
function hashOf(view) {
  const params = new URLSearchParams();
  if (view.view === 'usage') {
    // The usage view's own parameters, defaults left out; the overview's follow, so
    // going back to it restores it.
    const usage = view.usage;
    params.set('view', 'usage');
    if (usage.by !== USAGE_DEFAULTS.by) params.set('usage_by', usage.by);
    if (usage.from && usage.to) {
      params.set('usage_from', usage.from);
      params.set('usage_to', usage.to);
    }
    if (usage.order !== USAGE_DEFAULTS.order) params.set('usage_order', usage.order);
    if (usage.top !== USAGE_DEFAULTS.top) params.set('usage_top', String(usage.top));
  }
  params.set('range', view.range);
  if (view.range === 'custom') {
    params.set('from', String(view.customFrom));
    params.set('to', String(view.customTo));
  }
  if (view.model) params.set('model', view.model);
  if (view.by) {
    params.set('by', view.by);
    if (view.top !== 20) params.set('top', String(view.top));
    if (view.order !== 'requests') params.set('order', view.order);
    if (view.ascending) params.set('asc', '1');
  }
  for (const filter of view.filters) params.append('filter', filter);
  writeCalls(params, view.calls, view.by);
  return `#${params}`;
}

function writeHash() {
  // The fragment holds the view from now on: the query string is dropped.
  window.history.replaceState(null, '', `${window.location.pathname}${hashOf(state)}`);
}

/** What the page shows, as the URL's fragment says it: set on the body once shown. */
function viewSignature() {
  return window.location.hash.slice(1);
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
const usageTable = new UsageTable({
  table: $('usage'),
  caption: $('usage-caption'),
  error: $('usage-error'),
  empty: $('usage-empty'),
  incomplete: $('usage-incomplete'),
});
const models = new ModelsTable($('models'), $('models-empty'), (model) => focus(model));
const breakdown = new BreakdownView(
  { table: $('breakdown'), caption: $('breakdown-caption'), error: $('breakdown-error'), empty: $('breakdown-empty') },
  {
    onSelect: (value) => addFilter(state.by, value),
    onSort: (order) => sortBreakdown(order),
    onSlowest: (value, p95) => showSlowest(value, p95),
  },
);

/**
 * The page narrowed to an incident: its model (all of them for a cross-model one) over
 * its span, ongoing ones up to now, with some context on either side.
 */
function incidentView(incident) {
  const end = incident.end ?? Date.now();
  return {
    ...state,
    view: 'overview',
    range: 'custom',
    customFrom: Math.floor((incident.start - INCIDENT_CONTEXT_MS) / MINUTE_MS) * MINUTE_MS,
    customTo: Math.ceil((end + MINUTE_MS + INCIDENT_CONTEXT_MS) / MINUTE_MS) * MINUTE_MS,
    model: incident.model === '*' ? null : incident.model,
    // Another incident's calls would not belong to this view; a group's still do.
    calls: state.calls?.source === 'incident' && state.calls.id !== incident.id ? null : state.calls,
  };
}

/** Error rates point at the failed calls; latency, TTFT and anything else at the slowest. */
function callsKindOf(incident) {
  const metrics = incident.metrics ?? incident.anomalies.map((anomaly) => anomaly.metric);
  const slow = metrics.some((metric) => metric.startsWith('latency') || metric.startsWith('ttft'));
  return !slow && metrics.includes('error_rate') ? 'failed' : 'slowest';
}

/**
 * The calls behind an incident: those of its model (every model for a cross-model
 * one) in its span (up to now while it is ongoing), in its locations when its
 * anomalies are of locations (one filter per dimension), of the kind its detectors
 * point at.
 */
function incidentCalls(incident) {
  const byDimension = new Map();
  for (const { dimension, value } of incident.locations ?? []) {
    byDimension.set(dimension, [...(byDimension.get(dimension) ?? []), value]);
  }
  return {
    source: 'incident',
    id: incident.id,
    model: incident.model,
    from: incident.start,
    to: incident.end ?? null,
    kind: callsKindOf(incident),
    locations: [...byDimension].map(([dimension, values]) => filterForAny(dimension, values)),
  };
}

/** The page narrowed to an incident (see `incidentView`), its calls listed. */
function incidentCallsView(incident) {
  return { ...incidentView(incident), calls: incidentCalls(incident) };
}

function showIncident(view) {
  state.range = view.range;
  state.customFrom = view.customFrom;
  state.customTo = view.customTo;
  state.model = view.model;
  state.calls = view.calls;
  showRange();
  writeHash();
  refresh();
}

const incidentsView = {
  expanded: state.expandedIncidents,
  // The incident whose calls are listed, marked in the table; set as they are drawn.
  callsOf: null,
  hrefOf: (incident) => `${window.location.pathname}${hashOf(incidentView(incident))}`,
  onView: (incident) => showIncident(incidentView(incident)),
  callsHrefOf: (incident) => `${window.location.pathname}${hashOf(incidentCallsView(incident))}`,
  onCalls: (incident) => showIncident(incidentCallsView(incident)),
};

function focus(model) {
  state.model = model;
  writeHash();
  refresh();
}

/** A chip for `dimension` = `value`; it replaces a chip on the same dimension. */
function addFilter(dimension, value) {
  const filter = filterFor(dimension, value);
  const others = state.filters.filter((text) => filterDimension(text) !== dimension);
  state.filters = [...others, filter].slice(-MAX_FILTERS);
  writeHash();
  refresh();
}

function removeFilter(filter) {
  state.filters = state.filters.filter((text) => text !== filter);
  writeHash();
  refresh();
}

function sortBreakdown(order) {
  if (state.order === order) {
    state.ascending = !state.ascending;
  } else {
    state.order = order;
    // Numbers start with the largest, keys with A.
    state.ascending = order === 'key';
  }
  writeHash();
  refresh();
}

function showSlowest(value, p95) {
  state.calls = { source: 'group', by: state.by, value, p95 };
  writeHash();
  refresh();
}

function renderChips() {
  const list = document.createDocumentFragment();
  for (const filter of state.filters) {
    const chip = document.createElement('span');
    chip.className = 'chip';
    chip.dataset.filter = filter;
    chip.title = `filter=${filter}`;
    chip.append(document.createTextNode(describeFilter(filter)));
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.textContent = '×';
    remove.setAttribute('aria-label', `remove the filter ${describeFilter(filter)}`);
    remove.addEventListener('click', () => removeFilter(filter));
    chip.append(remove);
    list.append(chip);
  }
  $('chip-list').replaceChildren(list);
  $('chips').hidden = state.filters.length === 0;
}

/** The breakdown's and slowest calls' filters: the chips and the focused model. */
function scopedFilters() {
  return state.model ? [...state.filters, filterFor('model', state.model)] : [...state.filters];
}

/** The server's own message of a failed request. */
function reasonOf(error) {
  return error.reason ?? error.message;
}

/**
 * Reads the breakdown and its sparklines; never throws: returns what to draw (the
 * table, or the server's message in its place) once every answer of the page is in.
 */
async function loadBreakdown(window) {
  if (!state.by) return { draw: () => breakdown.clear(), answer: null };
  const by = state.by;
  const filters = scopedFilters();
  const sort = { order: state.order, ascending: state.ascending };
  let answer;
  try {
    answer = await getJson('v1/query/breakdown', {
      from: window.from,
      to: window.to,
      by,
      top: state.top,
      // The key is sorted on the page: the API ranks by requests then.
      order: sort.order === 'key' ? 'requests' : sort.order,
      asc: sort.ascending && sort.order !== 'key' ? 'true' : undefined,
      filter: filters,
    });
  } catch (error) {
    return { draw: () => breakdown.showError(by, reasonOf(error)), answer: null };
  }
  let sparks = null;
  let sparkError = null;
  if (answer.groups.length > 0) {
    // One call per metric for exactly the groups shown: their values as a filter.
    const keys = answer.groups.map((group) => group.key[by] ?? null);
    const params = {
      from: window.from,
      to: window.to,
      step: window.step,
      by,
      top: keys.length,
      filter: [...filters, filterForAny(by, keys)],
    };
    try {
      const answers = await Promise.all(
        SPARK_METRICS.map((metric) => getJson('v1/query/timeseries', { ...params, metric })),
      );
      sparks = Object.fromEntries(SPARK_METRICS.map((metric, i) => [metric, seriesByKey(answers[i], by)]));
    } catch (error) {
      sparkError = reasonOf(error);
    }
  }
  // Groups that a chip selects are highlighted.
  const selected = answer.groups
    .map((group) => group.key[by] ?? null)
    .filter((value) => state.filters.includes(filterFor(by, value)))
    .map((value) => JSON.stringify(value));
  return { draw: () => breakdown.render(answer, sparks, sparkError, sort, selected), answer };
}

/**
 * What a breakdown group's slowest calls read: its calls over the range with the
 * page's filters, at or above its p95 over the range as it stands now (else as it was
 * when clicked).
 */
function groupCallsRead(window, answer, chosen) {
  const group = answer?.groups.find((g) => (g.key[chosen.by] ?? null) === chosen.value);
  const p95 = group?.latency_ms?.p95 ?? chosen.p95;
  const filters = [...scopedFilters(), filterFor(chosen.by, chosen.value)];
  const params = { from: window.from, to: window.to, filter: filters, limit: SLOWEST_READ };
  const hasThreshold = p95 !== null && p95 !== undefined;
  if (hasThreshold) params.min_latency_ms = Math.floor(p95);
  const label = `${chosen.by} = ${keyLabel(chosen.value)}`;
  return {
    kind: 'slowest',
    label,
    dimension: chosen.by,
    reads: [params],
    filters,
    what: `calls of ${label}${hasThreshold ? ` at or above its p95 over the range (${fmt.ms(p95)})` : ''}`,
    empty: 'No such calls in this range.',
  };
}

/**
 * What an incident's calls read: its span and model, failed ones only for an error
 * rate's; the page's filters do not apply (the incidents stay per model). Locations
 * of several dimensions are one read each (the API's filters all apply at once),
 * merged.
 */
function incidentCallsRead(chosen) {
  // An ongoing incident's span reaches the current minute.
  const now = Math.floor(Date.now() / MINUTE_MS) * MINUTE_MS + MINUTE_MS;
  const to = Math.max(chosen.to ?? now, chosen.from + MINUTE_MS);
  const base = { from: chosen.from, to, limit: SLOWEST_READ };
  if (chosen.model !== '*') base.model = chosen.model;
  if (chosen.kind === 'failed') base.status = 'error';
  const reads = chosen.locations.length === 0
    ? [base]
    : chosen.locations.map((location) => ({ ...base, filter: [location] }));
  const places = chosen.locations.map(describeFilter);
  const model = chosen.model === '*' ? 'all models' : chosen.model;
  const label = `the incident of ${model} from ${fmt.time(chosen.from)}${places.length ? ` (${places.join('; ')})` : ''}`;
  const span = chosen.to === null ? 'from its start until now' : `from ${fmt.time(chosen.from)} to ${fmt.time(chosen.to)}`;
  return {
    kind: chosen.kind,
    label,
    dimension: chosen.locations.length ? filterDimension(chosen.locations[0]) : 'model',
    reads,
    filters: chosen.locations,
    what: `${chosen.kind === 'failed' ? 'failed ' : ''}calls of ${model} ${span}${places.length ? ` in ${places.join(' or ')}` : ''}`,
    empty: `No ${chosen.kind === 'failed' ? 'failed ' : ''}calls in the incident's span.`,
  };
}

/** The events of several `/v1/events` answers, each once. */
function mergeEvents(answers) {
  if (answers.length === 1) return answers[0].events ?? [];
  const byId = new Map();
  for (const answer of answers) {
    for (const event of answer.events ?? []) byId.set(event.event_id, event);
  }
  return [...byId.values()];
}

/**
 * Reads the listed calls, a breakdown group's or an incident's, with their payloads
 * (a key that may not read them gets the calls alone); returns what to draw.
 */
async function loadCalls(window, answer) {
  const section = $('slowest');
  const chosen = state.calls;
  if (!chosen || (chosen.source === 'group' && chosen.by !== state.by)) {
    return () => {
      section.hidden = true;
      incidentsView.callsOf = null;
    };
  }
  const plan = chosen.source === 'group' ? groupCallsRead(window, answer, chosen) : incidentCallsRead(chosen);
  const show = () => {
    $('slowest-kind').textContent = plan.kind === 'failed' ? 'Failed' : 'Slowest';
    $('slowest-group').textContent = plan.label;
    $('slowest-empty').textContent = plan.empty;
    section.hidden = false;
    section.dataset.source = chosen.source;
    section.dataset.kind = plan.kind;
    section.dataset.filters = JSON.stringify(plan.filters);
    if (chosen.source === 'group') {
      section.dataset.by = chosen.by;
      section.dataset.key = JSON.stringify(chosen.value);
      delete section.dataset.incident;
    } else {
      section.dataset.incident = chosen.id;
      delete section.dataset.by;
      delete section.dataset.key;
    }
    incidentsView.callsOf = chosen.source === 'incident' ? chosen.id : null;
  };
  let answers;
  try {
    answers = await Promise.all(plan.reads.map((params) => eventsWithPayloads(params)));
  } catch (error) {
    return () => {
      show();
      $('slowest-error').textContent = `Reading the calls failed: ${reasonOf(error)}`;
      $('slowest-error').hidden = false;
      $('slowest-events').hidden = true;
      $('slowest-empty').hidden = true;
      section.dataset.state = 'error';
    };
  }
  const events = mergeEvents(answers);
  return () => {
    show();
    $('slowest-error').hidden = true;
    $('slowest-events').hidden = false;
    const shown = renderSlowest($('slowest-events'), $('slowest-empty'), events, plan.dimension, DRILL_LIMIT, state.openCalls);
    const cut = answers.some((read) => (read.events ?? []).length >= SLOWEST_READ);
    const read = cut ? `the ${SLOWEST_READ.toLocaleString('en-US')} newest` : `all ${events.length}`;
    $('slowest-note').textContent = `The ${shown} slowest of ${read} ${plan.what}, `
      + 'slowest first. The API lists calls newest first, so they are sorted here.';
    section.dataset.state = 'ready';
  };
}

async function loadDrilldown(window, summary) {
  const section = $('drilldown');
  if (!state.model) {
    section.hidden = true;
    return;
  }
  const entry = summary.models.find((m) => m.model === state.model);
  const params = {
    from: window.from, to: window.to, model: state.model, filter: state.filters, limit: DRILL_LIMIT,
  };
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
  const answer = await eventsWithPayloads(params);
  $('drill-model').textContent = state.model;
  $('drill-kind').textContent = state.drillKind;
  for (const tab of section.querySelectorAll('.tabs button')) {
    tab.classList.toggle('active', tab.dataset.kind === state.drillKind);
  }
  renderEvents($('events'), $('events-empty'), answer.events ?? [], state.openDrill);
  section.hidden = false;
  section.dataset.model = state.model;
  section.dataset.kind = state.drillKind;
}

/**
 * `/v1/events` with each call's payloads (`include=payloads`), shown on click; a key
 * whose kind `[payloads] readers` leaves out gets the calls without them.
 */
async function eventsWithPayloads(params) {
  try {
    return await getJson('v1/events', { ...params, include: 'payloads' });
  } catch (error) {
    if (error instanceof AuthError && error.status === 403) return getJson('v1/events', params);
    throw error;
  }
}

/** The usage view's days: the ones picked, else the current UTC month so far. */
function usageDays() {
  return state.usage.from ? { from: state.usage.from, to: state.usage.to } : monthSoFar();
}

/** What `/v1/usage` is asked for, ranking aside (the CSV export takes the same). */
function usageQuery() {
  return { by: state.usage.by, ...usageDays() };
}

/** Reads the usage table; returns what to draw (its message when the server refuses). */
async function loadUsage() {
  const query = usageQuery();
  const { top, order } = state.usage;
  try {
    const answer = await getJson('v1/usage', { ...query, top, order });
    return () => usageTable.render(answer, top);
  } catch (error) {
    if (error instanceof AuthError) throw error;
    return () => usageTable.showError(query.by, reasonOf(error));
  }
}

/** Reads the budgets; returns what to draw. */
async function loadBudgets() {
  const parts = { list: $('budgets'), empty: $('budgets-empty') };
  try {
    const answer = await getJson('v1/budgets');
    return () => {
      $('budgets-error').hidden = true;
      renderBudgets(parts, answer);
    };
  } catch (error) {
    if (error instanceof AuthError) throw error;
    return () => {
      renderBudgets(parts, null);
      parts.empty.hidden = true;
      $('budgets-error').textContent = `Reading the budgets failed: ${reasonOf(error)}`;
      $('budgets-error').hidden = false;
    };
  }
}

/** The usage view's controls as the state says (a field being edited is left alone). */
function showUsageControls() {
  const { by, order, top } = state.usage;
  const isAttribute = by.startsWith(ATTRIBUTE_PREFIX);
  $('usage-by').value = isAttribute ? 'attr' : by;
  $('usage-attr').hidden = !isAttribute;
  if (isAttribute && document.activeElement !== $('usage-attr')) {
    $('usage-attr').value = by.slice(ATTRIBUTE_PREFIX.length);
  }
  const days = usageDays();
  for (const [id, day] of [['usage-from', days.from], ['usage-to', days.to]]) {
    if (document.activeElement !== $(id)) $(id).value = day;
  }
  $('usage-order').value = order;
  $('usage-top').value = String(top);
}

/** The usage view: the table and the budgets, drawn once both answers are in. */
async function refreshUsage(signature) {
  const [drawUsage, drawBudgets] = await Promise.all([loadUsage(), loadBudgets()]);
  $('key-dialog').hidden = true;
  showKeyStatus();
  drawUsage();
  drawBudgets();
  showUsageControls();
  state.refreshes += 1;
  document.body.dataset.state = 'ready';
  document.body.dataset.refreshes = String(state.refreshes);
  document.body.dataset.shown = signature;
  const { by, from, to } = usageQuery();
  setStatus(`Updated ${new Date().toLocaleTimeString()} · usage by ${by} · ${from} → ${to} (UTC days)`);
}

/** Saves the CSV export of the shown scope and days, read with the page's key. */
async function downloadUsage() {
  const button = $('usage-csv');
  const query = usageQuery();
  button.disabled = true;
  button.dataset.state = 'loading';
  try {
    const blob = await getCsv('v1/usage', query);
    saveFile(blob, `usage-${query.by}-${query.from}-${query.to}.csv`);
    button.dataset.state = 'saved';
    setStatus(`Saved the usage by ${query.by} of ${query.from} → ${query.to} as CSV`);
  } catch (error) {
    button.dataset.state = 'error';
    setStatus(`CSV export failed: ${reasonOf(error)}`, true);
  } finally {
    button.disabled = false;
  }
}

async function refresh() {
  if (state.inFlight) {
    state.again = true;
    return;
  }
  state.inFlight = true;
  clearTimeout(state.timer);
  const window = currentWindow();
  const signature = viewSignature();
  const scoped = { from: window.from, to: window.to, model: state.model };
  const filtered = { ...scoped, filter: state.filters };
  try {
    if (state.view === 'usage') {
      await refreshUsage(signature);
      return;
    }
    const [summary, anomalies, incidents, breakdownResult, ...series] = await Promise.all([
      getJson('v1/query/summary', { from: window.from, to: window.to, filter: state.filters }),
      // The charts mark the anomalies of the range; the table groups them into incidents.
      getJson('v1/anomalies', scoped),
      getJson('v1/incidents', scoped),
      loadBreakdown(window),
      ...CHARTS.map((chart) => getJson('v1/query/timeseries', { ...filtered, metric: chart.metric, step: window.step })),
    ]);
    const results = new Map(CHARTS.map((chart, i) => [chart.id, series[i]]));
    const rangeSeconds = Math.max(1, (Math.min(Date.now(), window.to) - window.from) / 1000);
    await loadDrilldown(window, summary);
    const drawCalls = await loadCalls(window, breakdownResult.answer);

    // Everything fetched: update the page in one go.
    assignColors(summary.models.map((entry) => entry.model));
    $('key-dialog').hidden = true;
    showKeyStatus();
    charts.update(results, anomalies.anomalies ?? [], window.step);
    // Before the incidents: it marks the incident whose calls are listed.
    drawCalls();
    models.update(summary.models.map((entry) => modelRow(entry, rangeSeconds)), state.model);
    renderIncidents(
      { table: $('incidents'), empty: $('incidents-empty'), counter: $('incident-count'), truncated: $('incidents-truncated') },
      incidents,
      incidentsView,
    );
    $('incidents').dataset.anomaliesInRange = String((anomalies.anomalies ?? []).length);
    $('focus').hidden = !state.model;
    $('focus-model').textContent = state.model ?? '';
    renderChips();
    $('filter-error').hidden = true;
    $('breakdown-hint').hidden = Boolean(state.by);
    breakdownResult.draw();
    state.summary = summary;
    state.refreshes += 1;
    document.body.dataset.state = 'ready';
    document.body.dataset.refreshes = String(state.refreshes);
    document.body.dataset.models = String(summary.models.length);
    document.body.dataset.shown = signature;
    const filterNote = state.filters.length ? ` · ${state.filters.length} filter${state.filters.length > 1 ? 's' : ''}` : '';
    setStatus(`Updated ${new Date().toLocaleTimeString()} · ${summary.models.length} models${filterNote} · ${fmt.time(window.from)} → ${fmt.time(window.to)}`);
  } catch (error) {
    // A filter the key may not use (`tenant` without admin) is a 403 about the filter,
    // not about the key: say so beside the chips rather than asking for another key.
    const filtered = state.view === 'overview' && state.filters.length > 0;
    const aboutFilters = error instanceof AuthError && error.status === 403 && filtered
      && /filter|tenant/i.test(error.message);
    if (filtered && !(error instanceof AuthError && !aboutFilters)) {
      renderChips();
      $('filter-error').textContent = `The page could not be read with these filters: ${reasonOf(error)}`;
      $('filter-error').hidden = false;
    }
    if (error instanceof AuthError && !aboutFilters) {
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

/** The range controls as the state says. */
function showRange() {
  $('range').value = state.range;
  $('custom-range').hidden = state.range !== 'custom';
  if (state.range === 'custom') {
    $('from').value = fmt.localInput(state.customFrom);
    $('to').value = fmt.localInput(state.customTo);
  }
}

function wireControls() {
  const range = $('range');
  showRange();
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
  const refreshSelect = $('refresh');
  refreshSelect.addEventListener('change', () => {
    state.refreshSeconds = Number(refreshSelect.value);
    schedule();
  });
  $('refresh-now').addEventListener('click', () => refresh());
  $('clear-focus').addEventListener('click', () => focus(null));
  wireBreakdown();
  wireUsage();
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

function wireBreakdown() {
  const select = $('breakdown-by');
  for (const dimension of DIMENSIONS) {
    const option = document.createElement('option');
    option.value = dimension;
    option.textContent = dimension;
    select.append(option);
  }
  const attribute = document.createElement('option');
  attribute.value = 'attr';
  attribute.textContent = 'attribute (attr.<key>)…';
  select.append(attribute);
  const attrInput = $('breakdown-attr');
  const showDimension = () => {
    const isAttribute = Boolean(state.by && state.by.startsWith(ATTRIBUTE_PREFIX));
    select.value = isAttribute ? 'attr' : (state.by ?? '');
    attrInput.hidden = !isAttribute;
    if (isAttribute) attrInput.value = state.by.slice(ATTRIBUTE_PREFIX.length);
  };
  showDimension();
  const pick = (dimension) => {
    if (dimension === state.by) return;
    state.by = dimension;
    if (state.calls?.source === 'group') state.calls = null;
    writeHash();
    refresh();
  };
  select.addEventListener('change', () => {
    if (select.value === 'attr') {
      attrInput.hidden = false;
      attrInput.focus();
      if (attrInput.value.trim()) pick(`${ATTRIBUTE_PREFIX}${attrInput.value.trim()}`);
      return;
    }
    attrInput.hidden = true;
    pick(select.value || null);
  });
  const pickAttribute = () => {
    const key = attrInput.value.trim();
    if (key) pick(`${ATTRIBUTE_PREFIX}${key}`);
  };
  attrInput.addEventListener('change', pickAttribute);
  attrInput.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') pickAttribute();
  });
  const top = $('breakdown-top');
  top.value = String(state.top);
  top.addEventListener('change', () => {
    state.top = Number(top.value);
    writeHash();
    refresh();
  });
  $('clear-filters').addEventListener('click', () => {
    state.filters = [];
    writeHash();
    refresh();
  });
  $('close-slowest').addEventListener('click', () => {
    state.calls = null;
    $('slowest').hidden = true;
    writeHash();
    refresh();
  });
}

/** Shows the chosen view; the minute range belongs to the overview only. */
function showView() {
  const usage = state.view === 'usage';
  $('overview-view').hidden = usage;
  $('usage-view').hidden = !usage;
  $('range-control').hidden = usage;
  $('custom-range').hidden = usage || state.range !== 'custom';
  for (const tab of document.querySelectorAll('nav.views button')) {
    const active = tab.dataset.view === state.view;
    tab.classList.toggle('active', active);
    tab.setAttribute('aria-pressed', String(active));
  }
  document.body.dataset.view = state.view;
}

function wireUsage() {
  for (const tab of document.querySelectorAll('nav.views button')) {
    tab.addEventListener('click', () => {
      if (tab.dataset.view === state.view) return;
      state.view = tab.dataset.view;
      showView();
      writeHash();
      refresh();
    });
  }
  const pick = (change) => {
    if (Object.entries(change).every(([name, value]) => state.usage[name] === value)) return;
    state.usage = { ...state.usage, ...change };
    writeHash();
    refresh();
  };
  const select = $('usage-by');
  const attrInput = $('usage-attr');
  const pickAttribute = () => {
    const key = attrInput.value.trim();
    if (key) pick({ by: `${ATTRIBUTE_PREFIX}${key}` });
  };
  select.addEventListener('change', () => {
    if (select.value === 'attr') {
      attrInput.hidden = false;
      attrInput.focus();
      pickAttribute();
      return;
    }
    attrInput.hidden = true;
    pick({ by: select.value });
  });
  attrInput.addEventListener('change', pickAttribute);
  attrInput.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') pickAttribute();
  });
  const pickDays = () => {
    const from = $('usage-from').value;
    const to = $('usage-to').value;
    if (!validDay(from) || !validDay(to) || from > to) {
      setStatus('Usage: "from" must be a day on or before "to"', true);
      return;
    }
    pick({ from, to });
  };
  $('usage-from').addEventListener('change', pickDays);
  $('usage-to').addEventListener('change', pickDays);
  $('usage-month').addEventListener('click', () => pick({ from: null, to: null }));
  $('usage-order').addEventListener('change', () => pick({ order: $('usage-order').value }));
  $('usage-top').addEventListener('change', () => pick({ top: Number($('usage-top').value) }));
  $('usage-csv').addEventListener('click', () => downloadUsage());
  showUsageControls();
}

readHash();
if (!window.location.hash && window.location.search) writeHash();
wireControls();
showView();
showKeyStatus();
refresh();
