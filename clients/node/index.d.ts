/// <reference types="node" />

/** An image as bytes (PNG, JPEG, ...), a base64 string, or a base64 data URL (`data:image/png;base64,...`). */
export type CaptchaInput = Buffer | Uint8Array | string;

export interface CaptchaClientOptions {
  /** Sent as the `X-API-Key` header (never to the image servers of `predictUrl`). */
  apiKey?: string;
  /** Milliseconds allowed for each HTTP attempt, answer body included. Default 30000. */
  timeout?: number;
  /** Extra attempts after a 429 or 503 answer, each after the wait `Retry-After` asks for. Default 2. */
  retries?: number;
  /**
   * Longest wait before a retry, in milliseconds, whatever `Retry-After` says. Default 60000. Without a
   * `Retry-After` header the client waits 250 ms, then 500 ms, doubling per attempt, within the same cap.
   */
  maxRetryDelay?: number;
}

export interface RequestOptions {
  /** Cancels the request, and any wait before a retry; the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * Options of `predict`, `predictFile`, `predictBatch` and `predictUrl`, sent as form or JSON fields when set. The
 * service checks the values: an unknown `model` is a 404 `unknown_model`, a bad value a 400 `invalid_parameter`.
 */
export interface PredictOptions extends RequestOptions {
  /** A served model's name (see `models()`); without it the service's default model reads. */
  model?: string;
  /** The characters the reading may use, a subset of the model's alphabet. */
  charset?: string;
  /** An exact length (`5` or `"5"`) or a range (`"4-6"`, `"4..6"`). */
  length?: number | string;
  /**
   * 0 to 1, sent as `min_confidence`: a reading less sure than this is refused with a `CaptchaLowConfidenceError`
   * (in a batch, its entry fails). Without it the model's own default applies (`min_confidence` in `models()`);
   * `0` returns every reading.
   */
  minConfidence?: number;
  /** `true`: the answer gains `details`, each character's confidence and the runner-up reading. */
  details?: boolean;
}

/**
 * The codes the service answers errors with, each defined once in the service (`codes()` in
 * captcha_api/service/errors.py); tests/test_error_codes.py checks this list against it.
 */
export type ServiceErrorCode =
  | 'bad_request'
  | 'batch_too_large'
  | 'feedback_full'
  | 'feedback_unavailable'
  | 'image_too_large'
  | 'internal_error'
  | 'invalid_api_key'
  | 'invalid_base64'
  | 'invalid_image'
  | 'invalid_json'
  | 'invalid_parameter'
  | 'low_confidence'
  | 'method_not_allowed'
  | 'missing_api_key'
  | 'missing_image'
  | 'model_unavailable'
  | 'not_found'
  | 'payload_too_large'
  | 'rate_limited'
  | 'request_timeout'
  | 'server_busy'
  | 'unknown_model'
  | 'unknown_request'
  | 'unreadable'
  | 'unreadable_image'
  | 'unsupported_format'
  | 'unsupported_media_type';

/** The codes the client sets itself: no JSON error in the answer, an unusable answer, no answer at all. */
export type ClientErrorCode = 'http_error' | 'invalid_response' | 'image_fetch_failed' | 'network_error' | 'timeout';

/** Any code a `CaptchaApiError` may carry; a newer service may send codes this release does not list. */
export type ErrorCode = ServiceErrorCode | ClientErrorCode | (string & {});

export interface ErrorDetail {
  code: ErrorCode;
  message: string;
  /** `low_confidence` and `unreadable` only: the text read ('' when none). */
  prediction?: string;
  /** `low_confidence` and `unreadable` only: its confidence. */
  confidence?: number;
  /** `low_confidence` and `unreadable` with the `details` option only. */
  details?: ReadingDetails;
}

/** What the `details` option adds to a reading. */
export interface ReadingDetails {
  /** Each character read, in order, with its confidence in [0, 1]. */
  characters: Array<{ char: string; confidence: number }>;
  /** The likeliest other reading (a character swapped, one fewer or one more); null when there is none. */
  runner_up: { prediction: string; confidence: number } | null;
}

/** `POST /predict`. */
export interface Prediction {
  success: true;
  prediction: string;
  /** Probability of the whole reading, in [0, 1]. */
  confidence: number;
  /** With the `details` option only. */
  details?: ReadingDetails;
}

/**
 * One image of a batch: its reading, or the error it alone failed with. A reading the service refuses
 * (`low_confidence`, `unreadable`) fails its entry with the reading in `error.prediction` and `error.confidence`.
 */
export type BatchItem =
  | { index: number; success: true; prediction: string; confidence: number; details?: ReadingDetails }
  | { index: number; success: false; error: ErrorDetail };

/** `POST /predict-batch`: one bad image fails only its own entry. */
export interface BatchPrediction {
  success: true;
  total: number;
  results: BatchItem[];
}

/** `GET /health`. */
export interface Health {
  status: 'ok' | 'unavailable';
  model_loaded: boolean;
  version: string;
}

/** A served model, as `GET /info` describes it. */
export interface ModelInfo {
  name: string;
  runtime: string;
  /** [height, width] */
  image_size: [number, number];
  min_sequence_length: number;
  max_sequence_length: number;
  alphabet: string;
  /** The confidence below which this model's readings are refused when a request sets no `minConfidence`. */
  min_confidence: number;
  accuracy: Record<string, unknown>;
}

/** `GET /info`. */
export interface Info {
  name: string;
  version: string;
  description: string;
  /** The default model. */
  model: ModelInfo;
  /** Every served model, by name; `default` marks the one a request without `model` gets. */
  models: Array<ModelInfo & { default: boolean }>;
  endpoints: Record<string, string>;
  limits: { max_image_bytes: number; max_batch: number; rate_limit: string | null };
}

/**
 * Every failure the client raises, except a `TypeError` for a bad argument (thrown before any request) and a
 * cancellation by the caller's own `signal`.
 *
 * - An HTTP answer that is not 2xx: `status` is the HTTP status, `code` the service's `error.code`
 *   (`invalid_api_key`, `invalid_image`, `rate_limited`, `model_unavailable`, ...; `http_error` when the body has
 *   none, e.g. from a proxy), `body` the parsed JSON body (or the raw text when it is not JSON).
 * - `predictUrl` when the image server does not answer 2xx: `status` is that server's status, `code`
 *   `image_fetch_failed`.
 * - A 2xx answer that is not JSON: `code` `invalid_response`.
 * - A reading the service will not vouch for (422 `low_confidence`, `unreadable`): the subclasses
 *   `CaptchaLowConfidenceError` and `CaptchaUnreadableError` of `CaptchaNoReadingError`, carrying the reading.
 * - No answer at all: the subclasses `CaptchaNetworkError` and `CaptchaTimeoutError`, with `status` 0.
 */
export class CaptchaApiError extends Error {
  constructor(message: string, details: { status: number; code: ErrorCode; body?: unknown; cause?: unknown });
  readonly status: number;
  readonly code: ErrorCode;
  readonly body: unknown;
}

/** The service could not be reached (connection refused or reset, DNS failure): `status` 0, `code` `network_error`. */
export class CaptchaNetworkError extends CaptchaApiError {
  constructor(message: string, details?: { cause?: unknown; code?: string });
}

/** No complete answer within `timeout` milliseconds: `status` 0, `code` `timeout`. Not retried. */
export class CaptchaTimeoutError extends CaptchaNetworkError {
  constructor(message: string, details?: { cause?: unknown });
}

/**
 * 422: the service read the image but will not vouch for the reading, which comes with the error. Refresh the
 * captcha and read the new one, or fall back to another reader.
 */
export class CaptchaNoReadingError extends CaptchaApiError {
  constructor(
    message: string,
    reading: {
      status?: number;
      code: ErrorCode;
      body?: unknown;
      prediction?: string;
      confidence?: number;
      details?: ReadingDetails | null;
    },
  );
  /** The text read; '' when no characters were. */
  readonly prediction: string;
  /** Its confidence, in [0, 1]. */
  readonly confidence: number;
  /** Each character's confidence and the runner-up, when the `details` option was set; else null. */
  readonly details: ReadingDetails | null;
}

/** 422 `low_confidence`: less sure than `minConfidence` (the call's, else the model's default). */
export class CaptchaLowConfidenceError extends CaptchaNoReadingError {
  readonly code: 'low_confidence';
}

/**
 * 422 `unreadable`: no characters read, a number of them outside the model's trained lengths (without `length`),
 * or the model cannot tell how many characters the image holds (noise, a blank image). `minConfidence: 0` does not
 * change it.
 */
export class CaptchaUnreadableError extends CaptchaNoReadingError {
  readonly code: 'unreadable';
}

export class CaptchaClient {
  /** @param baseUrl the service's root, e.g. `http://127.0.0.1:5000` */
  constructor(baseUrl: string | URL, options?: CaptchaClientOptions);
  readonly baseUrl: string;
  readonly apiKey: string | undefined;
  readonly timeout: number;
  readonly retries: number;
  readonly maxRetryDelay: number;

  /** Bytes go as multipart field `image`; a base64 string or data URL as JSON `{"image": ...}`. */
  predict(input: CaptchaInput, options?: PredictOptions): Promise<Prediction>;
  /** Reads the file, then `predict`s its bytes. */
  predictFile(path: string | URL, options?: PredictOptions): Promise<Prediction>;
  /** JSON `{"images": [...]}`; bytes are sent as base64. The options apply to every image. */
  predictBatch(inputs: CaptchaInput[], options?: PredictOptions): Promise<BatchPrediction>;
  /** Downloads the image itself (with no API key), then `predict`s its bytes. */
  predictUrl(url: string | URL, options?: PredictOptions): Promise<Prediction>;
  /** Resolves on 200 and on 503 (no model loaded yet), without retrying. */
  health(options?: RequestOptions): Promise<Health>;
  info(options?: RequestOptions): Promise<Info>;
  /** `info().models`: every model the service serves. */
  models(options?: RequestOptions): Promise<Info['models']>;
}
