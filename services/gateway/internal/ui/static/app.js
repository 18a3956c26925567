// The storefront: sign up, log in, browse the catalog, place and cancel orders, and follow each
// order's payment live. Every element a test or a person acts on has a stable id or data-test.
import { APIError, call, describe, setToken, stream } from './api.js';
import { format } from './money.js';

const $ = (id) => document.getElementById(id);
const SESSION_KEY = 'meshmart.session';
const CANCELLABLE = new Set(['PENDING', 'PAID']);

// session is the signed-in account: {accessToken, refreshToken, user}, or null. It lives in
// sessionStorage, so it survives a reload of this tab but no other tab or browser restart sees it.
let session = null;
// orders maps an order id to {order, el, seen}: the newest revision shown, its <li>, and the ids
// of the payment events already listed under it.
const orders = new Map();
// watch aborts the live stream of payment events.
let watch = null;
// retryKey is the idempotency key of an order whose outcome is unknown (UNAVAILABLE): placing
// the same order again reuses it, so the service returns that order instead of charging twice.
let retryKey = null;

// ---- messages ----

function showError(err) {
  if (err instanceof APIError && err.code === 16 && session) {
    signOut();
    err = new APIError({ code: 16, message: 'Your session has ended; please log in again.' }, 401);
  }
  console.warn(err);
  $('error-message').textContent = err.message;
  $('error').dataset.code = err.code ?? '';
  $('error-details').replaceChildren(...describe(err).map((line) => el('li', line)));
  $('error').hidden = false;
  $('notice').hidden = true;
}

function clearError() {
  $('error').hidden = true;
}

function notice(text) {
  clearError();
  $('notice').textContent = text;
  $('notice').hidden = false;
}

function el(tag, text, attrs = {}) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

// busy disables a form's buttons while its request runs, so a double click sends one request.
async function busy(form, fn) {
  const buttons = form.querySelectorAll('button');
  buttons.forEach((b) => { b.disabled = true; });
  try {
    await fn();
  } catch (err) {
    showError(err);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
    $('place-order').disabled = !session;
  }
}

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // randomUUID needs a secure context; a page served over plain HTTP to another host has not one.
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

// ---- catalog ----

async function loadProducts() {
  const { products } = await call('GET', '/v1/products?pageSize=100');
  $('products').replaceChildren(...products.map((p) => {
    const qty = el('input', undefined, {
      type: 'number', min: '0', max: '10000', value: '0', 'data-sku': p.sku, 'data-test': 'qty',
      'aria-label': `Quantity of ${p.name}`,
    });
    const row = el('tr', undefined, { 'data-test': 'product', 'data-sku': p.sku });
    row.append(el('td', p.name), el('td', p.sku), el('td', format(p.price), { class: 'num', 'data-test': 'price' }));
    const cell = el('td', undefined, { class: 'num' });
    cell.append(qty);
    row.append(cell);
    return row;
  }));
  $('catalog').dataset.loaded = String(products.length);
}

async function placeOrder() {
  const items = [...document.querySelectorAll('#products input[data-sku]')]
    .map((i) => ({ sku: i.dataset.sku, quantity: Number(i.value) }))
    .filter((i) => i.quantity > 0);
  if (items.length === 0) {
    showError(new APIError({ code: 3, message: 'Choose a quantity for at least one product.' }, 0));
    return;
  }
  const paymentMethodToken = $('payment-method').value;
  const what = JSON.stringify([items, paymentMethodToken]);
  const key = retryKey?.what === what ? retryKey.key : newKey();
  try {
    const { order } = await call('POST', '/v1/orders', { items, paymentMethodToken, idempotencyKey: key });
    retryKey = null;
    upsert(order, true);
    document.querySelectorAll('#products input[data-sku]').forEach((i) => { i.value = '0'; });
    notice(`Order placed: ${status(order)}.`);
  } catch (err) {
    retryKey = err instanceof APIError && err.code === 14 ? { what, key } : null;
    throw err;
  }
}

// ---- orders ----

function status(order) {
  return (order.status || 'ORDER_STATUS_UNSPECIFIED').replace(/^ORDER_STATUS_/, '');
}

// upsert shows an order, unless an update with a higher revision is already shown: the cancel
// response and the refresh after a payment event race, and the older must not win.
function upsert(order, newest = false) {
  let rec = orders.get(order.id);
  if (rec && BigInt(rec.order.revision ?? 0) > BigInt(order.revision ?? 0)) return rec;
  if (!rec) {
    const li = $('order-template').content.firstElementChild.cloneNode(true);
    li.dataset.orderId = order.id;
    li.querySelector('[data-test=order-cancel]').addEventListener('click', (e) => cancel(order.id, e.target));
    rec = { order, el: li, seen: new Set() };
    orders.set(order.id, rec);
    if (newest) $('order-list').prepend(li); else $('order-list').append(li);
  }
  rec.order = order;
  const li = rec.el;
  const s = status(order);
  const badge = li.querySelector('[data-test=order-status]');
  badge.textContent = s;
  badge.dataset.status = s;
  li.dataset.status = s;
  li.querySelector('[data-test=order-id]').textContent = order.id;
  li.querySelector('[data-test=order-total]').textContent = format(order.total);
  li.querySelector('[data-test=order-lines]').replaceChildren(...(order.items ?? []).map((i) =>
    el('li', `${i.quantity} × ${i.sku} at ${format({ currencyCode: order.total?.currencyCode, minorUnits: i.unitPriceMinor })}`)));
  li.querySelector('[data-test=order-reason]').textContent = order.paymentFailureReason || '';
  li.querySelector('[data-test=order-cancel]').hidden = !CANCELLABLE.has(s);
  return rec;
}

