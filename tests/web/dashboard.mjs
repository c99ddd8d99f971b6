// The coordinator's dashboard in headless Chromium (Debian's, driven by
// playwright-core), on a live fleet that tests/integration/dashboard_test.cc
// starts and describes in the environment:
//   DASHBOARD_URL   the coordinator, http://127.0.0.1:PORT
//   OWNER_TOKEN     an owner's token; OWNER_VEHICLE the car enrolled to them
//   MODEL           a model the fleet serves; IMG_MODEL, SCRIPT_MODEL catalog ids made of markup
//   SIM_DIR         a simulator run's directory (summary.json, timeseries.csv)
//   SCREENSHOT_DIR  where the screenshots go; CHROMIUM the browser
// Every page must load without console errors, page errors or failed
// requests, fit a 390 px phone without horizontal scrolling, and pass
// axe-core's WCAG 2 A/AA rules (labels and contrast among them).
import {after, before, test} from 'node:test';
import assert from 'node:assert/strict';
import {readFileSync} from 'node:fs';
import {createRequire} from 'node:module';
import path from 'node:path';
import {chromium} from 'playwright-core';

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (tests/integration/dashboard_test.cc sets it)`);
  return value;
}

const BASE = env('DASHBOARD_URL');
const OWNER_TOKEN = env('OWNER_TOKEN');
const OWNER_VEHICLE = env('OWNER_VEHICLE');
const MODEL = env('MODEL');
const IMG_MODEL = env('IMG_MODEL');
const SCRIPT_MODEL = env('SCRIPT_MODEL');
const SIM_DIR = env('SIM_DIR');
const SCREENSHOT_DIR = env('SCREENSHOT_DIR');
const CHROMIUM = env('CHROMIUM');

const DESKTOP = {width: 1280, height: 900};
const PHONE = {width: 390, height: 844};
const WAIT_MS = 30000;
const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

let browser;

before(async () => {
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...(root ? ['--no-sandbox'] : []), '--disable-dev-shm-usage'],
  });
});

after(async () => {
  if (browser) await browser.close();
});

// A page at `pathname` with every problem it shows recorded: console
// errors, uncaught exceptions, requests that failed, HTTP errors (other
// than the statuses in `expect`, which a test provokes on purpose), dialogs.
async function open(pathname, viewport, expect = []) {
  const context = await browser.newContext({viewport, acceptDownloads: true});
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (expect.some((status) => m.text().includes(`status of ${status}`))) return;
    problems.push(`console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    const why = r.failure() ? r.failure().errorText : '';
    // The event stream is cut when a page closes; nothing else may fail.
    if (why.includes('ERR_ABORTED') && r.url().endsWith('/v1/dashboard/events')) return;
    problems.push(`request failed: ${r.url()} ${why}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400 && !expect.includes(r.status())) problems.push(`HTTP ${r.status()} ${r.url()}`);
  });
  page.on('dialog', async (d) => {
    problems.push(`dialog: ${d.message()}`);
    await d.dismiss();
  });
  const response = await page.goto(BASE + pathname, {waitUntil: 'load'});
  assert.equal(response.status(), 200, `${pathname}: HTTP ${response.status()}`);
  const csp = response.headers()['content-security-policy'] || '';
  assert.ok(csp.startsWith("default-src 'self'"), `${pathname}: CSP ${csp}`);
  return {context, page, problems};
}

async function fitsWidth(page) {
  const {scroll, inner} = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
  }));
  assert.ok(scroll <= inner, `the page is ${scroll} px wide in a ${inner} px window (horizontal scroll)`);
}

// axe-core's WCAG 2 A and AA rules. Evaluated through the DevTools protocol,
// which the page's Content-Security-Policy does not govern.
async function accessible(page, where) {
  await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(() => window.axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}}));
  const found = result.violations.map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join('; ')}`);
  assert.deepEqual(found, [], `${where}: accessibility violations`);
}

async function shoot(page, name) {
  await page.screenshot({path: path.join(SCREENSHOT_DIR, `${name}.png`), fullPage: true});
}

// Markup from data must stay text: nothing it names may have run or been made.
async function inert(page, where) {
  const {pwned, made} = await page.evaluate(() => ({
    pwned: window.__pwned === undefined ? null : String(window.__pwned),
    made: document.querySelectorAll('main img, main script, body > script:not([src]), main iframe').length,
  }));
  assert.equal(pwned, null, `${where}: a script from data ran`);
  assert.equal(made, 0, `${where}: an element was made from data`);
}

function metric(page, id) {
  return page.$eval(`[data-metric="${id}"]`, (n) => Number(n.textContent.replace(/[^0-9.]/g, '') || 'NaN'));
}

async function complete(prompt) {
  const response = await fetch(`${BASE}/v1/completions`, {
    method: 'POST',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({model: MODEL, prompt, max_tokens: 48, seed: 7}),
  });
  assert.equal(response.status, 200, await response.text());
}

