// The breakdown view: one dimension's top groups (every metric of the summary, with
// sparklines of requests and latency p95), the `other` row and the total; a sortable
// header (the server ranks, so "top N" follows the sort); the slowest calls of a group
// or of an incident.
import * as fmt from './format.js';
import { keyLabel } from './filters.js';
import { appendCall } from './tables.js';

/** Sparkline size in CSS pixels. */
const SPARK_WIDTH = 80;
const SPARK_HEIGHT = 22;
const SVG = 'http://www.w3.org/2000/svg';

/**
 * The table's columns: `order` is the field the API ranks by (`null`: not sortable),
 * `value` reads it from a metric block, `format` shows it. `key` sorts on the page.
 */
export const COLUMNS = [
  { id: 'key', title: 'Key', order: 'key', type: 'text' },
  { id: 'requests', title: 'Requests', order: 'requests', value: (b) => b.requests, format: fmt.count },
  { id: 'requests_spark', title: 'Trend', spark: 'requests', hint: 'Requests per step over the range' },
  { id: 'errors', title: 'Errors', order: 'errors', value: (b) => b.errors, format: fmt.count },
  { id: 'error_rate', title: 'Error rate', order: 'error_rate', value: (b) => b.error_rate, format: fmt.percent },
  { id: 'p50', title: 'p50', order: 'latency_ms.p50', value: (b) => b.latency_ms?.p50, format: fmt.ms },
  { id: 'p95', title: 'p95', order: 'latency_ms.p95', value: (b) => b.latency_ms?.p95, format: fmt.ms },
  { id: 'p95_spark', title: 'p95 trend', spark: 'latency_p95', hint: 'Latency p95 per step over the range' },
  { id: 'p99', title: 'p99', order: 'latency_ms.p99', value: (b) => b.latency_ms?.p99, format: fmt.ms },
  { id: 'ttft_p95', title: 'TTFT p95', order: 'ttft_ms.p95', value: (b) => b.ttft_ms?.p95, format: fmt.ms },
  { id: 'input_tokens', title: 'Tokens in', order: 'input_tokens', value: (b) => b.input_tokens, format: fmt.count },
  { id: 'output_tokens', title: 'Tokens out', order: 'output_tokens', value: (b) => b.output_tokens, format: fmt.count },
  { id: 'cost_usd', title: 'Cost', order: 'cost_usd', value: (b) => b.cost_usd, format: fmt.usd },
  { id: 'unique_users', title: 'Users', order: 'unique_users', value: (b) => b.unique_users, format: fmt.count },
];

/** The metrics of the two sparklines, one timeseries call each. */
export const SPARK_METRICS = ['requests', 'latency_p95'];

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

/**
 * An inline SVG line of `points` (`[t_ms, value|null]`, as the timeseries API gives
 * them); gaps where the value is null; empty (no line) without points.
 */
export function sparkline(points, format) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('width', String(SPARK_WIDTH));
  svg.setAttribute('height', String(SPARK_HEIGHT));
  svg.setAttribute('viewBox', `0 0 ${SPARK_WIDTH} ${SPARK_HEIGHT}`);
  const values = points.map(([, value]) => value).filter((value) => value !== null && value !== undefined);
  svg.dataset.points = String(values.length);
  svg.dataset.sum = String(values.reduce((sum, value) => sum + value, 0));
  if (values.length === 0) {
    svg.classList.add('empty');
    return svg;
  }
  const max = Math.max(...values);
  const min = Math.min(0, ...values);
  const span = max - min || 1;
  const x = (i) => (points.length <= 1 ? SPARK_WIDTH / 2 : (i / (points.length - 1)) * (SPARK_WIDTH - 2) + 1);
  const y = (value) => SPARK_HEIGHT - 2 - ((value - min) / span) * (SPARK_HEIGHT - 4);
  // One polyline per run of values, so a step without data is a gap, not a slope.
  let run = [];
  const runs = [];
  points.forEach(([, value], i) => {
    if (value === null || value === undefined) {
      if (run.length) runs.push(run);
      run = [];
    } else {
      run.push(`${x(i).toFixed(1)},${y(value).toFixed(1)}`);
    }
  });
  if (run.length) runs.push(run);
  for (const coordinates of runs) {
    const line = document.createElementNS(SVG, coordinates.length === 1 ? 'circle' : 'polyline');
    if (coordinates.length === 1) {
      const [cx, cy] = coordinates[0].split(',');
      line.setAttribute('cx', cx);
      line.setAttribute('cy', cy);
      line.setAttribute('r', '1.5');
    } else {
      line.setAttribute('points', coordinates.join(' '));
    }
    svg.append(line);
  }
  const title = document.createElementNS(SVG, 'title');
  title.textContent = `peak ${format(max)}, last ${format(values[values.length - 1])}`;
  svg.append(title);
  return svg;
}

