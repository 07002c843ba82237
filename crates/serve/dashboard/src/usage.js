// The usage view: the usage ledger (`/v1/usage`) of one scope over UTC days, its top
// groups with `other` and the total, the billing export as a CSV download, and the
// tenant's budgets (`/v1/budgets`) as bars of spend against each limit, with when each
// runs out at the current burn for budgets with a forecast.
import * as fmt from './format.js';
import { ATTRIBUTE_PREFIX, keyLabel } from './filters.js';

/** The scopes offered; `attr.<key>` (a key of `[usage] attributes`) is typed. */
export const USAGE_SCOPES = ['user_id', 'model', 'key', 'tenant'];
/** The fields the page ranks by, first the default. */
export const USAGE_ORDERS = ['cost_usd', 'requests', 'input_tokens', 'output_tokens', 'errors'];
const DAY_PATTERN = /^\d{4}-\d{2}-\d{2}$/;

/** The table's columns: `field` is the answer's, `format` shows it. */
export const USAGE_COLUMNS = [
  { field: 'requests', title: 'Requests', format: fmt.count },
  { field: 'errors', title: 'Errors', format: fmt.count },
  { field: 'input_tokens', title: 'Tokens in', format: fmt.count },
  { field: 'output_tokens', title: 'Tokens out', format: fmt.count },
  { field: 'cache_read_input_tokens', title: 'Cache reads', format: fmt.count },
  { field: 'cost_usd', title: 'Cost', format: fmt.usd },
];

export function validUsageScope(text) {
  if (!text) return false;
  if (USAGE_SCOPES.includes(text)) return true;
  return text.startsWith(ATTRIBUTE_PREFIX) && text.length > ATTRIBUTE_PREFIX.length;
}

/** A `YYYY-MM-DD` that names a real day. */
export function validDay(text) {
  if (!text || !DAY_PATTERN.test(text)) return false;
  const ms = Date.parse(`${text}T00:00:00Z`);
  return Number.isFinite(ms) && new Date(ms).toISOString().slice(0, 10) === text;
}

/** The UTC day of `unixMs` as `YYYY-MM-DD`. */
export function utcDay(unixMs) {
  return new Date(unixMs).toISOString().slice(0, 10);
}

/** The current UTC month so far, as the API's default range: `{from, to}` days. */
export function monthSoFar(nowMs = Date.now()) {
  const today = utcDay(nowMs);
  return { from: `${today.slice(0, 8)}01`, to: today };
}

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

/** The usage table: groups, `other` and the total, or the server's message. */
export class UsageTable {
  /** `elements`: the table, its caption, the error, empty and incomplete notes. */
  constructor(elements) {
    Object.assign(this, elements);
    this.renders = 0;
    this.table.tHead.replaceChildren(this.headRow('Key'));
  }

  headRow(keyTitle) {
    const row = document.createElement('tr');
    const key = document.createElement('th');
    key.textContent = keyTitle;
    key.dataset.type = 'text';
    row.append(key);
    for (const column of USAGE_COLUMNS) {
      const th = document.createElement('th');
      th.textContent = column.title;
      th.dataset.field = column.field;
      th.className = 'num';
      row.append(th);
    }
    return row;
  }

  markRendered(state) {
    this.renders += 1;
    this.table.dataset.renders = String(this.renders);
    this.table.dataset.state = state;
  }

  /** The server refused or failed: its message in place of the table. */
  showError(by, message) {
    this.table.hidden = true;
    this.empty.hidden = true;
    this.incomplete.hidden = true;
    this.error.hidden = false;
    this.error.textContent = `Usage by ${by} failed: ${message}`;
    this.caption.textContent = '';
    this.table.dataset.by = by;
    this.markRendered('error');
  }

  /** One row: its kind (`group`, `other`, `total`), label and block of counts. */
  row(kind, label, block, order) {
    const tr = document.createElement('tr');
    tr.className = kind;
    tr.dataset.kind = kind;
    tr.append(cell(label, kind === 'group' && label === '(none)' ? 'key none' : 'key'));
    for (const column of USAGE_COLUMNS) {
      const value = block[column.field];
      const td = cell(column.format(value), 'num');
      td.dataset.field = column.field;
      td.dataset.value = value === null || value === undefined ? '' : String(value);
      if (column.field === 'cost_usd') td.title = `$${Number(value).toFixed(6)}`;
      if (column.field === order) td.classList.add('ranked');
      tr.append(td);
    }
    return tr;
  }

