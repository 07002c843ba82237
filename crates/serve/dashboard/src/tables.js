// The models table (sortable), the incidents with their anomalies and the drill-down
// event list, whose calls show their payloads on click like every list of calls. Rows are rebuilt off-screen and swapped in one step, so a refresh never
// shows an empty table.
import * as fmt from './format.js';
import { colorOf } from './charts.js';

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

/** One models-table row's sortable values from a summary entry. */
export function modelRow(entry, rangeSeconds) {
  return {
    model: entry.model,
    requests: entry.requests,
    rate: rangeSeconds > 0 ? entry.requests / rangeSeconds : 0,
    error_rate: entry.error_rate ?? 0,
    p50: entry.latency_ms.p50,
    p95: entry.latency_ms.p95,
    p99: entry.latency_ms.p99,
    ttft_p50: entry.ttft_ms.p50,
    ttft_p95: entry.ttft_ms.p95,
    input_tokens: entry.input_tokens,
    output_tokens: entry.output_tokens,
    cost_usd: entry.cost_usd,
  };
}

export class ModelsTable {
  constructor(table, empty, onSelect) {
    this.table = table;
    this.empty = empty;
    this.onSelect = onSelect;
    this.rows = [];
    this.sortKey = 'cost_usd';
    this.descending = true;
    this.selected = null;
    for (const th of table.querySelectorAll('th[data-key]')) {
      th.tabIndex = 0;
      const sortBy = () => {
        const key = th.dataset.key;
        if (this.sortKey === key) {
          this.descending = !this.descending;
        } else {
          this.sortKey = key;
          this.descending = th.dataset.type !== 'text';
        }
        this.render();
      };
      th.addEventListener('click', sortBy);
      th.addEventListener('keydown', (event) => {
        if (event.key === 'Enter' || event.key === ' ') {
          event.preventDefault();
          sortBy();
        }
      });
    }
  }

  update(rows, selected) {
    this.rows = rows;
    this.selected = selected;
    this.render();
  }

  sorted() {
    const key = this.sortKey;
    const sign = this.descending ? -1 : 1;
    return [...this.rows].sort((a, b) => {
      const x = a[key];
      const y = b[key];
      if (typeof x === 'string' || typeof y === 'string') {
        return sign * String(x).localeCompare(String(y));
      }
      // Missing values (no data) sort last either way.
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return sign * (x - y) || a.model.localeCompare(b.model);
    });
  }

  render() {
    this.table.dataset.sortKey = this.sortKey;
    this.table.dataset.sortOrder = this.descending ? 'descending' : 'ascending';
    for (const th of this.table.querySelectorAll('th[data-key]')) {
      const active = th.dataset.key === this.sortKey;
      th.classList.toggle('sorted', active);
      th.setAttribute('aria-sort', active ? (this.descending ? 'descending' : 'ascending') : 'none');
    }
    const body = document.createElement('tbody');
    for (const row of this.sorted()) {
      const tr = document.createElement('tr');
      tr.dataset.model = row.model;
      tr.dataset.requests = String(row.requests);
      tr.dataset.sortValue = String(row[this.sortKey] ?? '');
      tr.tabIndex = 0;
      if (row.model === this.selected) tr.classList.add('selected');
      const name = cell('', 'model');
      const swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.style.background = colorOf(row.model);
      name.append(swatch, document.createTextNode(row.model));
      tr.append(
        name,
        cell(fmt.count(row.requests), 'num'),
        cell(fmt.count(row.rate), 'num'),
        cell(fmt.percent(row.error_rate), row.error_rate >= 0.05 ? 'num bad' : 'num'),
        cell(fmt.ms(row.p50), 'num'),
        cell(fmt.ms(row.p95), 'num'),
        cell(fmt.ms(row.p99), 'num'),
        cell(fmt.ms(row.ttft_p50), 'num'),
        cell(fmt.ms(row.ttft_p95), 'num'),
        cell(fmt.count(row.input_tokens), 'num'),
        cell(fmt.count(row.output_tokens), 'num'),
        cell(fmt.usd(row.cost_usd), 'num'),
      );
      const select = () => this.onSelect(row.model);
      tr.addEventListener('click', select);
      tr.addEventListener('keydown', (event) => {
        if (event.key === 'Enter') select();
      });
      body.append(tr);
    }
    this.table.tBodies[0].replaceWith(body);
    this.empty.hidden = this.rows.length > 0;
  }
}

/** How a detector metric's values read: milliseconds, a rate, dollars or a count. */
function formatOf(metric) {
  if (metric.startsWith('latency') || metric.startsWith('ttft')) return fmt.ms;
  if (metric === 'error_rate') return fmt.percent;
  if (metric === 'cost_usd') return fmt.usd;
  return fmt.count;
}

