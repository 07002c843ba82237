// Filters in the query API's grammar, `DIMENSION:V1|V2` or `DIMENSION:!V1|V2`: written
// for a group of a breakdown, read back to label the chips. In a value, `\|`, `\!` and
// `\\` are a literal `|`, leading `!` and `\`; `null` is the missing field and `\null`
// the word.

/** The dimensions offered for a breakdown; `attr.<key>` is typed by the user. */
export const DIMENSIONS = [
  'model', 'response_model', 'provider', 'operation', 'status', 'error_type',
  'endpoint', 'region', 'user_id', 'session_id',
];
export const ATTRIBUTE_PREFIX = 'attr.';

/** One value as a filter writes it; `null` (the missing field) is the bare word. */
export function escapeValue(value, first = true) {
  if (value === null || value === undefined) return 'null';
  if (value === 'null') return '\\null';
  let text = '';
  [...value].forEach((character, position) => {
    const leadingBang = character === '!' && position === 0 && first;
    if (character === '|' || character === '\\' || leadingBang) text += '\\';
    text += character;
  });
  return text;
}

/** The filter that keeps the events whose `dimension` is `value`. */
export function filterFor(dimension, value) {
  // An empty list is refused, so the empty value is written as two of them.
  if (value === '') return `${dimension}:|`;
  return `${dimension}:${escapeValue(value)}`;
}

/** The filter that keeps the events whose `dimension` is one of `values`. */
export function filterForAny(dimension, values) {
  if (values.length === 1) return filterFor(dimension, values[0]);
  return `${dimension}:${values.map((value, index) => escapeValue(value, index === 0)).join('|')}`;
}

/**
 * `{dimension, negated, values}` of a filter's text (values unescaped, `null` for the
 * missing field), or `null` when it does not have the shape; the server is the judge
 * of the rest.
 */
export function parseFilter(text) {
  const colon = text.indexOf(':');
  if (colon <= 0) return null;
  const dimension = text.slice(0, colon);
  let list = text.slice(colon + 1);
  const negated = list.startsWith('!');
  if (negated) list = list.slice(1);
  if (list === '') return null;
  const values = [];
  let current = '';
  let escaped = false;
  const finish = () => {
    values.push(current === 'null' && !escaped ? null : current);
    current = '';
    escaped = false;
  };
  for (let i = 0; i < list.length; i += 1) {
    const character = list[i];
    if (character === '\\' && i + 1 < list.length) {
      current += list[i + 1];
      escaped = true;
      i += 1;
    } else if (character === '|') {
      finish();
    } else {
      current += character;
    }
  }
  finish();
  return { dimension, negated, values };
}

/** A group's key as the page shows it: the missing field is "(none)". */
export function keyLabel(value) {
  if (value === null || value === undefined) return '(none)';
  return value === '' ? '(empty)' : value;
}

/** `region = eastus`, `status ≠ ok`, `region = eastus or japaneast`, for a chip. */
export function describeFilter(text) {
  const filter = parseFilter(text);
  if (!filter) return text;
  const values = [...new Set(filter.values.map(keyLabel))].join(' or ');
  return `${filter.dimension} ${filter.negated ? '≠' : '='} ${values}`;
}

/** The dimension a filter's text names (what a new chip on it replaces). */
export function filterDimension(text) {
  const colon = text.indexOf(':');
  return colon > 0 ? text.slice(0, colon) : text;
}
