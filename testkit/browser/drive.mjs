// Drives a headless chromium for the tests: node drive.mjs CONFIG.json
//
// testkit/browser.py starts it. The config (JSON) holds:
//   executablePath: "/usr/bin/chromium"        (required: playwright-core never downloads a browser)
//   userDataDir: "/tmp/..."                    (required: one persistent profile; cookies survive between steps)
//   noSandbox: true                            (when running as root, where chromium's sandbox cannot start)
//   ignoreHTTPSErrors: false                   (accept any certificate)
//   trustSpki: ["base64 SHA-256 of a SubjectPublicKeyInfo", ...]
//                                              (certificate errors are ignored for chains holding one of these keys)
//   hostRules: "MAP app.test 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
//                                              (chromium's --host-resolver-rules: which names resolve, to what)
//   timeoutMs: 15000                           (default timeout of a command)
//
// Once the browser runs it prints {"ready": true, "version": "..."}; a launch that
// fails prints {"ready": false, "error": "..."} and exits 1. Then each line on stdin
// is a command {"id": N, "cmd": NAME, "args": {...}, "timeoutMs": M} and gets one line
// on stdout: {"id": N, "ok": true, "result": ...} or {"id": N, "ok": false, "error": "..."}.
// Commands run one at a time, in order. Every one is bounded by its timeout: an error
// or a timeout is an answer, never a hang. End of stdin closes the browser and exits.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const defaultTimeout = config.timeoutMs ?? 15000;

function answer(message) {
  process.stdout.write(JSON.stringify(message) + '\n');
}

const args = ['--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check'];
if (config.noSandbox) args.push('--no-sandbox');
if (config.hostRules) args.push(`--host-resolver-rules=${config.hostRules}`);
if (config.trustSpki?.length) args.push(`--ignore-certificate-errors-spki-list=${config.trustSpki.join(',')}`);

let context;
let page;
try {
  context = await chromium.launchPersistentContext(config.userDataDir, {
    executablePath: config.executablePath,
    headless: true,
    args,
    ignoreHTTPSErrors: Boolean(config.ignoreHTTPSErrors),
  });
  page = context.pages()[0] ?? await context.newPage();
} catch (err) {
  answer({ ready: false, error: String(err?.message ?? err) });
  process.exit(1);
}

// The main frame's last navigation: its final response (the one a page came from).
let lastResponse = null;
page.on('response', (response) => {
  const request = response.request();
  if (request.isNavigationRequest() && request.frame() === page.mainFrame()) lastResponse = response;
});

// The hops of the navigation that ended in `response`: first request first, each
// with its status, URL and Location header (the 30x hops and the final answer).
async function chain(response) {
  if (response === null) return [];
  const requests = [];
  for (let request = response.request(); request !== null; request = request.redirectedFrom()) {
    requests.unshift(request);
  }
  const hops = [];
  for (const request of requests) {
    const hop = await request.response();
    hops.push(hop === null
      ? { status: null, url: request.url(), location: null }
      : { status: hop.status(), url: hop.url(), location: (await hop.allHeaders()).location ?? null });
  }
  return hops;
}

function navigated(response) {
  if (response !== null) lastResponse = response;
  return { url: page.url(), status: lastResponse?.status() ?? null };
}

const commands = {
  async goto({ url }, timeout) {
    try {
      return navigated(await page.goto(url, { timeout, waitUntil: 'load' }));
    } catch (err) {
      // A navigation that fails (net::ERR_...) is followed by chromium's error page; let
      // it commit now, else it interrupts the next command's navigation.
      if (/net::ERR_/.test(String(err?.message))) {
        await page.waitForURL(/^chrome-error:/, { timeout: 2000, waitUntil: 'commit' }).catch(() => {});
      }
      throw err;
    }
  },
  async fill({ selector, value }, timeout) {
    await page.fill(selector, value, { timeout });
    return null;
  },
  // Clicks and waits for the navigation the click causes (a form submit, a link).
  async click({ selector, navigation = true }, timeout) {
    if (!navigation) {
      await page.click(selector, { timeout });
      return null;
    }
    const [response] = await Promise.all([
      page.waitForNavigation({ timeout, waitUntil: 'load' }),
      page.click(selector, { timeout }),
    ]);
    return navigated(response);
  },
  async url() {
    return page.url();
  },
  async content() {
    return page.content();
  },
  async text({ selector }, timeout) {
    return page.locator(selector).first().innerText({ timeout });
  },
  async cookies({ urls } = {}) {
    const cookies = await context.cookies(urls ?? []);
    return cookies.map((c) => ({
      name: c.name, value: c.value, domain: c.domain, path: c.path, secure: c.secure,
      httpOnly: c.httpOnly, sameSite: c.sameSite, expires: c.expires,
    }));
  },
  async clear_cookies() {
    await context.clearCookies();
    return null;
  },
  async reload(_, timeout) {
    return navigated(await page.reload({ timeout, waitUntil: 'load' }));
  },
  async wait_for_url({ pattern }, timeout) {
    await page.waitForURL(new RegExp(pattern), { timeout, waitUntil: 'load' });
    return navigated(null);
  },
  async status() {
    return lastResponse?.status() ?? null;
  },
  async chain() {
    return chain(lastResponse);
  },
};

async function run(command) {
  const { id = null, cmd, args: params = {}, timeoutMs } = command;
  const handler = Object.hasOwn(commands, cmd) ? commands[cmd] : undefined;
  if (handler === undefined) return { id, ok: false, error: `unknown command: ${cmd}` };
  const timeout = Number.isFinite(timeoutMs) && timeoutMs > 0 ? timeoutMs : defaultTimeout;
  let timer;
  // Playwright bounds its own waits; this backstop bounds everything else a command does.
  const backstop = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${cmd}: no answer within ${timeout + 1000} ms`)), timeout + 1000);
  });
  try {
    const result = await Promise.race([handler(params, timeout), backstop]);
    return { id, ok: true, result: result ?? null };
  } catch (err) {
    return { id, ok: false, error: String(err?.message ?? err) };
  } finally {
    clearTimeout(timer);
  }
}

answer({ ready: true, version: context.browser()?.version() ?? null });

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (!line.trim()) continue;
  let command;
  try {
    command = JSON.parse(line);
  } catch (err) {
    answer({ id: null, ok: false, error: `not a JSON command: ${err.message}` });
    continue;
  }
  if (command === null || typeof command !== 'object' || Array.isArray(command)) {
    answer({ id: null, ok: false, error: 'a command is a JSON object' });
    continue;
  }
  answer(await run(command));
}
await context.close().catch(() => {});
process.exit(0);
