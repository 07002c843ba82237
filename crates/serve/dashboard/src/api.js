// Talks to the query API of the server that served this page, with the API key kept
// in this browser's local storage (never elsewhere).

const KEY_STORAGE = 'ais.apiKey';

/** The server refused the key (or wants one): 401 or 403. */
export class AuthError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Any other answer that is not a success; `reason` is the server's own message. */
export class ApiError extends Error {
  constructor(path, status, reason) {
    super(`${path}: ${reason}`);
    this.status = status;
    this.reason = reason;
  }
}

export function storedKey() {
  try {
    return window.localStorage.getItem(KEY_STORAGE) || '';
  } catch {
    return '';
  }
}

export function storeKey(key) {
  try {
    window.localStorage.setItem(KEY_STORAGE, key);
  } catch {
    // Storage disabled: the key lives as long as the page.
  }
  sessionKey = key;
}

export function forgetKey() {
  try {
    window.localStorage.removeItem(KEY_STORAGE);
  } catch {
    // Nothing stored.
  }
  sessionKey = '';
}

let sessionKey = storedKey();

export function currentKey() {
  return sessionKey;
}

/** The URL of an API path (relative to the page, so a path prefix keeps working). */
function apiUrl(path, params) {
  const url = new URL(path, window.location.href);
  for (const [name, value] of Object.entries(params)) {
    for (const each of Array.isArray(value) ? value : [value]) {
      if (each !== undefined && each !== null && each !== '') {
        url.searchParams.append(name, String(each));
      }
    }
  }
  return url;
}

/**
 * GET an API path asking for `accept`, with the stored key; throws [`AuthError`] or
 * [`ApiError`] (with the server's JSON message) unless the answer is a success.
 */
async function request(path, params, accept) {
  const headers = { Accept: accept };
  if (sessionKey) headers.Authorization = `Bearer ${sessionKey}`;
  const response = await fetch(apiUrl(path, params), { headers, cache: 'no-store' });
  if (response.ok) return response;
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const message = (body && body.error) || `${response.status} ${response.statusText}`;
  if (response.status === 401 || response.status === 403) {
    throw new AuthError(response.status, message);
  }
  throw new ApiError(path, response.status, message);
}

/**
 * GET a JSON API path. A parameter whose value is an array is repeated, once per
 * element (`filter`).
 */
export async function getJson(path, params = {}) {
  const response = await request(path, params, 'application/json');
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/** GET an API path as CSV (`/v1/usage`'s export), whole, as a `Blob`. */
export async function getCsv(path, params = {}) {
  const response = await request(path, params, 'text/csv');
  return response.blob();
}