function modelLabel(model) {
  return model === '*' ? 'all models' : model;
}

/** The member anomalies of one incident, as the detail row under it shows them. */
function membersTable(anomalies) {
  const table = document.createElement('table');
  table.className = 'grid members-table';
  const head = table.createTHead().insertRow();
  for (const title of ['Window', 'Detector', 'Metric', 'Observed', 'Baseline', 'Score', 'State']) {
    const th = document.createElement('th');
    th.scope = 'col';
    th.textContent = title;
    head.append(th);
  }
  const body = table.createTBody();
  for (const anomaly of anomalies) {
    const tr = document.createElement('tr');
    tr.className = 'anomaly';
    tr.dataset.detector = anomaly.detector;
    tr.dataset.state = anomaly.state;
    const format = formatOf(anomaly.metric);
    tr.append(
      cell(fmt.time(anomaly.window_start)),
      cell(anomaly.detector),
      cell(anomaly.metric),
      cell(format(anomaly.observed), 'num'),
      cell(format(anomaly.baseline), 'num'),
      cell(anomaly.score.toFixed(1), 'num'),
      cell(anomaly.state, anomaly.state === 'firing' ? 'bad' : 'ok'),
    );
    body.append(tr);
  }
  return table;
}

/**
 * The incidents of `/v1/incidents`, newest first: one row each, and under it a row of
 * its anomalies that its button opens. `view.expanded` holds the ids of the open ones,
 * so a refresh keeps them open; `view.hrefOf(incident)` is the page's URL narrowed to
 * the incident and `view.onView(incident)` shows it in place; `view.callsHrefOf` and
 * `view.onCalls` do the same and list its calls too; `view.callsOf` is the id of the
 * incident whose calls are listed.
 */
export function renderIncidents(parts, answer, view) {
  const { table, empty, counter, truncated } = parts;
  const incidents = answer.incidents ?? [];
  // Tenants only matter when the key reads more than one (an admin key).
  const tenants = new Set(incidents.map((incident) => incident.tenant));
  const withTenant = tenants.size > 1 || tenants.has('*');
  const columns = table.tHead.rows[0].cells.length - (withTenant ? 0 : 1);
  const now = Date.now();
  const body = document.createElement('tbody');
  for (const incident of incidents) {
    const open = view.expanded.has(incident.id);
    const membersId = `incident-${incident.id}`;
    const tr = document.createElement('tr');
    tr.className = 'incident';
    Object.assign(tr.dataset, {
      id: incident.id,
      tenant: incident.tenant,
      model: incident.model,
      state: incident.state,
      start: String(incident.start),
      detectors: incident.detectors.join(','),
      peakDetector: incident.peak.detector,
      anomalies: String(incident.anomalies.length),
    });
    const toggle = document.createElement('button');
    toggle.type = 'button';
    toggle.className = 'expand';
    toggle.textContent = open ? '▾' : '▸';
    toggle.setAttribute('aria-expanded', String(open));
    toggle.setAttribute('aria-controls', membersId);
    toggle.setAttribute('aria-label', `${incident.anomalies.length} anomalies of ${modelLabel(incident.model)} from ${fmt.time(incident.start)}`);
    const toggleCell = cell('');
    toggleCell.append(toggle);
    const link = document.createElement('a');
    link.className = 'incident-view';
    link.href = view.hrefOf(incident);
    link.textContent = 'Show';
    link.title = `charts and tables of ${modelLabel(incident.model)} around this incident`;
    link.addEventListener('click', (event) => {
      event.preventDefault();
      view.onView(incident);
    });
    const calls = document.createElement('a');
    calls.className = 'incident-calls';
    calls.href = view.callsHrefOf(incident);
    calls.textContent = 'Calls';
    calls.title = `the calls of ${modelLabel(incident.model)} behind this incident, with their payloads`;
    calls.addEventListener('click', (event) => {
      event.preventDefault();
      view.onCalls(incident);
    });
    const linkCell = cell('');
    linkCell.append(link, calls);
    if (incident.id === view.callsOf) tr.classList.add('selected');
    const ongoing = incident.end === null || incident.end === undefined;
    const spanMs = (ongoing ? now : incident.end) - incident.start;
    tr.append(
      toggleCell,
      cell(incident.state, incident.state === 'firing' ? 'bad' : 'ok'),
      cell(modelLabel(incident.model), 'model'),
      cell(incident.tenant === '*' ? 'all tenants' : incident.tenant, 'tenant'),
      cell(fmt.time(incident.start)),
      cell(ongoing ? 'ongoing' : fmt.time(incident.end), ongoing ? 'end bad' : 'end'),
      cell(ongoing ? `${fmt.duration(spanMs)} so far` : fmt.duration(spanMs), 'num'),
      cell(incident.detectors.join(', '), 'detectors'),
      cell(`${incident.peak.score.toFixed(1)} (${incident.peak.detector})`, 'peak'),
      cell(String(incident.anomalies.length), 'num'),
      linkCell,
    );
    const members = document.createElement('tr');
    members.className = 'members';
    members.id = membersId;
    members.hidden = !open;
    const membersCell = cell('');
    membersCell.colSpan = columns;
    membersCell.append(membersTable(incident.anomalies));
    members.append(membersCell);
    toggle.addEventListener('click', () => {
      const opening = members.hidden;
      members.hidden = !opening;
      toggle.textContent = opening ? '▾' : '▸';
      toggle.setAttribute('aria-expanded', String(opening));
      if (opening) view.expanded.add(incident.id);
      else view.expanded.delete(incident.id);
    });
    body.append(tr, members);
  }
  table.tBodies[0].replaceWith(body);
  table.classList.toggle('with-tenant', withTenant);
  empty.hidden = incidents.length > 0;
  truncated.hidden = !answer.truncated;
  const firing = incidents.filter((incident) => incident.state === 'firing').length;
  counter.textContent = incidents.length === 0 ? '' : `${incidents.length} (${firing} firing)`;
  table.dataset.count = String(incidents.length);
  table.dataset.truncated = String(Boolean(answer.truncated));
}

