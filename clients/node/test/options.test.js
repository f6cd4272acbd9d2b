'use strict';

// The options model, charset and length against the real service serving two models: the shipped fssp model and
// 'mirror', the same network with its alphabet reversed, so mirror's reading is fssp's with each character mapped
// to the mirrored place of the alphabet.

const assert = require('node:assert/strict');
const { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } = require('node:fs/promises');
const { tmpdir } = require('node:os');
const path = require('node:path');
const { after, before, describe, test } = require('node:test');
const { inspect } = require('node:util');

const { CaptchaApiError, CaptchaClient } = require('..');
const { KEY, ROOT, generateCaptchas, listen, startService } = require('../test-support/service');

const ALPHABET = '2456789бвгджклмнпрст';
const SHIPPED = path.join(ROOT, 'model', 'fssp');

let dir;
let service;
let captchas; // [{file, text, bytes}]
let client;

/** The two models in a folder of their own; the service serves every model of its default model's folder. */
async function modelFolder(folder) {
  await mkdir(folder);
  const meta = JSON.parse(await readFile(`${SHIPPED}.json`, 'utf8'));
  const mirror = { ...meta, name: 'mirror', alphabet: [...meta.alphabet].reverse().join('') };
  await Promise.all([
    copyFile(`${SHIPPED}.onnx`, path.join(folder, 'fssp.onnx')),
    copyFile(`${SHIPPED}.onnx`, path.join(folder, 'mirror.onnx')),
    writeFile(path.join(folder, 'fssp.json'), JSON.stringify(meta)),
    writeFile(path.join(folder, 'mirror.json'), JSON.stringify(mirror)),
  ]);
  return path.join(folder, 'fssp');
}

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'captcha-node-options-'));
  const model = await modelFolder(path.join(dir, 'models'));
  const [started, generated] = await Promise.all([
    startService({ CAPTCHA_API_KEYS: KEY, CAPTCHA_MODEL: model }, path.join(dir, 'service.log')),
    generateCaptchas(path.join(dir, 'captchas'), { count: 6, seed: 21 }),
  ]);
  service = started;
  captchas = await Promise.all(generated.map(async (c) => ({ ...c, bytes: await readFile(c.file) })));
  client = new CaptchaClient(service.url, { apiKey: KEY });
});

