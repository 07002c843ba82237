// The models table (sortable), the anomaly list and the drill-down event list. Rows
// are rebuilt off-screen and swapped in one step, so a refresh never shows an empty table.
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

export function renderAnomalies(table, empty, counter, anomalies) {
  const body = document.createElement('tbody');
  for (const anomaly of anomalies) {
    const tr = document.createElement('tr');
    tr.dataset.model = anomaly.model;
    tr.dataset.state = anomaly.state;
    const format = anomaly.metric.startsWith('latency') || anomaly.metric.startsWith('ttft')
      ? fmt.ms
      : anomaly.metric === 'error_rate'
        ? fmt.percent
        : anomaly.metric === 'cost_usd'
          ? fmt.usd
          : fmt.count;
    tr.append(
      cell(fmt.time(anomaly.window_start)),
      cell(anomaly.model === '*' ? 'all models' : anomaly.model),
      cell(anomaly.detector),
      cell(anomaly.metric),
      cell(format(anomaly.observed), 'num'),
      cell(format(anomaly.baseline), 'num'),
      cell(anomaly.score.toFixed(1), 'num'),
      cell(anomaly.state, anomaly.state === 'firing' ? 'bad' : 'ok'),
    );
    body.append(tr);
  }
  table.tBodies[0].replaceWith(body);
  empty.hidden = anomalies.length > 0;
  const firing = anomalies.filter((a) => a.state === 'firing').length;
  counter.textContent = anomalies.length === 0 ? '' : `${anomalies.length} (${firing} firing)`;
  table.dataset.count = String(anomalies.length);
}

export function renderEvents(table, empty, events) {
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
    body.append(tr);
  }
  table.tBodies[0].replaceWith(body);
  empty.hidden = events.length > 0;
  table.dataset.count = String(events.length);
}