async function loadOrders() {
  const { orders: list } = await call('GET', '/v1/orders?pageSize=20');
  for (const o of list ?? []) upsert(o);
}

async function cancel(id, button) {
  button.disabled = true;
  try {
    const { order } = await call('POST', `/v1/orders/${encodeURIComponent(id)}:cancel`, { reason: 'cancelled in the storefront' });
    upsert(order);
    notice(`Order ${status(order).toLowerCase()}.`);
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
}

// ---- live payment events ----

// onPaymentEvent lists the event under its order and re-reads the order, whose status the
// payment moved (a capture pays it, a refund completes its cancellation).
async function onPaymentEvent(ev) {
  const orderId = ev?.payment?.orderId;
  if (!orderId) return;
  const { order } = await call('GET', `/v1/orders/${encodeURIComponent(orderId)}`);
  const rec = upsert(order, true);
  if (rec.seen.has(ev.id)) return;
  rec.seen.add(ev.id);
  const type = (ev.type || '').replace(/^PAYMENT_EVENT_TYPE_/, '');
  const when = ev.createTime ? new Date(ev.createTime).toLocaleTimeString() : '';
  rec.el.querySelector('[data-test=order-events]').append(
    el('li', `${when} payment ${type.toLowerCase()} ${format(ev.amount)}`, { 'data-test': 'order-event', 'data-type': type }));
}

function watchState(state, text) {
  $('watch-state').dataset.state = state;
  $('watch-state').textContent = `Live updates: ${text}`;
}

// startWatch follows every payment event of the signed-in user on one stream. One stream for all
// orders, not one per order: a browser opens at most six HTTP/1.1 connections to an origin, and
// each open stream holds one. It reconnects after a failure, backing off up to 30 s, until
// signed out.
function startWatch() {
  watch?.abort();
  const ctl = new AbortController();
  watch = ctl;
  (async () => {
    let delay = 1000;
    while (!ctl.signal.aborted) {
      watchState('connecting', 'connecting…');
      try {
        for await (const msg of stream('/v1/payments:watch', { signal: ctl.signal })) {
          watchState('open', 'on');
          delay = 1000;
          onPaymentEvent(msg.event).catch(showError);
        }
      } catch (err) {
        if (ctl.signal.aborted) break;
        if (err instanceof APIError && (err.code === 16 || err.code === 7)) {
          showError(err);
          break;
        }
        console.warn('payment watch:', err);
      }
      if (ctl.signal.aborted) break;
      watchState('retrying', `reconnecting in ${delay / 1000} s`);
      await new Promise((r) => { setTimeout(r, delay); });
      delay = Math.min(delay * 2, 30000);
    }
    watchState('closed', 'off');
  })();
}

// ---- session ----

function signIn(s) {
  session = s;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
  setToken(s.accessToken);
  $('session-user').textContent = s.user?.username || s.user?.email || '';
  $('session').hidden = false;
  $('auth').hidden = true;
  $('orders').hidden = false;
  $('place-order').disabled = false;
  $('place-order-hint').hidden = true;
  startWatch();
  loadOrders().catch(showError);
}

function signOut() {
  const s = session;
  session = null;
  sessionStorage.removeItem(SESSION_KEY);
  watch?.abort();
  watch = null;
  if (s?.refreshToken) call('POST', '/v1/auth:logout', { refreshToken: s.refreshToken }).catch(() => {});
  setToken('');
  orders.clear();
  $('order-list').replaceChildren();
  $('session').hidden = true;
  $('auth').hidden = false;
  $('orders').hidden = true;
  $('place-order').disabled = true;
  $('place-order-hint').hidden = false;
}

// ---- wiring ----

function fields(form) {
  return Object.fromEntries(new FormData(form).entries());
}

$('signup-form').addEventListener('submit', (e) => {
  e.preventDefault();
  busy(e.target, async () => {
    const { user } = await call('POST', '/v1/users', fields(e.target));
    $('login-identifier').value = user.username;
    $('login-password').focus();
    e.target.reset();
    notice(`Account ${user.username} created. Log in to shop.`);
  });
});

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  busy(e.target, async () => {
    const { identifier, password } = fields(e.target);
    const who = identifier.includes('@') ? { email: identifier } : { username: identifier };
    const resp = await call('POST', '/v1/auth:login', { ...who, password });
    e.target.reset();
    signIn({ accessToken: resp.accessToken, refreshToken: resp.refreshToken, user: resp.user });
    notice(`Welcome, ${resp.user?.givenName || resp.user?.username}.`);
  });
});

$('order-form').addEventListener('submit', (e) => {
  e.preventDefault();
  busy(e.target, placeOrder);
});

$('logout').addEventListener('click', signOut);
$('error-close').addEventListener('click', clearError);

try {
  const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
  if (saved?.accessToken) signIn(saved);
} catch { sessionStorage.removeItem(SESSION_KEY); }
loadProducts().catch(showError);
document.body.dataset.ready = 'true';
