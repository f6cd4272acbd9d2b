'use strict';

// CaptchaClient against the real service (gunicorn, shipped model) and captchas from the project's generator.

const assert = require('node:assert/strict');
const { mkdtemp, readFile, rm } = require('node:fs/promises');
const { tmpdir } = require('node:os');
const path = require('node:path');
const { after, before, describe, test } = require('node:test');

const { CaptchaApiError, CaptchaClient } = require('..');
const { KEY, generateCaptchas, listen, startService, toPng } = require('../test-support/service');

const ALPHABET = '2456789бвгджклмнпрст';
const ONE_PIXEL_PNG =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==';

let dir;
let service;
let captchas; // [{file, text, bytes}]
let client;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'captcha-node-client-'));
  const [started, generated] = await Promise.all([
    startService({ CAPTCHA_API_KEYS: KEY }, path.join(dir, 'service.log')),
    generateCaptchas(dir),
  ]);
  service = started;
  captchas = await Promise.all(generated.map(async (c) => ({ ...c, bytes: await readFile(c.file) })));
  client = new CaptchaClient(service.url, { apiKey: KEY });
});

after(async () => {
  await service?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Every reading is well formed, and all but at most one equal the labels. */
function assertReadings(results, texts = captchas.map((c) => c.text)) {
  assert.equal(results.length, texts.length);
  for (const result of results) {
    assert.equal(result.success, true);
    assert.equal(typeof result.prediction, 'string');
    assert.ok(result.confidence >= 0 && result.confidence <= 1, `confidence ${result.confidence}`);
  }
  const misses = results.filter((result, i) => result.prediction !== texts[i]);
  assert.ok(misses.length <= 1, `read ${JSON.stringify(results.map((r) => r.prediction))}, labels ${texts}`);
}

const base64 = (bytes) => Buffer.from(bytes).toString('base64');
const dataUrl = (bytes) => `data:image/jpeg;base64,${base64(bytes)}`;

describe('service description', () => {
  test('health() answers the documented shape', async () => {
    assert.deepEqual(await client.health(), { status: 'ok', model_loaded: true, version: '1.0.0' });
  });

  test('info() describes the model', async () => {
    const info = await client.info();
    assert.equal(info.name, 'CAPTCHA OCR API');
    assert.equal(info.version, '1.0.0');
    assert.equal(info.model.name, 'fssp');
    assert.deepEqual(info.model.image_size, [60, 200]);
    assert.equal(info.model.max_sequence_length, 7);
    assert.equal(info.model.alphabet, ALPHABET);
    assert.ok('POST /predict' in info.endpoints && 'POST /predict-batch' in info.endpoints);
  });
});

describe('predict', () => {
  test('JPEG Buffers, sent as multipart', async () => {
    assertReadings(await Promise.all(captchas.map((c) => client.predict(c.bytes))));
  });

  test('a PNG as a plain Uint8Array', async () => {
    const png = await readFile(await toPng(captchas[0].file, path.join(dir, 'first.png')));
    const result = await client.predict(new Uint8Array(png.buffer, png.byteOffset, png.length));
    assert.equal(result.prediction, captchas[0].text);
  });

  test('base64 strings, sent as JSON', async () => {
    assertReadings(await Promise.all(captchas.map((c) => client.predict(base64(c.bytes)))));
  });

  test('data URLs, sent as JSON', async () => {
    assertReadings(await Promise.all(captchas.map((c) => client.predict(dataUrl(c.bytes)))));
  });

  test('predictFile reads the file', async () => {
    assertReadings(await Promise.all(captchas.map((c) => client.predictFile(c.file))));
  });
});

test('predictBatch: Buffers, base64 and data URLs; one bad entry fails alone', async () => {
  const inputs = captchas.map((c, i) => [c.bytes, base64(c.bytes), dataUrl(c.bytes)][i % 3]);
  inputs.splice(3, 0, base64(Buffer.from('this is not an image')));
  const body = await client.predictBatch(inputs);
  assert.equal(body.success, true);
  assert.equal(body.total, captchas.length + 1);
  assert.deepEqual(
    body.results.map((r) => r.index),
    inputs.map((_, i) => i),
  );
  const [bad] = body.results.splice(3, 1);
  assert.equal(bad.success, false);
  assert.equal(typeof bad.error.code, 'string');
  assert.equal(typeof bad.error.message, 'string');
  assertReadings(body.results);
});

describe('predictUrl', () => {
  let images;
  const seen = [];

  before(async () => {
    images = await listen(async (request, response) => {
      seen.push(request.headers);
      const captcha = captchas.find((c) => request.url === `/captcha/${path.basename(c.file)}`);
      if (!captcha) return response.writeHead(404).end('not found');
      response.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(captcha.bytes);
    });
  });

  after(() => images?.close());

  test('fetches the image itself, without the API key, then reads it', async () => {
    const urls = captchas.map((c) => `${images.url}/captcha/${path.basename(c.file)}`);
    assertReadings(await Promise.all(urls.map((url) => client.predictUrl(url))));
    assert.equal(seen.length, captchas.length);
    assert.ok(seen.every((headers) => !('x-api-key' in headers)), 'the API key leaked to the image server');
  });

  test('an image server error is a CaptchaApiError with its status', async () => {
    await assert.rejects(client.predictUrl(`${images.url}/missing.png`), {
      name: 'CaptchaApiError',
      status: 404,
      code: 'image_fetch_failed',
    });
  });
});

describe('errors from the service', () => {
  test('a wrong API key: 401 invalid_api_key', async () => {
    const stranger = new CaptchaClient(service.url, { apiKey: 'wrong-key-0123456789abcdefghijkl' });
    const error = await stranger.predict(captchas[0].bytes).catch((e) => e);
    assert.ok(error instanceof CaptchaApiError);
    assert.equal(error.status, 401);
    assert.equal(error.code, 'invalid_api_key');
    assert.equal(error.body.success, false);
    assert.equal(error.body.error.code, 'invalid_api_key');
    assert.equal(error.message, error.body.error.message);
  });

  test('no API key: 401 missing_api_key, while health() needs none', async () => {
    const anonymous = new CaptchaClient(service.url);
    await assert.rejects(anonymous.info(), { name: 'CaptchaApiError', status: 401, code: 'missing_api_key' });
    assert.equal((await anonymous.health()).status, 'ok');
  });

  for (const [what, input, status, code] of [
    ['bytes that are no image', Buffer.from('this is not an image'), 400, 'invalid_image'],
    ['base64 of bytes that are no image', base64(Buffer.from('GIF89a trash')), 400, 'invalid_image'],
    ['a data URL that is not base64', 'data:image/png;base64,@@@@', 400, 'invalid_base64'],
    ['a 1x1 PNG', Buffer.from(ONE_PIXEL_PNG, 'base64'), 422, 'unreadable_image'],
  ]) {
    test(`${what}: ${status} ${code}`, async () => {
      await assert.rejects(client.predict(input), { name: 'CaptchaApiError', status, code });
    });
  }
});

describe('bad arguments are TypeErrors, before any request', () => {
  // Nothing listens on port 9 of loopback: a request would end in CaptchaNetworkError, not TypeError.
  const offline = new CaptchaClient('http://127.0.0.1:9', { apiKey: KEY, retries: 0 });

  for (const [what, call] of [
    ['a number', () => offline.predict(42)],
    ['null', () => offline.predict(null)],
    ['an empty Buffer', () => offline.predict(Buffer.alloc(0))],
    ['an empty string', () => offline.predict('  ')],
    ['a file path given to predict', () => offline.predict('captchas/test.png')],
    ['a batch that is not an array', () => offline.predictBatch('abc')],
    ['an empty batch', () => offline.predictBatch([])],
    ['a batch with an object', () => offline.predictBatch([Buffer.from('x'), {}])],
    ['a path that is not a string', () => offline.predictFile(42)],
    ['a malformed url', () => offline.predictUrl('not a url')],
  ]) {
    test(what, async () => {
      await assert.rejects(call(), TypeError);
    });
  }

  test('constructor options', () => {
    assert.throws(() => new CaptchaClient(), TypeError);
    assert.throws(() => new CaptchaClient('ftp://127.0.0.1'), TypeError);
    assert.throws(() => new CaptchaClient('http://127.0.0.1', { retries: -1 }), TypeError);
    assert.throws(() => new CaptchaClient('http://127.0.0.1', { retries: 1.5 }), TypeError);
    assert.throws(() => new CaptchaClient('http://127.0.0.1', { timeout: 0 }), TypeError);
    assert.throws(() => new CaptchaClient('http://127.0.0.1', { apiKey: 12345 }), TypeError);
    assert.equal(new CaptchaClient('http://127.0.0.1:5000/').baseUrl, 'http://127.0.0.1:5000');
  });
});
