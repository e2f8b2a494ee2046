// The app portal in Debian's Chromium, against the real broker binary that
// tests/portal_browser.rs starts (PORTAL_BROKER_URL, PORTAL_ADMIN_TOKEN),
// and a real receiver here that checks Standard Webhooks signatures with
// node:crypto. Playwright gives each launch a fresh temporary profile
// (its own --user-data-dir). The tests run in order and share one app and webhook, as a
// developer would use the page. Each saves a screenshot in
// PORTAL_SCREENSHOTS.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BROKER = required('PORTAL_BROKER_URL');
const ADMIN = required('PORTAL_ADMIN_TOKEN');
const SHOTS = process.env.PORTAL_SCREENSHOTS || path.resolve('target/portal-screenshots');
const DOCS_SHOT = process.env.PORTAL_DOCS_SCREENSHOT;
const CHROMIUM = process.env.PORTAL_CHROMIUM || '/usr/bin/chromium';
const WAIT = 15000;

function required(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these through cargo test --test portal_browser`);
  return v;
}

// ---- the receiver ----------------------------------------------------------

function startReceiver() {
  const r = { status: 200, body: 'ok', requests: [] };
  r.server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      r.requests.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(r.status, { 'content-type': 'text/html' });
      res.end(r.body);
    });
  });
  return new Promise((resolve) => {
    r.server.listen(0, '127.0.0.1', () => {
      r.url = `http://127.0.0.1:${r.server.address().port}/hook`;
      resolve(r);
    });
  });
}

// Whether a request is signed with `secret`, as Standard Webhooks says:
// HMAC-SHA256 of `id.timestamp.body` under the base64 key after `whsec_`.
function signedWith(request, secret) {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const h = request.headers;
  const expected = crypto.createHmac('sha256', key)
    .update(`${h['webhook-id']}.${h['webhook-timestamp']}.${request.body}`)
    .digest();
  return (h['webhook-signature'] || '').split(' ').some((s) => {
    const [version, sig] = s.split(',');
    const got = Buffer.from(sig || '', 'base64');
    return version === 'v1' && got.length === expected.length && crypto.timingSafeEqual(got, expected);
  });
}

// ---- helpers -------------------------------------------------------------

