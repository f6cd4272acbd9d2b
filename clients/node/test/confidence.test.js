'use strict';

// minConfidence and details against the real service (gunicorn, shipped model): a reading the service will not
// vouch for is a typed error carrying the reading, and in a batch a failed entry with the reading in its error.

const assert = require('node:assert/strict');
const { mkdtemp, readFile, rm } = require('node:fs/promises');
const { tmpdir } = require('node:os');
const path = require('node:path');
const { after, before, describe, test } = require('node:test');

const {
  CaptchaApiError,
  CaptchaClient,
  CaptchaLowConfidenceError,
  CaptchaNoReadingError,
  CaptchaUnreadableError,
} = require('..');
const { KEY, blankPng, generateCaptchas, startService } = require('../test-support/service');

let dir;
let service;
let captcha; // {file, bytes}
let blank; // a blank white 200x60 PNG
let client;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'captcha-node-confidence-'));
  const [started, [generated], blankFile] = await Promise.all([
    startService({ CAPTCHA_API_KEYS: KEY }, path.join(dir, 'service.log')),
    generateCaptchas(path.join(dir, 'captchas'), { count: 1, seed: 31 }),
    blankPng(path.join(dir, 'blank.png')),
  ]);
  service = started;
  captcha = { file: generated.file, bytes: await readFile(generated.file) };
  blank = await readFile(blankFile);
  client = new CaptchaClient(service.url, { apiKey: KEY });
});

after(async () => {
  await service?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const base64 = (bytes) => Buffer.from(bytes).toString('base64');
/** One image in each way `predict` sends it: bytes as multipart, base64 as JSON. */
const FORMS = [
  ['multipart', (bytes) => bytes],
  ['JSON', (bytes) => base64(bytes)],
];

/** The shape of `details`: its characters spell `text`, each confidence and the runner-up's in [0, 1]. */
function assertDetails(details, text) {
  assert.equal(details.characters.map((c) => c.char).join(''), text);
  for (const { confidence } of details.characters) assert.ok(confidence >= 0 && confidence <= 1, String(confidence));
  const second = details.runner_up;
  assert.ok(second !== null, 'no runner-up');
  assert.deepEqual(Object.keys(second).sort(), ['confidence', 'prediction']);
  assert.notEqual(second.prediction, text);
  assert.ok(second.confidence >= 0 && second.confidence <= 1, String(second.confidence));
}

describe('minConfidence above the reading: CaptchaLowConfidenceError with the reading', () => {
  for (const [how, input] of FORMS) {
    test(how, async () => {
      const read = await client.predict(input(captcha.bytes));
      assert.ok(read.prediction && read.confidence < 1, JSON.stringify(read));
      const error = await client.predict(input(captcha.bytes), { minConfidence: 1 }).catch((e) => e);
      assert.ok(error instanceof CaptchaLowConfidenceError, String(error));
      assert.ok(error instanceof CaptchaNoReadingError && error instanceof CaptchaApiError);
      assert.equal(error.name, 'CaptchaLowConfidenceError');
      assert.equal(error.status, 422);
      assert.equal(error.code, 'low_confidence');
      assert.equal(error.prediction, read.prediction);
      assert.equal(error.confidence, read.confidence);
      assert.equal(error.details, null);
      assert.match(error.message, /below min_confidence 1/);
      // at 0 every reading is answered
      assert.equal((await client.predict(input(captcha.bytes), { minConfidence: 0 })).prediction, read.prediction);
    });
  }

  test('predictFile', async () => {
    const { prediction } = await client.predictFile(captcha.file);
    await assert.rejects(client.predictFile(captcha.file, { minConfidence: 1 }), {
      name: 'CaptchaLowConfidenceError',
      code: 'low_confidence',
      prediction,
    });
  });
});

describe('a blank white image: CaptchaUnreadableError, whatever minConfidence', () => {
  for (const [how, input] of FORMS) {
    test(how, async () => {
      const error = await client.predict(input(blank), { minConfidence: 0 }).catch((e) => e);
      assert.ok(error instanceof CaptchaUnreadableError && error instanceof CaptchaNoReadingError, String(error));
      assert.equal(error.status, 422);
      assert.equal(error.code, 'unreadable');
      assert.equal(error.prediction, '');
      assert.match(error.message, /no characters/);
    });
  }
});

describe('details: each character and the runner-up', () => {
  for (const [how, input] of FORMS) {
    test(how, async () => {
      const plain = await client.predict(input(captcha.bytes));
      assert.equal(plain.details, undefined);
      const read = await client.predict(input(captcha.bytes), { details: true });
      assert.equal(read.prediction, plain.prediction);
      assert.equal(read.confidence, plain.confidence);
      assertDetails(read.details, read.prediction);
      assert.equal((await client.predict(input(captcha.bytes), { details: false })).details, undefined);
      // a refusal carries them too
      const error = await client.predict(input(captcha.bytes), { details: true, minConfidence: 1 }).catch((e) => e);
      assert.ok(error instanceof CaptchaLowConfidenceError, String(error));
      assert.deepEqual(error.details, read.details);
    });
  }
});

test('predictBatch: a refused reading fails its own entry, with the reading in its error', async () => {
  const { prediction } = await client.predict(captcha.bytes);
  const body = await client.predictBatch([captcha.bytes, blank], { details: true });
  const [good, unreadable] = body.results;
  assert.equal(body.total, 2);
  assert.equal(good.success, true);
  assert.equal(good.prediction, prediction);
  assertDetails(good.details, prediction);
  assert.equal(unreadable.success, false);
  assert.equal(unreadable.index, 1);
  assert.equal(unreadable.error.code, 'unreadable');
  assert.equal(unreadable.error.prediction, '');

  const strict = await client.predictBatch([captcha.bytes, base64(captcha.bytes)], { minConfidence: 1 });
  for (const [index, entry] of strict.results.entries()) {
    assert.equal(entry.index, index);
    assert.equal(entry.success, false);
    assert.equal(entry.error.code, 'low_confidence');
    assert.equal(entry.error.prediction, prediction);
    assert.ok(entry.error.confidence >= 0 && entry.error.confidence <= 1);
    assert.equal(entry.error.details, undefined);
  }
});
