// Drive the official CapMonster Cloud Node client (@zennolab_com/capmonstercloud-client, installed in clients/node),
// unchanged, against this service: run by tests/test_compat_clients.py. Reads {"serviceUrl", "steps": [...]} as JSON
// on stdin and prints one JSON line per step: {"ok": true, ...} or {"ok": false, "error", "message"}. Every request
// is the client library's own.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const { CapMonsterCloudClientFactory, ClientOptions, ImageToTextRequest } = require(
  path.join(__dirname, '..', '..', 'clients', 'node', 'node_modules', '@zennolab_com', 'capmonstercloud-client'),
);

async function run(serviceUrl, step) {
  const client = CapMonsterCloudClientFactory.Create(new ClientOptions({ clientKey: step.key, serviceUrl }));
  if (step.op === 'solve') {
    const body = fs.readFileSync(step.image).toString('base64');
    const result = await client.Solve(new ImageToTextRequest({ body, ...(step.options || {}) }));
    if (result.error !== undefined) return { ok: false, error: 'CaptchaResult', message: String(result.error) };
    return { ok: true, text: result.solution.text };
  }
  if (step.op === 'balance') return { ok: true, balance: await client.getBalance() };
  throw new Error(`unknown step ${step.op}`);
}

async function main() {
  const job = JSON.parse(fs.readFileSync(0, 'utf8'));
  for (const step of job.steps) {
    const started = process.hrtime.bigint();
    let outcome;
    try {
      outcome = await run(job.serviceUrl, step);
    } catch (error) {
      outcome = { ok: false, error: error.constructor.name, message: String(error.message || error) };
    }
    outcome.seconds = Number(process.hrtime.bigint() - started) / 1e9;
    process.stdout.write(`${JSON.stringify(outcome)}\n`);
  }
}

main().catch((error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exit(1);
});