async function call(method, p, token, body) {
  const res = await fetch(`${BROKER}${p}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function createApp(name) {
  const r = await call('POST', '/v1/apps', ADMIN, { name });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body;
}

async function mintLink(appId, ttl) {
  const r = await call('POST', `/v1/apps/${appId}/portal-links`, ADMIN, ttl ? { ttl } : undefined);
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body;
}

async function ingest(appId, event, channelId) {
  const r = await call('POST', '/v1/events', ADMIN, { event, appId, channel: { id: channelId, title: `Show ${channelId}` } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body;
}

async function until(what, check, within = WAIT) {
  const deadline = Date.now() + within;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function shot(page, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

const row = (page, channel) => page.locator('#deliveries tbody tr[data-delivery-id]', { hasText: channel });

// ---- shared state --------------------------------------------------------

let browser;
let receiver;
let app;
let page;
let webhookId;

before(async () => {
  receiver = await startReceiver();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run'],
  });
  app = await createApp('portal browser test');
});

after(async () => {
  await browser?.close();
  receiver?.server.close();
});

// What any page logged as an error, but the failed requests some tests
// cause on purpose (a 401, a 404): a CSP violation or a script error lands
// here.
const pageErrors = [];

async function freshPage(width = 1440, height = 900) {
  const context = await browser.newContext({ viewport: { width, height } });
  const p = await context.newPage();
  p.on('pageerror', (e) => pageErrors.push(`uncaught: ${e.message}`));
  p.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) pageErrors.push(m.text());
  });
  return p;
}

// ---- the tests -----------------------------------------------------------

test('an admin mints a link, opens it, and creates a webhook in the page', async () => {
  const link = await mintLink(app.id, '1h');
  assert.match(link.url, /^http:\/\/127\.0\.0\.1:\d+\/portal#token=wbp_/);
  const token = link.url.split('#token=')[1];
  page = await freshPage();
  await page.goto(link.url);
  await page.locator('#list').waitFor({ state: 'visible' });
  // The token left the address bar and the title, and waits in sessionStorage.
  assert.equal(new URL(page.url()).hash, '');
  assert.ok(!(await page.title()).includes(token));
  assert.equal(await page.evaluate(() => sessionStorage.getItem('webhook-broker.portal.token')), token);

  await page.getByRole('button', { name: 'New webhook' }).click();
  await page.getByLabel('Endpoint URI').fill(receiver.url);
  await page.getByLabel('channel_live', { exact: true }).check();
  await page.getByLabel('channel_ended', { exact: true }).check();
  await page.getByLabel(/Custom headers/).fill('X-Tenant: acme');
  await page.getByLabel(/Rate limit/).fill('50');
  // The keyboard alone submits the form.
  await page.getByLabel(/Max concurrency/).fill('4');
  await page.keyboard.press('Enter');
  await page.locator('#detail').waitFor({ state: 'visible' });
  webhookId = (await page.locator('#detail-title').textContent()).replace('Webhook ', '');
  assert.match(webhookId, /^wh_/);
  await page.locator('#summary', { hasText: 'X-Tenant: acme' }).waitFor();

  const stored = await call('GET', `/v1/webhook/${webhookId}`, app.apiKey);
  assert.equal(stored.status, 200);
  assert.equal(stored.body.uri, receiver.url);
  assert.deepEqual(stored.body.event, ['channel_live', 'channel_ended']);
  assert.deepEqual(stored.body.headers, { 'X-Tenant': 'acme' });
  assert.equal(stored.body.rateLimit, 50);
  assert.equal(stored.body.maxConcurrency, 4);
  await shot(page, '1-created-webhook');
});

test('an ingested event shows up as succeeded in the log without a reload', async () => {
  await page.evaluate(() => { window.notReloaded = true; });
  const before = receiver.requests.length;
  await ingest(app.id, 'channel_live', 'ch-ok-1');
  const delivered = row(page, 'ch-ok-1');
  await delivered.locator('[data-status=succeeded]').waitFor({ timeout: WAIT });
  assert.equal(await page.evaluate(() => window.notReloaded), true, 'the page was not reloaded');
  await until('the delivery at the receiver', () => receiver.requests.length > before);
  assert.equal(receiver.requests.at(-1).headers['x-tenant'], 'acme');
  // The webhook's summary follows: a last success is shown.
  await page.locator('#summary-last-success time').waitFor({ timeout: WAIT });
  await shot(page, '2-delivery-succeeded');
});

test('a failing receiver fails the delivery, and a retry succeeds once it is fixed', async () => {
  receiver.status = 500;
  receiver.body = '<b>receiver down</b>';
  await ingest(app.id, 'channel_ended', 'ch-fail-1');
  const failed = row(page, 'ch-fail-1');
  await failed.locator('[data-status=failed]').waitFor({ timeout: WAIT });
  await page.locator('#summary-failing', { hasText: '1' }).waitFor({ timeout: WAIT });
  const deliveryId = await failed.getAttribute('data-delivery-id');

  // The attempt, with the receiver's body as text, not as HTML.
  await failed.getByRole('button', { name: /Attempts/ }).click();
  const attempt = page.locator('#attempts-table tbody tr').first();
  await attempt.waitFor();
  assert.match(await attempt.textContent(), /500/);
  assert.equal(await attempt.locator('pre').textContent(), '<b>receiver down</b>');
  assert.equal(await page.locator('#attempts-table pre b').count(), 0);
  await shot(page, '3a-delivery-failed');

  receiver.status = 200;
  receiver.body = 'ok';
  await failed.getByRole('button', { name: /Retry/ }).click();
  await page.locator(`#deliveries tr[data-delivery-id="${deliveryId}"] [data-status=succeeded]`).waitFor({ timeout: WAIT });
  const sent = receiver.requests.filter((r) => r.headers['webhook-id'] === deliveryId);
  assert.equal(sent.length, 2, 'the retry is the same delivery, sent again');
  await page.locator('#summary-failing', { hasText: '0' }).waitFor({ timeout: WAIT });
  await page.locator('#attempts-table tbody tr').nth(1).waitFor();
  await shot(page, '3b-retry-succeeded');
});

test('a test event is sent from the page and reaches the receiver', async () => {
  await page.getByLabel('Test event', { exact: true }).selectOption('channel_ended');
  await page.getByRole('button', { name: 'Send test event' }).click();
  const note = await page.locator('#notice', { hasText: 'Test event sent' }).textContent();
  const deliveryId = note.match(/msg_[0-9a-z]+/)[0];
  const got = await until('the test event at the receiver', () => receiver.requests.find((r) => r.headers['webhook-id'] === deliveryId));
  const sent = JSON.parse(got.body);
  assert.equal(sent.event, 'channel_ended');
  assert.equal(sent.test, true);
  await page.locator(`#deliveries tr[data-delivery-id="${deliveryId}"] [data-status=succeeded]`).waitFor({ timeout: WAIT });
  await shot(page, '4-test-event');
});