/** The series of a `by` timeseries answer keyed by the group's value as JSON. */
export function seriesByKey(answer, dimension) {
  const map = new Map();
  for (const series of answer?.series ?? []) {
    if (series.other || !series.key) continue;
    map.set(JSON.stringify(series.key[dimension] ?? null), series.points);
  }
  return map;
}

export class BreakdownView {
  /**
   * `elements`: the table, its caption, the error and empty notes. `onSelect(value)`
   * when a group is clicked, `onSort(order)` when a header is, `onSlowest(value)` for
   * a group's slowest calls.
   */
  constructor(elements, { onSelect, onSort, onSlowest }) {
    this.table = elements.table;
    this.caption = elements.caption;
    this.error = elements.error;
    this.empty = elements.empty;
    this.onSelect = onSelect;
    this.onSlowest = onSlowest;
    this.renders = 0;
    const row = document.createElement('tr');
    for (const column of COLUMNS) {
      const th = document.createElement('th');
      th.textContent = column.title;
      if (column.hint) th.title = column.hint;
      th.dataset.column = column.id;
      if (column.type) th.dataset.type = column.type;
      if (column.spark) th.className = 'spark-col';
      if (column.order) {
        th.dataset.order = column.order;
        th.tabIndex = 0;
        const sort = () => onSort(column.order);
        th.addEventListener('click', sort);
        th.addEventListener('keydown', (event) => {
          if (event.key === 'Enter' || event.key === ' ') {
            event.preventDefault();
            sort();
          }
        });
      }
      row.append(th);
    }
    row.append(document.createElement('th'));
    this.table.tHead.replaceChildren(row);
  }

  /** Hides everything: no dimension picked. */
  clear() {
    this.table.hidden = true;
    this.error.hidden = true;
    this.empty.hidden = true;
    this.caption.textContent = '';
    delete this.table.dataset.by;
    this.table.dataset.state = 'off';
  }

  /** The server refused or failed: its message instead of the table. */
  showError(by, message) {
    this.table.hidden = true;
    this.empty.hidden = true;
    this.error.hidden = false;
    this.error.textContent = `Breakdown by ${by} failed: ${message}`;
    this.caption.textContent = '';
    this.table.dataset.by = by;
    this.table.dataset.state = 'error';
    this.markRendered();
  }

  markRendered() {
    this.renders += 1;
    this.table.dataset.renders = String(this.renders);
  }

  /**
   * `answer`: the breakdown; `sparks`: `{requests, latency_p95}` maps from
   * [`seriesByKey`] (or `null` with `sparkError` when they could not be read); `sort`:
   * `{order, ascending}` as shown (order `key` sorts the groups here by key).
   */
  render(answer, sparks, sparkError, sort, selected) {
    const by = answer.by[0];
    this.error.hidden = true;
    this.table.hidden = false;
    this.table.dataset.by = by;
    this.table.dataset.order = sort.order;
    this.table.dataset.sortOrder = sort.ascending ? 'ascending' : 'descending';
    this.table.dataset.from = String(answer.from);
    this.table.dataset.to = String(answer.to);
    this.table.dataset.groups = String(answer.groups.length);
    this.table.dataset.state = 'ready';
    for (const th of this.table.tHead.querySelectorAll('th[data-order]')) {
      const active = th.dataset.order === sort.order;
      th.classList.toggle('sorted', active);
      th.setAttribute('aria-sort', active ? (sort.ascending ? 'ascending' : 'descending') : 'none');
    }
    let groups = answer.groups;
    if (sort.order === 'key') {
      const sign = sort.ascending ? 1 : -1;
      groups = [...groups].sort((a, b) => {
        const x = a.key[by];
        const y = b.key[by];
        // The group without the field sorts last either way.
        if (x === null) return 1;
        if (y === null) return -1;
        return sign * x.localeCompare(y);
      });
    }
    const body = document.createElement('tbody');
    for (const group of groups) {
      const value = group.key[by] ?? null;
      const tr = this.row('group', keyLabel(value), group, sparks, JSON.stringify(value));
      tr.dataset.key = JSON.stringify(value);
      tr.tabIndex = 0;
      if (selected.includes(JSON.stringify(value))) tr.classList.add('selected');
      const select = () => this.onSelect(value);
      tr.addEventListener('click', select);
      tr.addEventListener('keydown', (event) => {
        if (event.key === 'Enter') select();
      });
      const slowest = document.createElement('button');
      slowest.type = 'button';
      slowest.className = 'slowest';
      slowest.textContent = 'Slowest';
      slowest.title = `The slowest calls of ${keyLabel(value)}`;
      slowest.addEventListener('click', (event) => {
        event.stopPropagation();
        this.onSlowest(value, group.latency_ms?.p95 ?? null);
      });
      const actions = cell('');
      actions.append(slowest);
      tr.append(actions);
      body.append(tr);
    }
    const foot = document.createElement('tfoot');
    if (answer.other) {
      const tr = this.row('other', 'other', answer.other, null, null);
      tr.append(cell(''));
      foot.append(tr);
    }
    const total = this.row('total', 'total', answer.total, null, null);
    total.append(cell(''));
    foot.append(total);
    this.table.tBodies[0].replaceWith(body);
    this.table.tFoot.replaceWith(foot);
    this.empty.hidden = answer.groups.length > 0;
    const orderName = COLUMNS.find((column) => column.order === sort.order)?.title ?? sort.order;
    const ranked = sort.order === 'key' ? 'requests' : orderName;
    let caption = `Top ${answer.groups.length} values of ${by} by ${ranked}`;
    if (sort.order === 'key') caption += ', sorted by key on this page';
    if (answer.other) caption += '; every other value merged into "other"';
    caption += '. Click a value to filter the whole page by it.';
    if (sparkError) caption += ` Sparklines unavailable: ${sparkError}`;
    this.caption.textContent = caption;
    this.markRendered();
  }