test('the operator view goes live and its numbers move while jobs run', async () => {
  const {context, page, problems} = await open('/', DESKTOP);
  await page.waitForFunction(() => document.body.dataset.snapshotAt, null, {timeout: WAIT_MS});
  assert.match(await page.textContent('#stream-status'), /Live/);
  const firstSnapshot = Number(await page.evaluate(() => document.body.dataset.snapshotAt));
  const tokensBefore = await metric(page, 'tokens_total');
  const doneBefore = await metric(page, 'jobs_done_total');
  assert.ok(Number.isFinite(tokensBefore) && Number.isFinite(doneBefore));

  const prompts = ['Once upon a time', 'The little dog', 'A girl named Lily', 'One day', 'The sun was', 'Tom liked'];
  await Promise.all(prompts.map(complete));
  await page.waitForFunction(
    ([done]) => {
      const n = (id) => Number(document.querySelector(`[data-metric="${id}"]`).textContent.replace(/[^0-9.]/g, ''));
      return n('jobs_done_total') >= done && document.querySelectorAll('#jobs li').length > 0;
    },
    [doneBefore + prompts.length], {timeout: WAIT_MS});
  assert.ok(await metric(page, 'tokens_total') > tokensBefore, 'tokens relayed did not grow');
  assert.ok(Number(await page.evaluate(() => document.body.dataset.snapshotAt)) > firstSnapshot, 'no new snapshot');
  assert.notEqual(await page.textContent('[data-metric="latency_p50"]'), '–');
  assert.match(await page.textContent('#jobs'), /car-\d+: completed/);
  // The catalog's markup-named models are listed, as text.
  const models = await page.textContent('#models');
  assert.ok(models.includes(IMG_MODEL), models);
  assert.ok(models.includes(SCRIPT_MODEL), models);
  assert.ok(models.includes(MODEL), models);
  await inert(page, 'operator');
  // A history chart is drawn from the hour's samples.
  assert.ok(await page.locator('#chart-tokens svg').count() + await page.locator('#chart-tokens p').count() === 1);
  await accessible(page, 'operator');
  await shoot(page, 'operator-desktop');
  assert.deepEqual(problems, []);
  await context.close();

  const phone = await open('/', PHONE);
  await phone.page.waitForFunction(() => document.body.dataset.snapshotAt, null, {timeout: WAIT_MS});
  await fitsWidth(phone.page);
  await accessible(phone.page, 'operator at 390 px');
  await shoot(phone.page, 'operator-phone');
  assert.deepEqual(phone.problems, []);
  await phone.context.close();
});

async function vehicleText(page) {
  return page.textContent(`[data-vehicle="${OWNER_VEHICLE}"]`);
}

test('the owner view refuses without the token, and a policy set there reaches the car', async () => {
  // 401s (no token, a wrong one) and a 400 (a bad policy value) are provoked here.
  const {context, page, problems} = await open('/owner', DESKTOP, [400, 401]);
  assert.match(await page.textContent('#owner-status'), /owner token/);
  await page.click('#token-form button[type="submit"]');
  await page.waitForFunction(() => /401/.test(document.querySelector('#owner-status').textContent), null, {timeout: WAIT_MS});
  assert.match(await page.textContent('#owner-status'), /Not signed in/);
  await page.fill('#owner-token', `ow-idf-${'0'.repeat(64)}`);
  await page.click('#token-form button[type="submit"]');
  await page.waitForFunction(() => /unknown owner token/.test(document.querySelector('#owner-status').textContent), null, {timeout: WAIT_MS});
  assert.equal(await page.locator('[data-vehicle]').count(), 0);

  await page.fill('#owner-token', OWNER_TOKEN);
  await page.click('#token-form button[type="submit"]');
  await page.waitForSelector(`[data-vehicle="${OWNER_VEHICLE}"]`, {timeout: WAIT_MS});
  assert.equal(await page.locator('[data-vehicle]').count(), 1, 'an owner sees their own vehicles only');
  await page.waitForFunction((id) => /Eligible: it may take work now/.test(document.querySelector(`[data-vehicle="${id}"]`).textContent),
    OWNER_VEHICLE, {timeout: WAIT_MS});
  // The editor starts from the car's policy (or the defaults).
  await page.waitForFunction(() => document.querySelector('#soc-floor').value !== '', null, {timeout: WAIT_MS});
  assert.equal(await page.inputValue('#policy-vehicle'), OWNER_VEHICLE);

  // A value the API refuses: its message is shown, and nothing changes.
  await page.check('#opted-in');
  await page.fill('#soc-floor', '150');
  await page.click('#policy-form button[type="submit"]');
  await page.waitForFunction(() => /400/.test(document.querySelector('#policy-status').textContent), null, {timeout: WAIT_MS});
  const refusal = await page.textContent('#policy-status');
  assert.match(refusal, /soc_floor_pct/, refusal);
  assert.match(await vehicleText(page), /Eligible: it may take work now/);

  // A SoC floor above any charge: the car stops being eligible, and says why.
  await page.fill('#soc-floor', '100');
  await page.fill('#target-soc', '100');
  await page.click('#policy-form button[type="submit"]');
  await page.waitForFunction(() => /Saved|Refused/.test(document.querySelector('#policy-status').textContent), null, {timeout: WAIT_MS});
  assert.match(await page.textContent('#policy-status'), /Saved/);
  await page.waitForFunction((id) => {
    const text = document.querySelector(`[data-vehicle="${id}"]`).textContent;
    return /Not eligible now/.test(text) && /floor/i.test(text);
  }, OWNER_VEHICLE, {timeout: WAIT_MS});
  assert.equal(await page.inputValue('#soc-floor'), '100');

  // The month's statement: totals, charts, and both downloads.
  await page.waitForFunction(() => /Statement for/.test(document.querySelector('#statement-status').textContent), null, {timeout: WAIT_MS});
  for (const [button, format, start] of [['#download-csv', 'csv', 'date,transaction'], ['#download-json', 'json', '{']]) {
    const [download] = await Promise.all([page.waitForEvent('download'), page.click(button)]);
    assert.match(download.suggestedFilename(), new RegExp(`^statement-\\d{4}-\\d{2}\\.${format}$`));
    const body = readFileSync(await download.path(), 'utf8');
    assert.ok(body.startsWith(start), body.slice(0, 80));
  }
  await inert(page, 'owner');
  await accessible(page, 'owner');
  await shoot(page, 'owner-desktop');
  assert.deepEqual(problems, []);
  await context.close();

  const phone = await open('/owner', PHONE);
  await phone.page.fill('#owner-token', OWNER_TOKEN);
  await phone.page.click('#token-form button[type="submit"]');
  await phone.page.waitForSelector(`[data-vehicle="${OWNER_VEHICLE}"]`, {timeout: WAIT_MS});
  await phone.page.waitForFunction(() => /Statement for/.test(document.querySelector('#statement-status').textContent), null, {timeout: WAIT_MS});
  await fitsWidth(phone.page);
  await accessible(phone.page, 'owner at 390 px');
  await shoot(phone.page, 'owner-phone');
  assert.deepEqual(phone.problems, []);
  await phone.context.close();
});