  /** `answer`: `/v1/usage`'s JSON. */
  render(answer, top) {
    const { by } = answer;
    this.error.hidden = true;
    this.table.hidden = false;
    for (const [name, value] of Object.entries({
      by, from: answer.from, to: answer.to, order: answer.order, tenant: answer.tenant,
      complete: String(answer.complete), groups: String(answer.groups.length),
    })) this.table.dataset[name] = value;
    this.table.tHead.replaceChildren(this.headRow(by));
    for (const th of this.table.tHead.querySelectorAll('th[data-field]')) {
      const ranked = th.dataset.field === answer.order;
      th.classList.toggle('sorted', ranked);
      th.setAttribute('aria-sort', ranked ? 'descending' : 'none');
    }
    const body = document.createElement('tbody');
    for (const group of answer.groups) {
      const value = group.key[by] ?? null;
      const tr = this.row('group', keyLabel(value), group, answer.order);
      tr.dataset.key = JSON.stringify(value);
      body.append(tr);
    }
    const foot = document.createElement('tfoot');
    if (answer.other) foot.append(this.row('other', 'other', answer.other, answer.order));
    foot.append(this.row('total', 'total', answer.total, answer.order));
    this.table.replaceChild(body, this.table.tBodies[0]);
    this.table.replaceChild(foot, this.table.tFoot);
    this.empty.hidden = answer.total.requests > 0;
    this.incomplete.hidden = answer.complete;
    const shown = answer.other ? `top ${top} by ${answer.order}` : `every value, by ${answer.order}`;
    this.caption.textContent = `Tenant ${answer.tenant} · ${answer.from} → ${answer.to} (UTC days, both included)`
      + ` · ${shown} · exact counts from the usage ledger`;
    this.markRendered('ready');
  }
}

/** A limit's amount in its unit. */
function amount(value, unit) {
  return unit === 'usd' ? fmt.usd(value) : `${fmt.count(value)} tokens`;
}

/**
 * The budgets of `/v1/budgets` as bars, one per limit: spend against the limit in the
 * current UTC day or month, as of the last minute the evaluator finished.
 */
export function renderBudgets(parts, answer) {
  const budgets = answer?.budgets ?? [];
  const list = document.createDocumentFragment();
  for (const budget of budgets) {
    for (const limit of budget.limits) {
      const item = document.createElement('div');
      item.className = 'budget';
      // Which entry of /v1/budgets the bar is: a budget of each value has one per value.
      Object.assign(item.dataset, {
        name: budget.name,
        scopeValue: budget.scope_value ?? '',
        tenant: budget.tenant,
        model: budget.model ?? '',
        period: limit.period,
        unit: limit.unit,
        spent: String(limit.spent),
        limit: String(limit.limit),
        percent: String(limit.percent),
        runsOut: limit.runs_out_in_minutes == null ? '' : String(limit.runs_out_in_minutes),
      });
      const label = document.createElement('div');
      label.className = 'budget-label';
      // A user's, key's or attribute value's budget names the value it is of.
      const scope = budget.scope_value != null
        ? `${budget.tenant} · ${budget.scope} ${budget.scope_value}`
        : budget.model ? `${budget.tenant} · ${budget.model}` : `${budget.tenant} · all models`;
      const period = limit.period === 'day' ? 'today' : 'this month';
      label.textContent = `${scope} · ${limit.unit === 'usd' ? 'spend' : 'tokens'} ${period} (UTC)`;
      const figures = document.createElement('span');
      figures.className = 'budget-figures';
      figures.textContent = `${amount(limit.spent, limit.unit)} of ${amount(limit.limit, limit.unit)}`
        + ` · ${limit.percent.toFixed(1)}%`;
      label.append(figures);
      const bar = document.createElement('div');
      bar.className = 'budget-bar';
      bar.setAttribute('role', 'meter');
      bar.setAttribute('aria-valuemin', '0');
      bar.setAttribute('aria-valuemax', String(limit.limit));
      bar.setAttribute('aria-valuenow', String(limit.spent));
      bar.setAttribute('aria-label', label.textContent);
      const fill = document.createElement('div');
      fill.className = 'budget-fill';
      if (limit.percent >= 100) fill.classList.add('over');
      else if (limit.crossed.length > 0) fill.classList.add('warn');
      fill.style.width = `${Math.min(100, Math.max(0, limit.percent))}%`;
      bar.append(fill);
      // The alert thresholds within the bar, crossed ones marked.
      for (const threshold of budget.thresholds) {
        if (threshold > 100) continue;
        const tick = document.createElement('span');
        tick.className = limit.crossed.includes(threshold) ? 'tick crossed' : 'tick';
        tick.style.left = `${threshold}%`;
        tick.title = `${threshold}%${limit.crossed.includes(threshold) ? ' (crossed)' : ''}`;
        bar.append(tick);
      }
      const note = document.createElement('div');
      note.className = 'hint';
      note.textContent = budget.evaluated_to
        ? `As of ${fmt.time(budget.evaluated_to)} (the last minute evaluated)`
        : 'Not evaluated yet';
      item.append(label, bar, note);
      // With a forecast: when the limit runs out at the current burn (for a budget of
      // a user, key or attribute value, the burn of the evaluator's last read of it).
      if (budget.forecast_hours != null) {
        const forecast = document.createElement('div');
        forecast.className = 'hint budget-forecast';
        const minutes = limit.runs_out_in_minutes;
        forecast.textContent = minutes == null
          ? 'At the current burn, it does not run out before the period resets'
          : `At the current burn, it runs out in about ${(minutes / 60).toFixed(1)} h`
            + (minutes <= budget.forecast_hours * 60 ? ` (within the ${budget.forecast_hours} h forecast)` : '');
        item.append(forecast);
      }
      list.append(item);
    }
  }
  parts.list.replaceChildren(list);
  parts.list.dataset.budgets = String(budgets.length);
  parts.empty.hidden = budgets.length > 0;
}

/** Saves `blob` as a file named `name` through a temporary link. */
export function saveFile(blob, name) {
  const address = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = address;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  // Kept a while: the browser reads the file after the click returns.
  setTimeout(() => URL.revokeObjectURL(address), 60_000);
}
