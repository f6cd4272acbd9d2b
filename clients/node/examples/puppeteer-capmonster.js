#!/usr/bin/env node
'use strict';

/**
 * puppeteer-login.js with the official CapMonster Cloud client (@zennolab_com/capmonstercloud-client) in place of
 * this package's: a scraper written for CapMonster Cloud, pointed at the CaptchaOCR service by its serviceUrl and
 * clientKey alone (docs/compat.md). Open the page, screenshot the captcha element, solve it as an ImageToTextTask
 * (createTask, then getTaskResult), type the answer, submit, read the verdict. Repeats for --rounds rounds and ends
 * with one JSON line on stdout: {"rounds": N, "passed": k, "failed": f, "errors": e, "ms_per_round": t, ...}.
 * Progress goes to stderr. Exit status 0 once the summary is printed, 1 when the run could not start.
 *
 *   node examples/puppeteer-capmonster.js --site http://127.0.0.1:8000/ --rounds 20 \
 *     --api-url http://127.0.0.1:5000 --api-key <a key of CAPTCHA_API_KEYS>
 */

const { mkdir, writeFile } = require('node:fs/promises');
const path = require('node:path');
const { parseArgs } = require('node:util');
const puppeteer = require('puppeteer-core');
const {
  CapMonsterCloudClientFactory,
  ClientOptions,
  ImageToTextRequest,
} = require('@zennolab_com/capmonstercloud-client');

// The demo site's form (tests/demo_site.py); another site needs its own selectors here.
const SELECTORS = {
  captcha: '#captcha',
  login: '#login-name',
  password: '#password',
  answer: '#captcha-answer',
  submit: '#submit',
  result: '#result',
};

const USAGE = `usage: node examples/puppeteer-capmonster.js [options]
  --site URL            the page with the form (default http://127.0.0.1:8000/)
  --rounds N            how many logins to try (default 1)
  --api-url URL         the CaptchaOCR service, scheme, host and port only: the client drops any path
                        (default $CAPTCHA_API_URL or http://127.0.0.1:5000)
  --api-key KEY         its API key, sent as clientKey; KEY__MODEL picks a served model
                        (default $CAPTCHA_API_KEY; none for a service without keys)
  --screenshots DIR     keep each captcha screenshot there as round-N.png
Chromium: $CHROMIUM_PATH or /usr/bin/chromium.`;

function options(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      site: { type: 'string', default: 'http://127.0.0.1:8000/' },
      rounds: { type: 'string', default: '1' },
      'api-url': { type: 'string', default: process.env.CAPTCHA_API_URL || 'http://127.0.0.1:5000' },
      'api-key': { type: 'string', default: process.env.CAPTCHA_API_KEY },
      screenshots: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const rounds = Number(values.rounds);
  if (values.help || !Number.isInteger(rounds) || rounds < 1) {
    console.error(USAGE);
    process.exit(values.help ? 0 : 2);
  }
  return { ...values, rounds };
}

/** The captcha's text, as CapMonster Cloud's client gets it: a failed task (an ERROR_* of the service) throws. */
async function solve(client, png) {
  const result = await client.Solve(new ImageToTextRequest({ body: png.toString('base64') }));
  if (result.error !== undefined || !result.solution) {
    throw new Error(`the task failed: ${result.error}`);
  }
  return result.solution.text;
}

/** One login attempt: {prediction, result}. */
async function round(page, client, opts, number) {
  await page.goto(opts.site, { waitUntil: 'load' });
  const captcha = await page.waitForSelector(SELECTORS.captcha, { visible: true });
  await page.waitForFunction((img) => img.complete && img.naturalWidth > 0, {}, captcha);
  const png = Buffer.from(await captcha.screenshot({ type: 'png' }));
  if (opts.screenshots) await writeFile(path.join(opts.screenshots, `round-${number}.png`), png);

  const prediction = await solve(client, png);
  await page.type(SELECTORS.login, 'demo');
  await page.type(SELECTORS.password, 'demo-password');
  await page.type(SELECTORS.answer, prediction);
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click(SELECTORS.submit)]);
  const result = await page.$eval(SELECTORS.result, (element) => element.textContent.trim());
  return { prediction, result };
}

async function main() {
  const opts = options(process.argv.slice(2));
  // serviceUrl in place of https://api.capmonster.cloud, the service's API key as clientKey: nothing else changes.
  const client = CapMonsterCloudClientFactory.Create(
    new ClientOptions({ clientKey: opts['api-key'], serviceUrl: opts['api-url'] }),
  );
  if (opts.screenshots) await mkdir(opts.screenshots, { recursive: true });
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-dev-shm-usage'],
  });
  const summary = { rounds: opts.rounds, passed: 0, failed: 0, errors: 0, ms_per_round: 0, misses: [] };
  const started = Date.now();
  try {
    const page = await browser.newPage();
    for (let number = 1; number <= opts.rounds; number++) {
      try {
        const outcome = await round(page, client, opts, number);
        const passed = outcome.result === 'passed';
        summary[passed ? 'passed' : 'failed'] += 1;
        if (!passed) summary.misses.push({ round: number, ...outcome });
        console.error(`round ${number}: ${outcome.prediction} -> ${outcome.result}`);
      } catch (error) {
        summary.errors += 1;
        summary.misses.push({ round: number, error: `${error.name}: ${error.message}` });
        console.error(`round ${number}: ${error.name}: ${error.message}`);
      }
    }
  } finally {
    await browser.close();
  }
  summary.ms_per_round = Math.round((Date.now() - started) / opts.rounds);
  console.log(JSON.stringify(summary));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