  /** One row: `kind` group, other or total; sparklines only for groups. */
  row(kind, label, block, sparks, sparkKey) {
    const tr = document.createElement('tr');
    tr.className = kind;
    tr.dataset.kind = kind;
    for (const column of COLUMNS) {
      if (column.id === 'key') {
        tr.append(cell(label, kind === 'group' && label === '(none)' ? 'key none' : 'key'));
        continue;
      }
      if (column.spark) {
        const td = cell('', 'spark-cell');
        if (kind === 'group') {
          const points = sparks?.[column.spark]?.get(sparkKey) ?? [];
          const format = column.spark === 'requests' ? fmt.count : fmt.ms;
          const svg = sparkline(points, format);
          svg.dataset.metric = column.spark;
          td.append(svg);
        }
        tr.append(td);
        continue;
      }
      const value = column.value(block);
      const td = cell(column.format(value), 'num');
      td.dataset.field = column.id;
      td.dataset.value = value === null || value === undefined ? '' : String(value);
      if (column.id === 'error_rate' && value >= 0.05) td.classList.add('bad');
      tr.append(td);
    }
    return tr;
  }
}

/** Each event's value of `dimension` (`attr.<key>` reads the attributes). */
export function eventValue(event, dimension) {
  if (dimension.startsWith('attr.')) return event.attributes?.[dimension.slice(5)] ?? null;
  return event[dimension] ?? null;
}

/**
 * The slowest calls of a group or an incident: `events` as `/v1/events` answered
 * (newest first), sorted here slowest first; `dimension` adds a column with each
 * call's value (none for `model`, which has its own). A call read with its payloads
 * shows them on click, as in the drill-down; `open` holds the ids of those shown open.
 */
export function renderSlowest(table, empty, events, dimension, limit, open) {
  const sorted = [...events].sort((a, b) => b.latency_ms - a.latency_ms).slice(0, limit);
  const header = table.tHead.rows[0].cells[2];
  header.textContent = dimension;
  header.hidden = dimension === 'model';
  const body = document.createElement('tbody');
  for (const event of sorted) {
    const tr = document.createElement('tr');
    tr.className = 'call';
    tr.dataset.status = event.status;
    tr.dataset.latency = String(event.latency_ms);
    // The call as listed, without its payloads: those are in the row under it.
    tr.dataset.event = JSON.stringify({ ...event, input: undefined, output: undefined });
    const status = event.status === 'error' ? `error${event.error_type ? `: ${event.error_type}` : ''}` : 'ok';
    tr.append(
      cell(fmt.time(Date.parse(event.timestamp))),
      cell(event.model),
      Object.assign(cell(keyLabel(eventValue(event, dimension))), { hidden: dimension === 'model' }),
      cell(status, event.status === 'error' ? 'bad' : 'ok'),
      cell(fmt.ms(event.latency_ms), 'num'),
      cell(fmt.ms(event.ttft_ms), 'num'),
      cell(`${event.input_tokens ?? '–'} / ${event.output_tokens ?? '–'}`, 'num'),
      cell(fmt.usd(event.cost_usd), 'num'),
      cell(event.user_id ?? '–'),
      cell(event.trace_id ?? '–', 'mono'),
    );
    appendCall(body, tr, event, open);
  }
  table.tBodies[0].replaceWith(body);
  empty.hidden = sorted.length > 0;
  table.dataset.count = String(sorted.length);
  return sorted.length;
}