test('after a rotation the next delivery verifies with the new secret', async () => {
  await page.getByRole('button', { name: 'Reveal secret' }).click();
  const old = await page.locator('#secret-value', { hasText: 'whsec_' }).textContent();
  assert.match(old, /^whsec_/);
  const lastBefore = receiver.requests.at(-1);
  assert.ok(signedWith(lastBefore, old), 'deliveries so far are signed with the revealed secret');

  await page.getByRole('button', { name: 'Rotate secret' }).click();
  await page.locator('#secret-label', { hasText: 'New signing secret' }).waitFor();
  const fresh = await page.locator('#secret-value').textContent();
  assert.match(fresh, /^whsec_/);
  assert.notEqual(fresh, old);
  assert.ok(!signedWith(lastBefore, fresh), 'a delivery from before the rotation does not verify with the new secret');

  const n = receiver.requests.length;
  await ingest(app.id, 'channel_live', 'ch-rotated');
  const next = await until('the delivery after the rotation', () => receiver.requests.slice(n).find((r) => r.body.includes('ch-rotated')));
  assert.ok(signedWith(next, fresh), 'the next delivery verifies with the new secret');
  await row(page, 'ch-rotated').locator('[data-status=succeeded]').waitFor({ timeout: WAIT });
  await shot(page, '5-secret-rotated');
});

test('the log filters by status, event and channel id, and recovers failures since a time', async () => {
  receiver.status = 503;
  await ingest(app.id, 'channel_ended', 'ch-recover');
  await row(page, 'ch-recover').locator('[data-status=failed]').waitFor({ timeout: WAIT });
  if (DOCS_SHOT) {
    // The README's picture: a log with successes, a retry and a failure.
    await page.locator('#secret-hide').click();
    await page.locator('#attempts-close').click();
    await page.locator('main').screenshot({ path: DOCS_SHOT });
  }

  await page.getByLabel('Status', { exact: true }).selectOption('failed');
  await page.getByRole('button', { name: 'Filter' }).click();
  await until('only failed deliveries', async () => {
    const statuses = await page.locator('#deliveries tbody tr[data-delivery-id]').evaluateAll((rows) => rows.map((r) => r.dataset.status));
    return statuses.length === 1 && statuses[0] === 'failed';
  });
  await page.getByLabel('Status', { exact: true }).selectOption('');
  await page.getByLabel('Event', { exact: true }).selectOption('channel_live');
  await page.getByLabel('Channel id', { exact: true }).fill('ch-ok-1');
  await page.getByRole('button', { name: 'Filter' }).click();
  await until('only ch-ok-1', async () => {
    const texts = await page.locator('#deliveries tbody tr[data-delivery-id]').allTextContents();
    return texts.length === 1 && texts[0].includes('ch-ok-1');
  });
  await page.getByLabel('Event', { exact: true }).selectOption('');
  await page.getByLabel('Channel id', { exact: true }).fill('');
  await page.getByRole('button', { name: 'Filter' }).click();

  receiver.status = 200;
  await page.getByRole('button', { name: 'Recover' }).click();
  await page.locator('#notice', { hasText: '1 failed delivery sent again' }).waitFor();
  await row(page, 'ch-recover').locator('[data-status=succeeded]').waitFor({ timeout: WAIT });
  await shot(page, '6-filters-and-recover');
});

test('a webhook is edited, disabled, enabled and deleted after a confirmation', async () => {
  await page.getByRole('button', { name: 'Edit' }).click();
  await page.getByLabel(/Rate limit/).fill('');
  await page.getByLabel(/Max concurrency/).fill('8');
  await page.getByLabel(/Custom headers/).fill('X-Tenant: beta');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.locator('#summary', { hasText: 'X-Tenant: beta' }).waitFor();
  let stored = (await call('GET', `/v1/webhook/${webhookId}`, app.apiKey)).body;
  assert.equal(stored.rateLimit, null);
  assert.equal(stored.maxConcurrency, 8);

  await page.getByRole('button', { name: 'Disable' }).click();
  await page.locator('#summary [data-status=disabled]').waitFor();
  assert.equal((await call('GET', `/v1/webhook/${webhookId}`, app.apiKey)).body.status, 'disabled');
  await page.locator('#nav-webhooks').click();
  await page.locator(`#webhooks tr[data-webhook-id="${webhookId}"] [data-status=disabled]`).waitFor();
  await shot(page, '7a-disabled-in-list');
  await page.locator(`#webhooks tr[data-webhook-id="${webhookId}"]`).getByRole('link', { name: /Open/ }).click();
  await page.getByRole('button', { name: 'Enable' }).click();
  await page.locator('#summary [data-status=enabled]').waitFor();

  // Readable on a phone.
  await page.setViewportSize({ width: 360, height: 800 });
  const wide = await page.evaluate(() => [...document.querySelectorAll('body *')]
    .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.parentElement.closest('.table-wrap'))
    .map((e) => `${e.tagName}#${e.id}.${e.className}`));
  assert.deepEqual(wide, [], 'nothing but a table (which scrolls in its box) is wider than a 360px screen');
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 360, `the page is ${width}px wide`);
  await shot(page, '7b-phone-width');
  await page.setViewportSize({ width: 1440, height: 900 });

  await page.getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('button', { name: 'Cancel' }).first().click();
  stored = await call('GET', `/v1/webhook/${webhookId}`, app.apiKey);
  assert.equal(stored.status, 200, 'cancel keeps the webhook');
  await page.getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('button', { name: 'Yes, delete it' }).click();
  await page.locator('#list').waitFor({ state: 'visible' });
  assert.equal((await call('GET', `/v1/webhook/${webhookId}`, app.apiKey)).status, 404);
  await shot(page, '7c-deleted');
});

