'use strict';

// Helpers for the tests in ../test: the real service under gunicorn, captchas from the project's generator, and
// tiny loopback HTTP servers. Kept outside test/, where `node --test test/` would run every .js file as a test.

const { spawn, execFile } = require('node:child_process');
const { once } = require('node:events');
const { openSync, closeSync, readFileSync } = require('node:fs');
const { readFile } = require('node:fs/promises');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { promisify } = require('node:util');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const PYTHON = process.env.PYTHON || 'python3';
const KEY = 'node-test-key-0123456789abcdefgh'; // 32 characters; the service wants 16 or more

async function freePort() {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

/**
 * `python3 -m gunicorn -c gunicorn.conf.py` from the repository root, one worker, on a free loopback port, with
 * extra CAPTCHA_* settings from `env`; resolves once GET /health answers `readyStatus` (200, or 503 for a service
 * started without a model). Output goes to `logPath`, a file, so a full pipe can never stall the server.
 */
async function startService(env, logPath, { readyStatus = 200, timeoutMs = 90000 } = {}) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const log = openSync(logPath, 'w');
  const child = spawn(PYTHON, ['-m', 'gunicorn', '-c', 'gunicorn.conf.py'], {
    cwd: ROOT,
    env: { ...process.env, CAPTCHA_HOST: '127.0.0.1', CAPTCHA_PORT: String(port), CAPTCHA_WORKERS: '1', ...env },
    stdio: ['ignore', log, log],
  });
  closeSync(log);
  const exited = once(child, 'exit');
  const service = {
    url,
    log: () => readFileSync(logPath, 'utf8'),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`gunicorn exited with ${child.exitCode}:\n${service.log()}`);
    try {
      const response = await fetch(url + '/health', { signal: AbortSignal.timeout(1000) });
      await response.arrayBuffer();
      if (response.status === readyStatus) return service;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await service.stop();
  throw new Error(`gunicorn did not answer /health ${readyStatus} within ${timeoutMs} ms:\n${service.log()}`);
}

/** `count` captchas written by `python -m captcha_api generate` into `dir`: [{file, text}] from labels.csv. */
async function generateCaptchas(dir, { count = 8, seed = 5 } = {}) {
  const args = ['-m', 'captcha_api', 'generate', '--count', String(count), '--out', dir, '--seed', String(seed)];
  await promisify(execFile)(PYTHON, [...args, '--workers', '1'], { cwd: ROOT });
  const [header, ...rows] = (await readFile(path.join(dir, 'labels.csv'), 'utf8')).trim().split(/\r?\n/);
  if (header !== 'filename,text') throw new Error(`unexpected labels.csv header: ${header}`);
  return rows.map((row) => {
    const [filename, text] = row.split(',');
    return { file: path.join(dir, filename), text };
  });
}

/** The same image re-encoded as PNG, by Pillow. */
async function toPng(source, target) {
  const code = 'import sys; from PIL import Image; Image.open(sys.argv[1]).save(sys.argv[2], "PNG")';
  await promisify(execFile)(PYTHON, ['-c', code, source, target], { cwd: ROOT });
  return target;
}

/** A blank white 200x60 PNG, by Pillow: an image in which the service reads no characters. */
async function blankPng(target) {
  const code = 'import sys; from PIL import Image; Image.new("RGB", (200, 60), "white").save(sys.argv[1])';
  await promisify(execFile)(PYTHON, ['-c', code, target], { cwd: ROOT });
  return target;
}

/** A node HTTP server on a free loopback port: {url, server, requests (count), close()}. */
async function listen(handler) {
  const state = { requests: 0 };
  const server = http.createServer((request, response) => {
    state.requests += 1;
    handler(request, response, state.requests);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  state.server = server;
  state.url = `http://127.0.0.1:${server.address().port}`;
  state.close = async () => {
    server.closeAllConnections();
    server.close();
    await once(server, 'close');
  };
  return state;
}

/** The text of a log line: the `message` of a JSON line (the service's default format), else the line itself. */
function messageOf(entry) {
  try {
    return JSON.parse(entry).message ?? '';
  } catch {
    return entry;
  }
}

/** How many requests the service logged with this method, path and status. */
function countLogged(service, line) {
  return service.log().split('\n').filter((entry) => ` ${messageOf(entry)} `.includes(` ${line} `)).length;
}

module.exports = { KEY, ROOT, blankPng, countLogged, freePort, generateCaptchas, listen, startService, toPng };
