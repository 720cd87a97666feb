// REST: fetch with the bearer token; every failure becomes an ApiError in the contract's shape.

const TOKEN_KEY = 'chat.token';
const REQUEST_TIMEOUT_MS = 15000;

export class ApiError extends Error {
  constructor(status, code, message, field = null, retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status; // 0: the server could not be reached
    this.code = code;
    this.field = field;
    this.retryAfter = retryAfter;
  }
}

const PUBLIC_PATHS = new Set(['/api/auth/login', '/api/auth/register']);

export class Api {
  constructor() {
    this.token = localStorage.getItem(TOKEN_KEY);
    this.onUnauthorized = null; // called when a signed-in request gets 401
  }

  setToken(token) {
    this.token = token;
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  }

  /**
   * One request. `query` for GET/DELETE, `body` (JSON) otherwise. Resolves with the parsed
   * JSON, rejects with ApiError (or an AbortError when `signal` aborted it).
   */
  async request(method, path, { body, query, signal, timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
    let url = path;
    if (query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.set(k, v);
      const qs = params.toString();
      if (qs) url += `?${qs}`;
    }
    const headers = { Accept: 'application/json' };
    const token = this.token;
    if (token) headers.Authorization = `Bearer ${token}`;
    let payload;
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const onAbort = () => controller.abort();
    signal?.addEventListener('abort', onAbort);
    let response;
    let text;
    try {
      response = await fetch(url, { method, headers, body: payload, signal: controller.signal, cache: 'no-store' });
      text = await response.text();
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new ApiError(
        0,
        'network',
        timedOut ? 'The server did not answer in time.' : 'Cannot reach the server. Check your connection.',
      );
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
    let data = null;
    try {
      data = text ? JSON.parse(text) : {};
    } catch {
      data = null;
    }
    if (!response.ok) throw this.failure(response.status, data, response.headers.get('Retry-After'), token, path);
    if (data === null) throw new ApiError(response.status, 'bad_response', 'The server sent an unreadable answer.');
    return data;
  }

  /** The ApiError of an answer that is not 2xx; a 401 to a signed-in request signs out. */
  failure(status, data, retryAfter, token, path) {
    const e = (data && data.error) || {};
    const err = new ApiError(
      status,
      e.code || `http_${status}`,
      e.message || `The request failed (${status}).`,
      e.field || null,
      retryAfter,
    );
    err.details = e; // the whole error object (a suspension's reason and until, devices_changed's devices)
    // Only the token in use when the request left counts: a newer sign-in is not undone. A
    // wrong password given to prove who one is (invalid_credentials) leaves the session be.
    const sessionRefused = status === 401 && e.code !== 'invalid_credentials';
    if (sessionRefused && token && token === this.token && !PUBLIC_PATHS.has(path)) {
      this.onUnauthorized?.(err);
    }
    return err;
  }

  /**
   * POST a file as the raw body (XMLHttpRequest: fetch has no upload progress).
   * `onProgress(sent, total)` as it goes; `signal` aborts it (rejects with an AbortError).
   * Resolves with the parsed JSON, rejects with ApiError like request().
   */
  upload(path, query, blob, { onProgress, signal } = {}) {
    const url = `${path}?${new URLSearchParams(query)}`;
    const token = this.token;
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', url);
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.setRequestHeader('Content-Type', 'application/octet-stream'); // the server sniffs the bytes
      if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`);
      xhr.upload.addEventListener('progress', (event) => onProgress?.(event.loaded, event.total || blob.size));
      const aborted = () => reject(new DOMException('The upload was cancelled.', 'AbortError'));
      const onAbort = () => xhr.abort();
      signal?.addEventListener('abort', onAbort, { once: true });
      xhr.addEventListener('abort', aborted);
      xhr.addEventListener('error', () => reject(new ApiError(0, 'network', 'Cannot reach the server. Check your connection.')));
      xhr.addEventListener('load', () => {
        signal?.removeEventListener('abort', onAbort);
        let data = null;
        try {
          data = xhr.responseText ? JSON.parse(xhr.responseText) : {};
        } catch {
          data = null;
        }
        if (xhr.status < 200 || xhr.status >= 300) reject(this.failure(xhr.status, data, xhr.getResponseHeader('Retry-After'), token, path));
        else if (data === null) reject(new ApiError(xhr.status, 'bad_response', 'The server sent an unreadable answer.'));
        else resolve(data);
      });
      if (signal?.aborted) {
        aborted();
        return;
      }
      xhr.send(blob);
    });
  }

  get(path, query, options = {}) {
    return this.request('GET', path, { ...options, query });
  }

  post(path, body = {}, options = {}) {
    return this.request('POST', path, { ...options, body });
  }

  put(path, body = {}) {
    return this.request('PUT', path, { body });
  }

  patch(path, body = {}) {
    return this.request('PATCH', path, { body });
  }

  del(path) {
    return this.request('DELETE', path);
  }
}

/** The path of a resource, each id escaped. */
export function path(strings, ...ids) {
  return strings.reduce((acc, s, i) => acc + s + (i < ids.length ? encodeURIComponent(ids[i]) : ''), '');
}