test('an expired link and a forged one each show a clear message', async () => {
  const link = await mintLink(app.id, '1s');
  await new Promise((r) => setTimeout(r, 1200));
  const p = await freshPage();
  await p.goto(link.url);
  await p.locator('#denied').waitFor({ state: 'visible' });
  assert.equal(await p.locator('#denied-text').textContent(), 'This portal link has expired. Ask for a new one.');
  assert.equal(new URL(p.url()).hash, '');
  await shot(p, '8a-expired-link');

  await p.goto(`${BROKER}/portal#token=wbp_eyJhcHAiOiJ4In0.AAAA`);
  await p.reload();
  await p.locator('#denied-text', { hasText: 'not valid' }).waitFor();
  await shot(p, '8b-forged-link');
  await p.context().close();
});

test("another app's webhook is not found in the portal, with a link or a pasted key", async () => {
  const other = await createApp('someone else');
  const theirs = await call('POST', '/v1/webhook', other.apiKey, { uri: receiver.url, event: 'all' });
  assert.equal(theirs.status, 201);
  const ours = await call('POST', '/v1/webhook', app.apiKey, { uri: `${receiver.url}?ours`, event: 'all' });
  assert.equal(ours.status, 201);

  const viaLink = await freshPage();
  await viaLink.goto(`${(await mintLink(app.id)).url}&webhook=${theirs.body.id}`);
  await viaLink.locator('#error', { hasText: 'not found' }).waitFor();
  assert.equal(await viaLink.locator(`#webhooks tr[data-webhook-id="${theirs.body.id}"]`).count(), 0);
  await viaLink.locator(`#webhooks tr[data-webhook-id="${ours.body.id}"]`).waitFor();
  await shot(viaLink, '9a-foreign-webhook-via-link');
  await viaLink.context().close();

  // The sign-in page takes an app's API key.
  const viaKey = await freshPage(360, 800);
  await viaKey.goto(`${BROKER}/portal`);
  await viaKey.getByLabel('App API key').fill(app.apiKey);
  await viaKey.getByRole('button', { name: 'Sign in' }).click();
  await viaKey.locator(`#webhooks tr[data-webhook-id="${ours.body.id}"]`).waitFor();
  await viaKey.getByLabel('Open a webhook by id').fill(theirs.body.id);
  await viaKey.getByRole('button', { name: 'Open', exact: true }).click();
  await viaKey.locator('#error', { hasText: 'not found' }).waitFor();
  await shot(viaKey, '9b-foreign-webhook-via-key');
  await viaKey.context().close();
});

test('the page is usable with the keyboard alone, with a visible focus', async () => {
  const p = await freshPage();
  await p.goto((await mintLink(app.id)).url);
  await p.locator('#list').waitFor({ state: 'visible' });
  let reached = false;
  for (let i = 0; i < 15 && !reached; i++) {
    await p.keyboard.press('Tab');
    reached = await p.evaluate(() => document.activeElement?.id === 'new-webhook');
  }
  assert.ok(reached, 'Tab reaches the New webhook button');
  const ring = await p.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(ring, 'none', 'the focused button shows a focus ring');
  await shot(p, '10-keyboard-focus');
  await p.keyboard.press('Enter');
  await p.locator('#editor').waitFor({ state: 'visible' });
  assert.equal(await p.evaluate(() => document.activeElement?.id), 'f-uri', 'the form takes the focus');
  await p.keyboard.press('Escape');
  await p.context().close();
});

test('no page logged a script error or a Content-Security-Policy violation', () => {
  assert.deepEqual(pageErrors, []);
});
