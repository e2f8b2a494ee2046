// The app portal. Plain ES module, no build step, no dependencies.
//
// Security rules this file keeps (see docs/portal.md):
// - every value from the API reaches the page as text (textContent or text
//   nodes), never through innerHTML;
// - the token arrives in the URL fragment, which browsers never send to a
//   server; it moves to sessionStorage at once and the fragment is wiped
//   with history.replaceState, so it is in no history entry and no title;
// - the token travels only as `Authorization: Bearer`.

const TOKEN_KEY = 'webhook-broker.portal.token';
const EVENTS = ['channel_live', 'channel_stop', 'channel_ended'];
const POLL_MS = 2000;
const LOG_PAGE = 20;
const BODY_PREVIEW = 500;

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  webhook: null,
  listPage: 0,
  logPage: 0,
  filter: { status: '', event: '', channelId: '' },
  poll: null,
  openDelivery: null,
  lastLog: null,
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ---- rendering helpers: text only -------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'onclick') node.addEventListener('click', v);
    else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'type' || k === 'title' || k === 'href') node.setAttribute(k, String(v));
    else node[k] = v;
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

function time(ms) {
  if (ms === null || ms === undefined) return '—';
  const d = new Date(ms);
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

function timeNode(ms) {
  if (ms === null || ms === undefined) return document.createTextNode('never');
  const t = el('time', {}, time(ms));
  t.dateTime = new Date(ms).toISOString();
  return t;
}

function badge(status) {
  return el('span', { class: `badge ${status}`, 'data-status': status }, status);
}

// ---- messages ------------------------------------------------------------

let noticeTimer = null;

function notice(text) {
  const n = $('notice');
  n.textContent = text;
  n.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { n.hidden = true; }, 6000);
}

function showError(err) {
  const box = $('error');
  clear(box);
  const message = err instanceof ApiError ? err.message : `Something went wrong: ${err.message || err}`;
  box.append(el('strong', {}, 'Error: '), message);
  if (err instanceof ApiError && err.code) box.append(' ', el('span', { class: 'muted' }, `(${err.code})`));
  box.append(' ', el('button', { type: 'button', class: 'link', onclick: () => { box.hidden = true; } }, 'Dismiss'));
  box.hidden = false;
}

function clearError() {
  $('error').hidden = true;
}

// ---- the API ---------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}`, Accept: 'application/json' };
  const init = { method, headers, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', `The broker cannot be reached (${e.message}).`);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data?.error?.code, data?.error?.message || `HTTP ${res.status}`);
    if (res.status === 401 || res.status === 403) {
      // The credential itself is refused: nothing on this page can work.
      denied(err);
    }
    throw err;
  }
  return data;
}

const enc = encodeURIComponent;

// ---- screens ---------------------------------------------------------------

const SCREENS = ['loading', 'signin', 'denied', 'list', 'editor', 'detail'];

function show(id) {
  for (const s of SCREENS) $(s).hidden = s !== id;
  const signedIn = ['list', 'editor', 'detail'].includes(id);
  $('sign-out').hidden = !signedIn && id !== 'denied';
  $('nav-webhooks').hidden = !signedIn;
  if (id !== 'detail') stopPolling();
}

function denied(err) {
  stopPolling();
  const expired = /expired/i.test(err.message);
  $('denied-title').textContent = expired ? 'Link expired' : 'Access refused';
  $('denied-text').textContent = expired
    ? 'This portal link has expired. Ask for a new one.'
    : err.status === 403
      ? 'This credential cannot open the portal: use a portal link or your app\'s API key.'
      : 'This portal link or API key is not valid. Ask for a new link, or sign in with your app\'s API key.';
  $('denied-detail').textContent = `The broker said: ${err.message}`;
  clearError();
  show('denied');
  $('main').focus();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.webhook = null;
  history.replaceState(null, '', location.pathname);
  clearError();
  show('signin');
  $('signin-key').focus();
}