test('the report viewer shows a simulator run and refuses what is not one', async () => {
  const summary = JSON.parse(readFileSync(path.join(SIM_DIR, 'summary.json'), 'utf8'));
  const files = [path.join(SIM_DIR, 'summary.json'), path.join(SIM_DIR, 'timeseries.csv')];
  for (const [viewport, name] of [[DESKTOP, 'reports-desktop'], [PHONE, 'reports-phone']]) {
    const {context, page, problems} = await open('/reports', viewport);
    await page.setInputFiles('#report-files', files);
    await page.waitForFunction(() => /Showing/.test(document.querySelector('#report-status').textContent), null, {timeout: WAIT_MS});
    assert.equal(await page.textContent('[data-metric="scenario"]'), summary.scenario);
    assert.equal(await page.textContent('[data-metric="vehicles"]'), summary.vehicles.toLocaleString('en-US'));
    for (const chart of ['#chart-vehicles', '#chart-compute', '#chart-tokens', '#chart-energy']) {
      assert.ok(await page.locator(`${chart} svg path`).count() > 0, `${chart} has no lines`);
    }
    if (viewport === PHONE) await fitsWidth(page);
    await accessible(page, name);
    await shoot(page, name);
    assert.deepEqual(problems, []);
    await context.close();
  }

  // What is not a run is refused with a reason; markup in a file stays text.
  const {context, page, problems} = await open('/reports', DESKTOP);
  await page.setInputFiles('#report-files', {name: 'summary.json', mimeType: 'application/json', buffer: Buffer.from('{"x":1}')});
  await page.waitForFunction(() => /Cannot show it/.test(document.querySelector('#report-status').textContent), null, {timeout: WAIT_MS});
  await page.setInputFiles('#report-files', {name: 'summary.json', mimeType: 'application/json', buffer: Buffer.from('not json')});
  await page.waitForFunction(() => /is not JSON/.test(document.querySelector('#report-status').textContent), null, {timeout: WAIT_MS});
  await page.setInputFiles('#report-files', {name: 'timeseries.csv', mimeType: 'text/csv', buffer: Buffer.from('a,b\n1,2\n')});
  await page.waitForFunction(() => /bin_start_ms/.test(document.querySelector('#report-status').textContent), null, {timeout: WAIT_MS});
  const evil = {...summary, scenario: '<img src=x onerror="window.__pwned=3"><script>window.__pwned=4</script>'};
  await page.setInputFiles('#report-files', {name: 'summary.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(evil))});
  await page.waitForFunction(() => /Showing/.test(document.querySelector('#report-status').textContent), null, {timeout: WAIT_MS});
  assert.equal(await page.textContent('[data-metric="scenario"]'), evil.scenario);
  await inert(page, 'reports');
  assert.deepEqual(problems, []);
  await context.close();
});
