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

/**
 * GET a JSON API path (relative to the page, so a path prefix keeps working). A
 * parameter whose value is an array is repeated, once per element (`filter`).
 */
export async function getJson(path, params = {}) {
  const url = new URL(path, window.location.href);
  for (const [name, value] of Object.entries(params)) {
    for (const each of Array.isArray(value) ? value : [value]) {
      if (each !== undefined && each !== null && each !== '') {
        url.searchParams.append(name, String(each));
      }
    }
  }
  const headers = { Accept: 'application/json' };
  if (sessionKey) headers.Authorization = `Bearer ${sessionKey}`;
  const response = await fetch(url, { headers, cache: 'no-store' });
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
  if (!response.ok) throw new ApiError(path, response.status, message);
  return body;
}
