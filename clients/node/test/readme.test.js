'use strict';

// The ```js examples of this package's README (clients/node/README.md) and of the project's README, run as written:
// each is saved as a script in a folder where `require('captcha-ocr-client')` finds this package and `captcha.png` is a
// generated captcha, and run with node against the real service (its URL in place of http://localhost:5000, the key
// in CAPTCHA_API_KEY).

const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const { mkdir, mkdtemp, readFile, rm, symlink, writeFile } = require('node:fs/promises');
const { tmpdir } = require('node:os');
const path = require('node:path');
const { promisify } = require('node:util');
const { after, before, test } = require('node:test');

const { KEY, ROOT, generateCaptchas, startService, toPng } = require('../test-support/service');

const README = path.resolve(__dirname, '..', 'README.md');
const PROJECT_README = path.join(ROOT, 'README.md');
const README_URL = 'http://localhost:5000';

/** The ```js blocks of a Markdown text (every one of both READMEs is an example of this client). */
function blocks(markdown, language) {
  return [...markdown.matchAll(new RegExp('^```' + language + '\\n([\\s\\S]*?)^```', 'gm'))].map((m) => m[1]);
}

// What each example of this package's README must print, in README order, given the reading `text` of captcha.png.
const EXPECTED = [
  (out, text) => {
    assert.match(out, /model_loaded: true/);
    assert.match(out, new RegExp(`^${text} (0(\\.\\d+)?|1)$`, 'm')); // the reading and its confidence
  },
  (out, text) => {
    const readings = [text, text, text, `0 ${text}`, `1 ${text}`, '2 invalid_image'];
    assert.deepEqual(out.trim().split('\n').slice(0, 6), readings);
    assert.match(out, /2456789бвгджклмнпрст \[ 60, 200 \]/);
  },
  (out) => {
    const [models, reading, unknown, ...rest] = out.trim().split('\n');
    assert.deepEqual([models, unknown, rest], ['captcha-v2 false, fssp true', '404 unknown_model', []]);
    assert.match(reading, /^[2456789]{5}$/); // the reading under charset and length
  },
  (out, text) => {
    const [characters, runnerUp, refused, entry, ...rest] = out.trim().split('\n');
    assert.match(characters, new RegExp(`^${text}( \\S:(0(\\.\\d+)?|1))+$`)); // each character and its confidence
    assert.match(runnerUp, /^\{ prediction: '[^']+', confidence: \d(\.\d+)? \}$/);
    assert.deepEqual([refused, entry, rest], [`refused: low_confidence ${text}`, `0 false low_confidence ${text}`, []]);
  },
  (out) => {
    assert.equal(out.trim(), 'refused: 400 invalid_image');
  },
];

// The project README's short example: the reading.
const EXPECTED_PROJECT = [
  (out, text) => {
    assert.equal(out.trim(), text);
  },
];

let dir;
let service;
let text; // what captcha.png says

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'captcha-node-readme-'));
  const [started, [captcha]] = await Promise.all([
    startService({ CAPTCHA_API_KEYS: KEY }, path.join(dir, 'service.log')),
    generateCaptchas(path.join(dir, 'generated'), { count: 1, seed: 11 }),
  ]);
  service = started;
  text = captcha.text;
  const work = path.join(dir, 'example');
  await mkdir(path.join(work, 'node_modules'), { recursive: true });
  await symlink(path.resolve(__dirname, '..'), path.join(work, 'node_modules', 'captcha-ocr-client'), 'dir');
  await toPng(captcha.file, path.join(work, 'captcha.png'));
});

after(async () => {
  await service?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('each README has one expectation per example', async () => {
  assert.equal(blocks(await readFile(README, 'utf8'), 'js').length, EXPECTED.length);
  assert.equal(blocks(await readFile(PROJECT_README, 'utf8'), 'js').length, EXPECTED_PROJECT.length);
});

/** Run each example of `readme` as written; `expected[i]` checks the output of the i-th. */
async function runExamples(readme, expected) {
  const work = path.join(dir, 'example');
  const name = path.relative(ROOT, readme);
  for (const [i, block] of blocks(await readFile(readme, 'utf8'), 'js').entries()) {
    const example = `${name} example ${i + 1}`;
    assert.ok(block.includes(README_URL), `${example} does not call ${README_URL}`);
    assert.ok(block.includes("require('captcha-ocr-client')"), `${example} does not require the package`);
    const script = path.join(work, `example-${i + 1}.js`);
    await writeFile(script, block.replaceAll(README_URL, service.url));
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [script], {
      cwd: work,
      env: { ...process.env, CAPTCHA_API_KEY: KEY },
      timeout: 60000,
    }).catch((error) => assert.fail(`${example} failed: ${error.message}\n${error.stderr}`));
    assert.equal(stderr, '', `${example} wrote to stderr`);
    try {
      expected[i]?.(stdout, text);
    } catch (error) {
      error.message = `${example}: ${error.message}\nits output:\n${stdout}`;
      throw error;
    }
  }
}

test("every example of this package's README runs as written and prints the reading", async () => {
  await runExamples(README, EXPECTED);
});

test("the project README's example runs as written and prints the reading", async () => {
  await runExamples(PROJECT_README, EXPECTED_PROJECT);
});