/**
 * The drill-down's calls, newest first as `/v1/events` lists them; `open` holds the ids
 * of the calls whose payloads are shown, so a refresh keeps them open.
 */
export function renderEvents(table, empty, events, open) {
  const body = document.createElement('tbody');
  for (const event of events) {
    const tr = document.createElement('tr');
    tr.dataset.status = event.status;
    const status = event.status === 'error' ? `error${event.error_type ? `: ${event.error_type}` : ''}` : 'ok';
    const tokens = `${event.input_tokens ?? '–'} / ${event.output_tokens ?? '–'}`;
    tr.append(
      cell(fmt.time(Date.parse(event.timestamp))),
      cell(status, event.status === 'error' ? 'bad' : 'ok'),
      cell(fmt.ms(event.latency_ms), 'num'),
      cell(fmt.ms(event.ttft_ms), 'num'),
      cell(tokens, 'num'),
      cell(fmt.usd(event.cost_usd), 'num'),
      cell(event.user_id ?? '–'),
      cell(event.trace_id ?? '–', 'mono'),
    );
    appendCall(body, tr, event, open);
  }
  table.tBodies[0].replaceWith(body);
  empty.hidden = events.length > 0;
  table.dataset.count = String(events.length);
}

/**
 * Appends a call's row to `body` and, when the call carries payloads (read with
 * `include=payloads`), the row that shows them under it, opened and closed by a click
 * on the call (or Enter). Shared by every list of calls, so they all show payloads
 * alike; `open` holds the ids of the calls shown open, kept across refreshes.
 */
export function appendCall(body, tr, event, open) {
  body.append(tr);
  if (event.input === undefined && event.output === undefined) return;
  const detail = payloadRow(event, tr.cells.length);
  detail.hidden = !open.has(event.event_id);
  tr.classList.add('has-payload');
  tr.title = 'Show the prompt and the answer';
  tr.tabIndex = 0;
  tr.setAttribute('aria-expanded', String(!detail.hidden));
  const toggle = () => {
    detail.hidden = !detail.hidden;
    tr.setAttribute('aria-expanded', String(!detail.hidden));
    if (detail.hidden) open.delete(event.event_id);
    else open.add(event.event_id);
  };
  tr.addEventListener('click', toggle);
  tr.addEventListener('keydown', (keyEvent) => {
    if (keyEvent.key === 'Enter') toggle();
  });
  body.append(detail);
}

/** A call's payloads as stored (redacted at ingest), hidden until its row is clicked. */
function payloadRow(event, columns) {
  const detail = document.createElement('tr');
  detail.className = 'payload';
  detail.hidden = true;
  const td = document.createElement('td');
  td.colSpan = columns;
  for (const [name, text] of [['Input', event.input], ['Output', event.output]]) {
    const label = document.createElement('h4');
    label.textContent = name;
    const pre = document.createElement('pre');
    pre.className = name.toLowerCase();
    // As text, never as markup: a payload is whatever the caller sent.
    pre.textContent = text ?? '(none kept)';
    td.append(label, pre);
  }
  detail.append(td);
  return detail;
}
