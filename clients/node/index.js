'use strict';

/**
 * Client for the CaptchaOCR HTTP service. No dependencies: Node 20's fetch, FormData, Blob and AbortSignal.
 * @module captcha-ocr-client
 */

const { readFile } = require('node:fs/promises');

const RETRY_STATUSES = new Set([429, 503]);
const DEFAULT_BACKOFF_MS = 250; // first wait when a 429/503 carries no Retry-After; doubles per attempt
const DATA_URL = /^data:[\w.+-]+\/[\w.+-]+(;[\w.+-]+(=[\w.+-]+)?)*;base64,/i;
const BASE64 = /^[A-Za-z0-9+/_=\s-]+$/;
const TEXT_OPTIONS = ['model', 'charset', 'length'];

/** A non-2xx answer from the service: `status` is the HTTP status, `code` the service's `error.code`. */
class CaptchaApiError extends Error {
  /**
   * @param {string} message
   * @param {{status: number, code: string, body?: unknown, cause?: unknown}} details
   */
  constructor(message, { status, code, body = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = this.constructor.name;
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

/** The service could not be reached (refused, reset, DNS): status 0, code `network_error`. */
class CaptchaNetworkError extends CaptchaApiError {
  constructor(message, { cause, code = 'network_error' } = {}) {
    super(message, { status: 0, code, cause });
  }
}

/** No complete answer within `timeout` ms: status 0, code `timeout`. */
class CaptchaTimeoutError extends CaptchaNetworkError {
  constructor(message, { cause } = {}) {
    super(message, { cause, code: 'timeout' });
  }
}

/**
 * 422: the service read the image but will not vouch for the reading, which comes with the error: `prediction`
 * (the text read, '' when none), `confidence`, and `details` when they were asked for (else null).
 */
class CaptchaNoReadingError extends CaptchaApiError {
  /**
   * @param {string} message
   * @param {{status?: number, code: string, body?: unknown, prediction?: string, confidence?: number,
   *   details?: object | null}} reading
   */
  constructor(message, { status = 422, code, body = null, prediction = '', confidence = 0, details = null } = {}) {
    super(message, { status, code, body });
    this.prediction = prediction;
    this.confidence = confidence;
    this.details = details;
  }
}

/** 422 `low_confidence`: the reading is less sure than `minConfidence` (the call's, else the model's default). */
class CaptchaLowConfidenceError extends CaptchaNoReadingError {}

/**
 * 422 `unreadable`: no characters read, a number of them outside the model's trained lengths (without `length`),
 * or the model cannot tell how many characters the image holds (noise, a blank image).
 */
class CaptchaUnreadableError extends CaptchaNoReadingError {}

const NO_READING_ERRORS = { low_confidence: CaptchaLowConfidenceError, unreadable: CaptchaUnreadableError };

class CaptchaClient {
  /**
   * @param {string | URL} baseUrl e.g. `http://127.0.0.1:5000`
   * @param {{apiKey?: string, timeout?: number, retries?: number, maxRetryDelay?: number}} [options]
   */
  constructor(baseUrl, { apiKey, timeout = 30000, retries = 2, maxRetryDelay = 60000 } = {}) {
    if (typeof baseUrl !== 'string' && !(baseUrl instanceof URL)) {
      throw new TypeError('baseUrl must be a string or URL, e.g. "http://127.0.0.1:5000"');
    }
    const url = new URL(String(baseUrl)); // throws TypeError on a malformed URL
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new TypeError(`baseUrl must be http(s), not ${url.protocol}`);
    }
    if (apiKey !== undefined && apiKey !== null && (typeof apiKey !== 'string' || !apiKey)) {
      throw new TypeError('apiKey must be a non-empty string');
    }
    checkNumber('timeout', timeout, 1);
    checkNumber('retries', retries, 0, true);
    checkNumber('maxRetryDelay', maxRetryDelay, 0);
    this.baseUrl = url.href.replace(/\/+$/, '');
    this.apiKey = apiKey || undefined;
    this.timeout = timeout;
    this.retries = retries;
    this.maxRetryDelay = maxRetryDelay;
  }

  /**
   * Read one captcha: image bytes go as multipart field `image`, a base64 string or data URL as JSON; the options
   * `model`, `charset`, `length`, `minConfidence` and `details` go along as form or JSON fields. A reading the
   * service refuses rejects with a `CaptchaNoReadingError` (low confidence, unreadable) that carries it.
   * @param {Buffer | Uint8Array | string} input
   * @param {PredictOptions} [options]
   */
  async predict(input, options = {}) {
    const fields = predictFields(options);
    if (typeof input === 'string') {
      return this.#json('/predict', { image: checkString(input, 'input'), ...fields }, options);
    }
    const form = new FormData();
    form.append('image', imageBlob(checkBytes(input, 'input')), 'captcha');
    for (const [name, value] of Object.entries(fields)) form.append(name, String(value));
    return this.#request('POST', '/predict', { body: form }, options);
  }

  /**
   * Read the captcha in an image file.
   * @param {string | URL} path
   * @param {PredictOptions} [options]
   */
  async predictFile(path, options = {}) {
    if (typeof path !== 'string' && !(path instanceof URL)) throw new TypeError('path must be a string or URL');
    predictFields(options);
    return this.predict(await readFile(path), options);
  }

  /**
   * Read several captchas in one request; one bad image fails only its own entry of `results`, and so does a
   * reading the service refuses (its `error` carries `prediction` and `confidence`). The options apply to every
   * image.
   * @param {Array<Buffer | Uint8Array | string>} inputs
   * @param {PredictOptions} [options]
   */
  async predictBatch(inputs, options = {}) {
    if (!Array.isArray(inputs) || inputs.length === 0) throw new TypeError('inputs must be a non-empty array');
    const fields = predictFields(options);
    const images = inputs.map((item, index) =>
      typeof item === 'string'
        ? checkString(item, `inputs[${index}]`)
        : Buffer.from(checkBytes(item, `inputs[${index}]`)).toString('base64'),
    );
    return this.#json('/predict-batch', { images, ...fields }, options);
  }

  /**
   * Download an image (without the API key) and read it.
   * @param {string | URL} url
   * @param {PredictOptions} [options]
   */
  async predictUrl(url, options = {}) {
    if (typeof url !== 'string' && !(url instanceof URL)) throw new TypeError('url must be a string or URL');
    predictFields(options);
    const target = new URL(String(url));
    const response = await this.#fetch(target, { method: 'GET' }, options.signal);
    if (!response.ok) {
      await response.body?.cancel(); // free the connection; the error page is of no use
      throw new CaptchaApiError(`fetching ${target.href} answered ${response.status}`, {
        status: response.status,
        code: 'image_fetch_failed',
      });
    }
    return this.predict(new Uint8Array(await this.#read(response, target, 'arrayBuffer')), options);
  }

  /**
   * Liveness and readiness. Resolves with the body on 200 and on 503 (`{status: "unavailable", ...}`), unretried.
   * @param {{signal?: AbortSignal}} [options]
   */
  async health(options = {}) {
    return this.#request('GET', '/health', { accept: [503], retry: false }, options);
  }

  /**
   * The service and model description.
   * @param {{signal?: AbortSignal}} [options]
   */
  async info(options = {}) {
    return this.#request('GET', '/info', {}, options);
  }

  /**
   * The served models, from `/info`: name, alphabet, sequence lengths, accuracy, and `default` for the one used
   * when a request names none.
   * @param {{signal?: AbortSignal}} [options]
   */
  async models(options = {}) {
    return (await this.info(options)).models;
  }

  #json(path, payload, options) {
    const init = { body: JSON.stringify(payload), headers: { 'Content-Type': 'application/json' } };
    return this.#request('POST', path, init, options);
  }

  async #request(method, path, { body, headers = {}, accept = [], retry = true }, { signal } = {}) {
    const url = this.baseUrl + path;
    const init = { method, body, headers: { Accept: 'application/json', ...headers } };
    if (this.apiKey) init.headers['X-API-Key'] = this.apiKey;
    for (let attempt = 0; ; attempt++) {
      const response = await this.#fetch(url, init, signal);
      const text = await this.#read(response, url, 'text');
      const payload = parseJson(text);
      if (response.ok || accept.includes(response.status)) {
        if (payload === undefined) {
          throw new CaptchaApiError(`${method} ${url} answered ${response.status} without JSON`, {
            status: response.status,
            code: 'invalid_response',
            body: text,
          });
        }
        return payload;
      }
      if (retry && RETRY_STATUSES.has(response.status) && attempt < this.retries) {
        await sleep(retryDelay(response.headers.get('retry-after'), attempt, this.maxRetryDelay), signal);
        continue;
      }
      throw apiError(response, payload === undefined ? text : payload);
    }
  }

  /** fetch with the per-attempt timeout and the caller's signal; failures become typed errors. */
  async #fetch(url, init, signal) {
    try {
      return await fetch(url, { ...init, signal: this.#signal(signal) });
    } catch (error) {
      throw transportError(error, url, this.timeout);
    }
  }

  /** The body as `text` or `arrayBuffer`: the timeout also covers a body that stops half-way. */
  async #read(response, url, kind) {
    try {
      return await response[kind]();
    } catch (error) {
      throw transportError(error, url, this.timeout);
    }
  }

  #signal(signal) {
    const timeout = AbortSignal.timeout(this.timeout);
    return signal ? AbortSignal.any([signal, timeout]) : timeout;
  }
}

function checkNumber(name, value, min, integer = false) {
  if (typeof value !== 'number' || !(value >= min) || (integer && !Number.isInteger(value))) {
    throw new TypeError(`${name} must be ${integer ? 'an integer' : 'a number'} >= ${min}, not ${value}`);
  }
}

/**
 * @typedef {object} PredictOptions
 * @property {AbortSignal} [signal]
 * @property {string} [model] a served model's name (see `models()`); else the service's default
 * @property {string} [charset] the characters the reading may use, from the model's alphabet
 * @property {number | string} [length] an exact length (5 or "5") or a range ("4-6", "4..6")
 * @property {number} [minConfidence] 0 to 1: a less sure reading is refused (422 low_confidence); else the model's
 *   default, and 0 returns every reading
 * @property {boolean} [details] true: each character's confidence and the runner-up reading
 */

/** The options that are set, as the service's fields, type-checked; the service checks their values. */
function predictFields(options) {
  if (options === null || typeof options !== 'object') throw new TypeError('options must be an object');
  const fields = {};
  for (const name of TEXT_OPTIONS) {
    const value = options[name];
    if (value === undefined || value === null) continue;
    const isLength = name === 'length' && Number.isInteger(value) && value >= 0;
    if (!isLength && (typeof value !== 'string' || !value)) {
      const what = name === 'length' ? 'a whole number or a non-empty string such as "4-6"' : 'a non-empty string';
      throw new TypeError(`${name} must be ${what}, not ${given(value)}`);
    }
    fields[name] = value;
  }
  const { minConfidence, details } = options;
  if (minConfidence !== undefined && minConfidence !== null) {
    if (typeof minConfidence !== 'number' || !Number.isFinite(minConfidence)) {
      throw new TypeError(`minConfidence must be a number from 0 to 1, not ${given(minConfidence)}`);
    }
    fields.min_confidence = minConfidence;
  }
  if (details !== undefined && details !== null) {
    if (typeof details !== 'boolean') throw new TypeError(`details must be true or false, not ${given(details)}`);
    if (details) fields.details = true;
  }
  return fields;
}

/** A wrong option's value, for its TypeError: a number or string as written, else its type. */
function given(value) {
  if (typeof value === 'number') return String(value);
  return typeof value === 'string' ? JSON.stringify(value) : `a ${typeof value}`;
}

function checkBytes(input, name) {
  if (!(input instanceof Uint8Array)) {
    throw new TypeError(`${name} must be a Buffer/Uint8Array of image bytes, a base64 string or a data URL`);
  }
  if (input.length === 0) throw new TypeError(`${name} is empty`);
  return input;
}

function checkString(input, name) {
  const value = input.trim();
  if (!value) throw new TypeError(`${name} is an empty string`);
  if (!DATA_URL.test(value) && !BASE64.test(value)) {
    throw new TypeError(`${name} is neither base64 nor a base64 data URL (for a file path use predictFile)`);
  }
  return value;
}

/** The bytes as a Blob typed by their magic number (the service sniffs the format itself anyway). */
function imageBlob(bytes) {
  const head = Buffer.from(bytes.subarray(0, 12));
  let type = 'application/octet-stream';
  if (head.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) type = 'image/png';
  else if (head[0] === 0xff && head[1] === 0xd8) type = 'image/jpeg';
  else if (head.toString('latin1', 0, 4) === 'GIF8') type = 'image/gif';
  else if (head.toString('latin1', 8, 12) === 'WEBP') type = 'image/webp';
  return new Blob([bytes], { type });
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function apiError(response, body) {
  const error = body && typeof body === 'object' && body.error ? body.error : {};
  const code = typeof error.code === 'string' ? error.code : 'http_error';
  const message = typeof error.message === 'string' ? error.message : `HTTP ${response.status}`;
  const NoReading = Object.hasOwn(NO_READING_ERRORS, code) ? NO_READING_ERRORS[code] : null;
  if (NoReading) {
    return new NoReading(message, {
      status: response.status,
      code,
      body,
      prediction: typeof error.prediction === 'string' ? error.prediction : '',
      confidence: typeof error.confidence === 'number' ? error.confidence : 0,
      details: error.details && typeof error.details === 'object' ? error.details : null,
    });
  }
  return new CaptchaApiError(message, { status: response.status, code, body });
}

function transportError(error, url, timeout) {
  if (error instanceof CaptchaApiError) return error;
  if (error?.name === 'TimeoutError') {
    return new CaptchaTimeoutError(`no answer from ${url} within ${timeout} ms`, { cause: error });
  }
  if (error?.name === 'AbortError') return error; // cancelled by the caller's signal: theirs to handle
  const reason = error?.cause?.code || error?.cause?.message || error?.message;
  return new CaptchaNetworkError(`could not reach ${url}: ${reason}`, { cause: error });
}

/**
 * Milliseconds to wait before retrying: `Retry-After` in seconds or as an HTTP date, else a doubling default,
 * never negative and never above `cap`.
 */
function retryDelay(header, attempt, cap) {
  let ms = NaN;
  const value = header?.trim();
  if (value && /^\d+(\.\d+)?$/.test(value)) ms = Number(value) * 1000;
  else if (value) ms = Date.parse(value) - Date.now();
  if (Number.isNaN(ms)) ms = DEFAULT_BACKOFF_MS * 2 ** attempt;
  return Math.min(Math.max(ms, 0), cap);
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const done = () => {
      signal?.removeEventListener('abort', abort);
      resolve();
    };
    const abort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', abort, { once: true });
  });
}

module.exports = {
  CaptchaClient,
  CaptchaApiError,
  CaptchaNetworkError,
  CaptchaTimeoutError,
  CaptchaNoReadingError,
  CaptchaLowConfidenceError,
  CaptchaUnreadableError,
};