after(async () => {
  await service?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const mirrored = (text) => [...text].map((c) => ALPHABET[ALPHABET.length - 1 - ALPHABET.indexOf(c)]).join('');
const base64 = (bytes) => Buffer.from(bytes).toString('base64');
/** One captcha in each way `predict` sends it: bytes as multipart, base64 as JSON. */
const FORMS = [
  ['multipart', (c) => c.bytes],
  ['JSON', (c) => base64(c.bytes)],
];

test('models() lists both models, fssp the default', async () => {
  const models = Object.fromEntries((await client.models()).map((m) => [m.name, m]));
  assert.deepEqual(Object.keys(models).sort(), ['fssp', 'mirror']);
  assert.equal(models.fssp.default, true);
  assert.equal(models.mirror.default, false);
  assert.equal(models.fssp.alphabet, ALPHABET);
  assert.equal(models.mirror.alphabet, [...ALPHABET].reverse().join(''));
  assert.equal(models.mirror.min_sequence_length, 4);
  assert.equal(models.mirror.max_sequence_length, 7);
});

describe('model picks the model', () => {
  for (const [how, input] of FORMS) {
    test(`predict, ${how}`, async () => {
      for (const captcha of captchas.slice(0, 3)) {
        const { prediction } = await client.predict(input(captcha));
        assert.equal((await client.predict(input(captcha), { model: 'fssp' })).prediction, prediction);
        const mirror = (await client.predict(input(captcha), { model: 'mirror' })).prediction;
        assert.notEqual(mirror, prediction);
        assert.equal(mirror, mirrored(prediction));
      }
    });
  }

  test('predictFile and predictBatch', async () => {
    const { prediction } = await client.predictFile(captchas[0].file);
    assert.equal((await client.predictFile(captchas[0].file, { model: 'mirror' })).prediction, mirrored(prediction));
    const inputs = captchas.map((c, i) => (i % 2 ? c.bytes : base64(c.bytes)));
    const plain = await client.predictBatch(inputs);
    const mirror = await client.predictBatch(inputs, { model: 'mirror' });
    assert.deepEqual(
      mirror.results.map((r) => r.prediction),
      plain.results.map((r) => mirrored(r.prediction)),
    );
  });

  test('predictUrl', async () => {
    const images = await listen((request, response) => {
      response.writeHead(200, { 'Content-Type': 'image/jpeg' }).end(captchas[0].bytes);
    });
    try {
      const { prediction } = await client.predictUrl(`${images.url}/captcha.jpg`);
      const mirror = await client.predictUrl(`${images.url}/captcha.jpg`, { model: 'mirror' });
      assert.equal(mirror.prediction, mirrored(prediction));
    } finally {
      await images.close();
    }
  });
});

describe('an unknown model: CaptchaApiError 404 unknown_model', () => {
  for (const [how, call] of [
    ['multipart', () => client.predict(captchas[0].bytes, { model: 'nope' })],
    ['JSON', () => client.predict(base64(captchas[0].bytes), { model: 'nope' })],
    ['batch', () => client.predictBatch([captchas[0].bytes], { model: 'nope' })],
  ]) {
    test(how, async () => {
      const error = await call().catch((e) => e);
      assert.ok(error instanceof CaptchaApiError, String(error));
      assert.equal(error.status, 404);
      assert.equal(error.code, 'unknown_model');
      assert.match(error.message, /fssp, mirror/);
    });
  }
});

describe('length and charset constrain the reading', () => {
  test('the captchas are not all 6 characters long, nor all within the charset', () => {
    assert.ok(captchas.some((c) => c.text.length !== 6));
    assert.ok(captchas.some((c) => ![...c.text].every((ch) => '2457бвг'.includes(ch))));
  });

  for (const [how, input] of FORMS) {
    for (const length of [6, '6']) {
      test(`length ${JSON.stringify(length)}, ${how}`, async () => {
        const answers = await Promise.all(captchas.map((c) => client.predict(input(c), { length })));
        assert.deepEqual(
          answers.map((a) => a.prediction.length),
          captchas.map(() => 6),
        );
      });
    }

    test(`length "4..5", ${how}`, async () => {
      for (const captcha of captchas) {
        const { prediction } = await client.predict(input(captcha), { length: '4..5' });
        assert.ok(prediction.length >= 4 && prediction.length <= 5, prediction);
      }
    });

    test(`charset, ${how}`, async () => {
      for (const captcha of captchas) {
        const { prediction } = await client.predict(input(captcha), { charset: '2457бвг' });
        assert.ok(prediction && [...prediction].every((c) => '2457бвг'.includes(c)), prediction);
      }
      const exact = await client.predict(input(captchas[0]), { model: 'mirror', charset: '2457бвг', length: 5 });
      assert.match(exact.prediction, /^[2457бвг]{5}$/);
    });
  }

  test('predictBatch applies them to every image', async () => {
    const body = await client.predictBatch(captchas.map((c) => c.bytes), { charset: 'бвг', length: '6' });
    assert.equal(body.total, captchas.length);
    for (const result of body.results) assert.match(result.prediction, /^[бвг]{6}$/);
  });
});

describe('values the service refuses: CaptchaApiError 400 invalid_parameter', () => {
  for (const options of [
    { length: '6-4' },
    { length: 'many' },
    { length: 40 },
    { charset: 'abc' },
    { minConfidence: 1.5 },
    { minConfidence: -0.1 },
  ]) {
    for (const [how, call] of [
      ['multipart', () => client.predict(captchas[0].bytes, options)],
      ['JSON', () => client.predict(base64(captchas[0].bytes), options)],
      ['batch', () => client.predictBatch([captchas[0].bytes], options)],
    ]) {
      test(`${JSON.stringify(options)}, ${how}`, async () => {
        await assert.rejects(call(), { name: 'CaptchaApiError', status: 400, code: 'invalid_parameter' });
      });
    }
  }
});

describe('options of the wrong type are TypeErrors, before any request', () => {
  // Nothing listens on port 9 of loopback: a request would end in CaptchaNetworkError, not TypeError.
  const offline = new CaptchaClient('http://127.0.0.1:9', { apiKey: KEY, retries: 0 });
  const png = Buffer.from('not even sent');

  for (const options of [
    { model: '' },
    { model: 7 },
    { charset: '' },
    { charset: ['2', '4'] },
    { length: 5.5 },
    { length: -1 },
    { length: true },
    { length: '' },
    { minConfidence: '0.5' },
    { minConfidence: Number.NaN },
    { minConfidence: Infinity },
    { details: 'yes' },
    { details: 1 },
  ]) {
    test(inspect(options), async () => {
      await assert.rejects(offline.predict(png, options), TypeError);
      await assert.rejects(offline.predict('aGVsbG8=', options), TypeError);
      await assert.rejects(offline.predictBatch([png], options), TypeError);
      await assert.rejects(offline.predictFile(path.join(ROOT, 'missing.png'), options), TypeError);
      await assert.rejects(offline.predictUrl('http://127.0.0.1:9/captcha.png', options), TypeError);
    });
  }

  test('options that are not an object', async () => {
    await assert.rejects(offline.predict(png, null), TypeError);
  });
});
