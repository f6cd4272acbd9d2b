'use strict';

// Retries on 429 and 503 (a real rate-limited service; and small node servers for 503 and for the
// exact Retry-After forms), timeouts and unreachable services.

const assert = require('node:assert/strict');
const { mkdtemp, readFile, rm } = require('node:fs/promises');
const { tmpdir } = require('node:os');
const path = require('node:path');
const { after, before, describe, test } = require('node:test');

const { CaptchaApiError, CaptchaClient, CaptchaNetworkError, CaptchaTimeoutError } = require('..');
const { KEY, countLogged, freePort, generateCaptchas, listen, startService } = require('../test-support/service');

let dir;
let captchas; // [{file, text, bytes}]

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'captcha-node-retry-'));
  const generated = await generateCaptchas(dir, { count: 6 });
  captchas = await Promise.all(generated.map(async (c) => ({ ...c, bytes: await readFile(c.file) })));
});

after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const OK = { success: true, prediction: 'д25сг', confidence: 0.99 };

/** A node server that answers 503 with `headers` for the first `failures` requests, then 200 OK. */
function flaky(failures, headers = {}) {
  return listen((request, response, count) => {
    request.resume();
    const json = { 'Content-Type': 'application/json' };
    if (count <= failures) {
      const body = { success: false, error: { code: 'server_busy', message: 'try later' } };
      return response.writeHead(503, { ...json, ...headers }).end(JSON.stringify(body));
    }
    response.writeHead(200, json).end(JSON.stringify(OK));
  });
}

describe('429 from a rate-limited service (CAPTCHA_RATE_LIMIT=2/second)', () => {
  let service;

  before(async () => {
    const env = { CAPTCHA_API_KEYS: KEY, CAPTCHA_RATE_LIMIT: '2/second' };
    service = await startService(env, path.join(dir, 'limited.log'));
  });

  after(() => service?.stop());

  test('a burst all succeeds, each 429 retried after its Retry-After', async () => {
    const client = new CaptchaClient(service.url, { apiKey: KEY, retries: 5 });
    const started = Date.now();
    const results = await Promise.all(captchas.map((c) => client.predict(c.bytes)));
    const misses = results.filter((r, i) => r.prediction !== captchas[i].text);
    assert.ok(misses.length <= 1, JSON.stringify(results));
    // 6 requests at 2 per second: some had to wait for a later window.
    assert.ok(countLogged(service, 'POST /predict 429') >= 1, service.log());
    assert.ok(Date.now() - started >= 900, `took only ${Date.now() - started} ms`);
  });

  test('with retries: 0 the 429 is surfaced', async () => {
    const client = new CaptchaClient(service.url, { apiKey: KEY, retries: 0 });
    const outcomes = await Promise.allSettled(captchas.map((c) => client.predict(c.bytes)));
    const rejected = outcomes.filter((o) => o.status === 'rejected').map((o) => o.reason);
    assert.ok(rejected.length >= 1, 'no request was rate limited');
    for (const error of rejected) {
      assert.ok(error instanceof CaptchaApiError);
      assert.equal(error.status, 429);
      assert.equal(error.code, 'rate_limited');
    }
  });
});

describe('503 every time (node server: a service whose workers hold all the bodies they may)', () => {
  let server;

  before(async () => {
    server = await flaky(Infinity);
  });

  after(() => server?.close());

  test('predict is tried 1 + retries times, then rejects with the service code', async () => {
    const client = new CaptchaClient(server.url, { apiKey: KEY, retries: 2 });
    await assert.rejects(client.predict(captchas[0].bytes), {
      name: 'CaptchaApiError',
      status: 503,
      code: 'server_busy',
    });
    assert.equal(server.requests, 3);
  });
});

describe('Retry-After forms (node server answering 503)', () => {
  const servers = [];
  const serve = async (...args) => {
    const server = await flaky(...args);
    servers.push(server);
    return server;
  };

  after(() => Promise.all(servers.map((server) => server.close())));

  test('Retry-After: 0 twice, then 200', async () => {
    const server = await serve(2, { 'Retry-After': '0' });
    const client = new CaptchaClient(server.url, { retries: 2 });
    assert.deepEqual(await client.predict(captchas[0].bytes), OK);
    assert.equal(server.requests, 3);
  });

  test('Retry-After as an HTTP date in the past', async () => {
    const server = await serve(1, { 'Retry-After': new Date(Date.now() - 60000).toUTCString() });
    const client = new CaptchaClient(server.url);
    assert.deepEqual(await client.predictBatch([captchas[0].bytes]), OK);
    assert.equal(server.requests, 2);
  });

  test('Retry-After as an HTTP date is waited for', async () => {
    const server = await serve(1, { 'Retry-After': new Date(Date.now() + 2000).toUTCString() });
    const started = Date.now();
    await new CaptchaClient(server.url).predict(captchas[0].bytes);
    assert.ok(Date.now() - started >= 900, `waited only ${Date.now() - started} ms`); // the date has whole seconds
  });

  test('a long Retry-After is capped by maxRetryDelay', async () => {
    const server = await serve(1, { 'Retry-After': '3600' });
    const started = Date.now();
    await new CaptchaClient(server.url, { maxRetryDelay: 100 }).predict(captchas[0].bytes);
    assert.ok(Date.now() - started < 5000);
    assert.equal(server.requests, 2);
  });

  test('without Retry-After the client backs off a little', async () => {
    const server = await serve(1);
    const started = Date.now();
    await new CaptchaClient(server.url).predict(captchas[0].bytes);
    assert.ok(Date.now() - started >= 200, `retried after ${Date.now() - started} ms`);
  });

  test('retries exhausted: the last 503 is surfaced', async () => {
    const server = await serve(Infinity, { 'Retry-After': '0' });
    await assert.rejects(new CaptchaClient(server.url, { retries: 1 }).predict(captchas[0].bytes), {
      status: 503,
      code: 'server_busy',
    });
    assert.equal(server.requests, 2);
  });

  test('an abort signal also ends the wait before a retry', async () => {
    const server = await serve(Infinity, { 'Retry-After': '30' });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 200);
    await assert.rejects(new CaptchaClient(server.url).predict(captchas[0].bytes, { signal: controller.signal }), {
      name: 'AbortError',
    });
    assert.equal(server.requests, 1);
  });
});

describe('no answer', () => {
  let silent;

  before(async () => {
    silent = await listen(() => {}); // reads requests, never answers
  });

  after(() => silent?.close());

  test('timeout: CaptchaTimeoutError after the configured 300 ms, not retried', async () => {
    const client = new CaptchaClient(silent.url, { timeout: 300 });
    const started = Date.now();
    const error = await client.predict(captchas[0].bytes).catch((e) => e);
    const elapsed = Date.now() - started;
    assert.ok(error instanceof CaptchaTimeoutError, String(error));
    assert.ok(error instanceof CaptchaNetworkError && error instanceof CaptchaApiError);
    assert.equal(error.status, 0);
    assert.equal(error.code, 'timeout');
    assert.ok(elapsed >= 250 && elapsed < 3000, `${elapsed} ms`);
    assert.equal(silent.requests, 1);
  });

  test('nothing listening: CaptchaNetworkError', async () => {
    const client = new CaptchaClient(`http://127.0.0.1:${await freePort()}`);
    const error = await client.health().catch((e) => e);
    assert.ok(error instanceof CaptchaNetworkError, String(error));
    assert.ok(!(error instanceof CaptchaTimeoutError));
    assert.equal(error.status, 0);
    assert.equal(error.code, 'network_error');
    assert.match(error.message, /ECONNREFUSED/);
  });
});