// The fragment is the page's router: `#webhook=wh_...` opens one webhook,
// anything else (or nothing) the list. A `token=` in it is taken out first.
function fragment() {
  return new URLSearchParams(location.hash.replace(/^#/, ''));
}

function takeTokenFromUrl() {
  const params = fragment();
  const token = params.get('token');
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
}

async function route() {
  if (!state.token) return;
  clearError();
  const id = fragment().get('webhook');
  if (id) await openWebhook(id);
  else await showList();
}

function go(hash) {
  if (location.hash === hash || (hash === '' && location.hash === '')) route();
  else location.hash = hash;
}

// ---- list ------------------------------------------------------------------

async function showList() {
  let page;
  try {
    page = await api('GET', `/v1/webhook?page=${state.listPage}&length=50`);
  } catch (e) {
    if (e.status !== 401 && e.status !== 403) { show('list'); showError(e); }
    return;
  }
  show('list');
  const body = $('webhooks').querySelector('tbody');
  clear(body);
  $('list-empty').hidden = page.total > 0;
  for (const w of page.data) {
    const status = el('td', {}, badge(w.status));
    if (w.status === 'disabled' && w.disabledReason) status.append(el('div', { class: 'muted' }, w.disabledReason));
    body.append(el('tr', { 'data-webhook-id': w.id },
      el('td', { class: 'uri' }, w.uri),
      el('td', {}, w.event.join(', ')),
      status,
      el('td', {}, timeNode(w.lastSuccessAt)),
      el('td', { class: w.failingCount > 0 ? 'failing' : '' }, String(w.failingCount)),
      el('td', {}, el('a', { href: `#webhook=${enc(w.id)}`, 'aria-label': `Open webhook ${w.uri}` }, 'Open')),
    ));
  }
  pager($('list-pager'), state.listPage, page.total, 50, (p) => { state.listPage = p; showList(); });
}

function pager(node, page, total, length, goTo) {
  clear(node);
  const pages = Math.max(1, Math.ceil(total / length));
  node.append(
    el('button', { type: 'button', disabled: page <= 0, onclick: () => goTo(page - 1) }, '← Newer'),
    el('span', {}, ` Page ${page + 1} of ${pages} (${total} in all) `),
    el('button', { type: 'button', disabled: page + 1 >= pages, onclick: () => goTo(page + 1) }, 'Older →'),
  );
}

// ---- create / edit -------------------------------------------------------

function openEditor(webhook) {
  const form = $('webhook-form');
  form.reset();
  $('editor-title').textContent = webhook ? 'Edit webhook' : 'New webhook';
  $('f-save').textContent = webhook ? 'Save changes' : 'Create webhook';
  form.dataset.id = webhook ? webhook.id : '';
  if (webhook) {
    $('f-uri').value = webhook.uri;
    for (const box of form.querySelectorAll('input[name=event]')) box.checked = webhook.event.includes(box.value);
    $('f-headers').value = Object.entries(webhook.headers || {}).map(([k, v]) => `${k}: ${v}`).join('\n');
    $('f-rate').value = webhook.rateLimit ?? '';
    $('f-conc').value = webhook.maxConcurrency;
  }
  clearError();
  show('editor');
  $('f-uri').focus();
}

function readForm() {
  const form = $('webhook-form');
  const event = [...form.querySelectorAll('input[name=event]:checked')].map((b) => b.value);
  const headers = {};
  for (const line of $('f-headers').value.split('\n')) {
    if (!line.trim()) continue;
    const at = line.indexOf(':');
    if (at < 1) throw new Error(`a header line must be "Name: value", not "${line.trim()}"`);
    headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  const rate = $('f-rate').value.trim();
  const conc = $('f-conc').value.trim();
  return {
    uri: $('f-uri').value.trim(),
    event,
    headers,
    rateLimit: rate === '' ? null : Number(rate),
    maxConcurrency: conc === '' ? null : Number(conc),
  };
}

async function saveWebhook(ev) {
  ev.preventDefault();
  clearError();
  let body;
  try {
    body = readForm();
  } catch (e) {
    showError(e);
    return;
  }
  if (body.event.length === 0) {
    showError(new Error('choose at least one event'));
    return;
  }
  const id = $('webhook-form').dataset.id;
  try {
    if (id) {
      await api('PUT', `/v1/webhook/${enc(id)}`, body);
      notice('Webhook saved.');
      go(`#webhook=${enc(id)}`);
    } else {
      const created = await api('POST', '/v1/webhook', body);
      notice('Webhook created. Reveal its secret below to verify signatures.');
      go(`#webhook=${enc(created.id)}`);
    }
  } catch (e) {
    showError(e);
  }
}

// ---- one webhook ---------------------------------------------------------

async function openWebhook(id) {
  let w;
  try {
    w = await api('GET', `/v1/webhook/${enc(id)}`);
  } catch (e) {
    if (e.status === 401 || e.status === 403) return;
    show('list');
    await showList();
    showError(e);
    return;
  }
  const fresh = !state.webhook || state.webhook.id !== w.id;
  state.webhook = w;
  if (fresh) {
    state.logPage = 0;
    state.filter = { status: '', event: '', channelId: '' };
    $('filter-form').reset();
    $('secret-box').hidden = true;
    $('confirm-delete').hidden = true;
    $('attempts').hidden = true;
    state.openDelivery = null;
    const since = new Date(Date.now() - 24 * 3600 * 1000);
    $('recover-since').value = localInput(since);
  }
  renderWebhook();
  show('detail');
  await loadLog();
  startPolling();
  if (fresh) $('detail-title').focus();
}

function localInput(d) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function renderWebhook() {
  const w = state.webhook;
  $('detail-title').textContent = `Webhook ${w.id}`;
  $('detail-title').tabIndex = -1;
  const dl = $('summary');
  clear(dl);
  const row = (k, ...v) => dl.append(el('dt', {}, k), el('dd', {}, ...v));
  row('URI', el('span', { class: 'uri', id: 'summary-uri' }, w.uri));
  row('Events', w.event.join(', '));
  const status = [badge(w.status)];
  if (w.status === 'disabled') {
    status.push(' ', el('span', { id: 'summary-reason' }, w.disabledReason || 'disabled by hand'));
    if (w.disabledAt) status.push(' since ', timeNode(w.disabledAt));
  }
  row('Status', ...status);
  row('Last success', el('span', { id: 'summary-last-success' }, timeNode(w.lastSuccessAt)));
  row('Failing deliveries', el('span', { id: 'summary-failing' }, String(w.failingCount)));
  const headers = Object.entries(w.headers || {});
  row('Custom headers', headers.length ? headers.map(([k, v]) => `${k}: ${v}`).join('; ') : 'none');
  row('Rate limit', w.rateLimit ? `${w.rateLimit} per second` : 'unlimited');
  row('Max concurrency', String(w.maxConcurrency));
  row('Created', timeNode(w.createdAt));
  $('toggle').textContent = w.status === 'enabled' ? 'Disable' : 'Enable';
  const select = $('test-event');
  clear(select);
  for (const e of EVENTS.filter((e) => w.event.includes(e))) select.append(el('option', { value: e }, e));
}

async function toggle() {
  const w = state.webhook;
  const status = w.status === 'enabled' ? 'disabled' : 'enabled';
  try {
    state.webhook = await api('PUT', `/v1/webhook/${enc(w.id)}`, { uri: w.uri, event: w.event, status });
    renderWebhook();
    notice(`Webhook ${status}.`);
  } catch (e) { showError(e); }
}

async function reveal() {
  try {
    const { secret } = await api('GET', `/v1/webhook/${enc(state.webhook.id)}/secret`);
    showSecret('Signing secret', secret);
  } catch (e) { showError(e); }
}

function showSecret(label, secret) {
  $('secret-label').textContent = label;
  $('secret-value').textContent = secret;
  $('secret-box').hidden = false;
}

async function rotate() {
  try {
    const { secret } = await api('POST', `/v1/webhook/${enc(state.webhook.id)}/secret/rotate`);
    showSecret('New signing secret (the previous one keeps signing for a grace period)', secret);
    notice('Secret rotated.');
  } catch (e) { showError(e); }
}

async function confirmDelete() {
  try {
    await api('DELETE', `/v1/webhook/${enc(state.webhook.id)}`);
    notice('Webhook deleted.');
    state.webhook = null;
    go('');
  } catch (e) { showError(e); }
}

async function sendTest(ev) {
  ev.preventDefault();
  try {
    const r = await api('POST', `/v1/webhook/${enc(state.webhook.id)}/test`, { event: $('test-event').value });
    notice(`Test event sent: delivery ${r.id}.`);
    await loadLog();
  } catch (e) { showError(e); }
}

async function recover(ev) {
  ev.preventDefault();
  const since = new Date($('recover-since').value).getTime();
  if (Number.isNaN(since)) { showError(new Error('choose a date and time to recover from')); return; }
  try {
    const r = await api('POST', `/v1/webhook/${enc(state.webhook.id)}/recover`, { since });
    notice(`${r.requeued} failed ${r.requeued === 1 ? 'delivery' : 'deliveries'} sent again.`);
    await loadLog();
  } catch (e) { showError(e); }
}

// ---- delivery log --------------------------------------------------------

function logQuery() {
  const q = new URLSearchParams({ page: String(state.logPage), length: String(LOG_PAGE) });
  for (const [k, v] of Object.entries(state.filter)) if (v) q.set(k, v);
  return q.toString();
}

async function loadLog() {
  const w = state.webhook;
  if (!w) return;
  let page;
  try {
    page = await api('GET', `/v1/webhook/${enc(w.id)}/deliveries?${logQuery()}`);
  } catch (e) {
    if (e.status !== 401 && e.status !== 403) showError(e);
    return;
  }
  if (!state.webhook || state.webhook.id !== w.id) return;
  // Unchanged data is not redrawn, so a poll never takes the keyboard
  // focus away from a button in the table.
  const seen = JSON.stringify([logQuery(), state.openDelivery, page]);
  if (seen === state.lastLog) {
    if (state.openDelivery) await loadAttempts(state.openDelivery);
    return;
  }
  state.lastLog = seen;
  const body = $('deliveries').querySelector('tbody');
  clear(body);
  for (const d of page.data) {
    const retry = d.status === 'pending'
      ? null
      : el('button', { type: 'button', class: 'retry', onclick: () => retryDelivery(d.id), 'aria-label': `Retry delivery ${d.id}` }, 'Retry');
    body.append(el('tr', { 'data-delivery-id': d.id, 'data-status': d.status, class: state.openDelivery === d.id ? 'open' : '' },
      el('td', {}, timeNode(d.createdAt)),
      el('td', {}, d.event),
      el('td', { class: 'mono' }, d.channelId ?? '—'),
      el('td', {}, badge(d.status), d.lastError ? el('div', { class: 'muted small' }, d.lastError) : null),
      el('td', {}, String(d.attempts)),
      el('td', {}, d.lastStatusCode ?? '—'),
      el('td', { class: 'row-actions' },
        el('button', { type: 'button', class: 'details', onclick: () => openDelivery(d.id), 'aria-label': `Attempts of delivery ${d.id}` }, 'Attempts'),
        retry),
    ));
  }
  if (page.data.length === 0) {
    body.append(el('tr', {}, el('td', { colSpan: 7, class: 'muted' }, 'No deliveries match.')));
  }
  $('log-meta').textContent = `${page.total} ${page.total === 1 ? 'delivery' : 'deliveries'}, newest first; updates every ${POLL_MS / 1000} s.`;
  pager($('log-pager'), state.logPage, page.total, LOG_PAGE, (p) => { state.logPage = p; loadLog(); });
  if (state.openDelivery) await loadAttempts(state.openDelivery);
}

async function retryDelivery(id) {
  try {
    await api('POST', `/v1/webhook/${enc(state.webhook.id)}/deliveries/${enc(id)}/retry`);
    notice(`Delivery ${id} sent again.`);
    await loadLog();
  } catch (e) { showError(e); }
}

async function openDelivery(id) {
  state.openDelivery = id;
  state.lastLog = null;
  await loadAttempts(id);
  $('attempts').hidden = false;
  $('attempts-title').tabIndex = -1;
  $('attempts-title').focus();
}

async function loadAttempts(id) {
  let d;
  try {
    d = await api('GET', `/v1/webhook/${enc(state.webhook.id)}/deliveries/${enc(id)}`);
  } catch (e) {
    if (e.status !== 401 && e.status !== 403) showError(e);
    return;
  }
  $('attempts-title').textContent = `Delivery ${d.id} (${d.event}, ${d.status})`;
  const body = $('attempts-table').querySelector('tbody');
  clear(body);
  for (const a of d.attempts) {
    const text = a.responseBody ?? '';
    const preview = text.length > BODY_PREVIEW ? `${text.slice(0, BODY_PREVIEW)}…` : text;
    body.append(el('tr', {},
      el('td', {}, String(a.attempt)),
      el('td', {}, timeNode(a.at)),
      el('td', {}, a.statusCode ?? '—'),
      el('td', {}, `${a.durationMs} ms`),
      el('td', {}, a.error ?? '—'),
      el('td', {}, el('pre', { class: 'body' }, preview || '—')),
    ));
  }
  if (d.attempts.length === 0) body.append(el('tr', {}, el('td', { colSpan: 6, class: 'muted' }, 'No attempt yet.')));
}

// The log refreshes itself while a webhook is open and the tab is visible.
function startPolling() {
  stopPolling();
  state.poll = setInterval(async () => {
    if (document.hidden || !state.webhook) return;
    try {
      const w = await api('GET', `/v1/webhook/${enc(state.webhook.id)}`);
      if (state.webhook && state.webhook.id === w.id && JSON.stringify(w) !== JSON.stringify(state.webhook)) {
        state.webhook = w;
        renderWebhook();
      }
    } catch (e) {
      if (e.status === 404) { stopPolling(); showError(e); }
      return;
    }
    await loadLog();
  }, POLL_MS);
}

function stopPolling() {
  if (state.poll) clearInterval(state.poll);
  state.poll = null;
}

// ---- start ---------------------------------------------------------------

async function signIn(token) {
  state.token = token;
  try {
    await api('GET', '/v1/webhook?length=1');
  } catch (e) {
    if (e.status !== 401 && e.status !== 403) {
      show('signin');
      showError(e);
    }
    return false;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  return true;
}

function wire() {
  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError();
    const key = $('signin-key').value.trim();
    $('signin-key').value = '';
    if (await signIn(key)) route();
  });
  $('denied-signin').addEventListener('click', signOut);
  $('sign-out').addEventListener('click', signOut);
  $('nav-webhooks').addEventListener('click', (ev) => { ev.preventDefault(); go(''); });
  $('back').addEventListener('click', (ev) => { ev.preventDefault(); go(''); });
  $('new-webhook').addEventListener('click', () => openEditor(null));
  $('open-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    go(`#webhook=${enc($('open-id').value.trim())}`);
  });
  $('webhook-form').addEventListener('submit', saveWebhook);
  $('f-cancel').addEventListener('click', () => route());
  $('edit').addEventListener('click', () => openEditor(state.webhook));
  $('toggle').addEventListener('click', toggle);
  $('reveal').addEventListener('click', reveal);
  $('secret-hide').addEventListener('click', () => { $('secret-box').hidden = true; $('secret-value').textContent = ''; });
  $('rotate').addEventListener('click', rotate);
  $('delete').addEventListener('click', () => { $('confirm-delete').hidden = false; $('confirm-no').focus(); });
  $('confirm-no').addEventListener('click', () => { $('confirm-delete').hidden = true; $('delete').focus(); });
  $('confirm-yes').addEventListener('click', confirmDelete);
  $('test-form').addEventListener('submit', sendTest);
  $('recover-form').addEventListener('submit', recover);
  $('filter-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.filter = {
      status: $('filter-status').value,
      event: $('filter-event').value,
      channelId: $('filter-channel').value.trim(),
    };
    state.logPage = 0;
    loadLog();
  });
  $('attempts-close').addEventListener('click', () => {
    state.openDelivery = null;
    $('attempts').hidden = true;
    for (const r of $('deliveries').querySelectorAll('tr.open')) r.classList.remove('open');
  });
  window.addEventListener('hashchange', () => {
    // A token pasted into the address bar of an open portal is taken too.
    if (fragment().get('token')) { start(); return; }
    route();
  });
}

async function start() {
  takeTokenFromUrl();
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    show('signin');
    return;
  }
  if (await signIn(token)) await route();
}

wire();
start();
