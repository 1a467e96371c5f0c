// Live helpdesk dashboard.
//
// rowcast.js keeps the newest tickets and the counts up to date (snapshot,
// stream from its cursor, resync, polling fallback); this file only renders
// them: the table, the counts, the connection indicator and the toasts.
import { connect } from './rowcast.js';

const LIMIT = 50;
const NEW_BADGE_MS = 5000;
const TOAST_MS = 5000;
const MAX_TOASTS = 5;

const STATUS_ORDER = ['open', 'in_progress', 'resolved', 'closed'];
const PRIORITY_ORDER = ['low', 'medium', 'high', 'urgent'];
const TOAST_TYPES = ['success', 'info', 'warning', 'error'];
const CONN_LABELS = {
  live: 'Live',
  reconnecting: 'Reconnecting',
  polling: 'Polling',
  offline: 'Offline',
};

const $ = (id) => document.getElementById(id);
const el = {
  conn: $('conn-status'),
  updated: $('last-updated'),
  refresh: $('refresh'),
  banner: $('banner'),
  bannerTitle: $('banner-title'),
  bannerText: $('banner-text'),
  total: $('stat-total'),
  totalNote: $('total-note'),
  statusCards: $('status-cards'),
  priorityCards: $('priority-cards'),
  body: $('tickets-body'),
  empty: $('tickets-empty'),
  count: $('ticket-count'),
  toasts: $('toasts'),
};

const params = new URLSearchParams(location.search);
const pollOverride = positiveInt(params.get('poll'));

const state = {
  view: null,
  signedOut: false,
  lastUpdated: 0,
  renderQueued: false,
  newUntil: new Map(), // key -> ms timestamp
  flash: new Map(), // key -> 'added' | 'updated'
};

const rows = new Map(); // key -> <tr>

// ---------------------------------------------------------------- helpers

function positiveInt(v) {
  const n = Number(v);
  return Number.isFinite(n) && n > 0 ? Math.floor(n) : 0;
}

function humanize(value) {
  const s = String(value).replace(/[_-]+/g, ' ').trim();
  return s ? s.charAt(0).toUpperCase() + s.slice(1) : '—';
}

function tone(value, known) {
  const v = String(value == null ? '' : value).toLowerCase();
  return known.includes(v) ? v : 'other';
}

function timeOf(t) {
  const ms = Date.parse(t && t.updated_at);
  return Number.isFinite(ms) ? ms : 0;
}

function numericId(k) {
  const n = Number(k);
  return Number.isFinite(n) ? n : 0;
}

const numberFormat = new Intl.NumberFormat();
const dateFormat = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
const dateYearFormat = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const clockFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

function relativeTime(ms, now) {
  if (!ms) return '—';
  const s = Math.round((now - ms) / 1000);
  if (s < 45) return 'just now';
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 24) return `${h} h ago`;
  const d = new Date(ms);
  return d.getFullYear() === new Date(now).getFullYear() ? dateFormat.format(d) : dateYearFormat.format(d);
}

function node(tag, className, text) {
  const n = document.createElement(tag);
  if (className) n.className = className;
  if (text != null) n.textContent = text;
  return n;
}

// ------------------------------------------------------------------- view

// The demo signs the page in itself; elsewhere a 401 means signed out.
async function demoLogin() {
  const view = state.view;
  if (!view || !view.config || !view.config.demoLogin) return false;
  try {
    const res = await fetch('/demo/login', { method: 'POST', credentials: 'same-origin' });
    return res.ok;
  } catch {
    return false;
  }
}

function start() {
  if (state.view) state.view.close();
  state.signedOut = false;
  hideBanner();
  const view = connect({
    recent: LIMIT,
    pollInterval: pollOverride || undefined,
    onUnauthorized: demoLogin,
  });
  state.view = view;
  view.on('change', (c) => {
    if (view !== state.view) return;
    if (c.type === 'upsert') {
      const k = String(c.key);
      if (c.op === 'created') {
        state.newUntil.set(k, Date.now() + NEW_BADGE_MS);
        setTimeout(scheduleRender, NEW_BADGE_MS + 50);
        state.flash.set(k, 'added');
      } else if (!state.flash.has(k)) {
        state.flash.set(k, 'updated');
      }
    } else if (c.type === 'delete') {
      state.newUntil.delete(String(c.key));
      state.flash.delete(String(c.key));
    }
    state.lastUpdated = Date.now();
    if (c.type === 'snapshot') hideBanner();
    scheduleRender();
  });
  view.on('status', (status) => {
    if (view !== state.view) return;
    // The view closes itself only when retrying cannot help.
    if (status === 'closed' && view.error) {
      if (view.error.status === 401) signedOut(view.error.message);
      else showBanner('Cannot show tickets', String(view.error.message || view.error));
    }
    updateIndicator();
  });
  view.on('error', () => {
    if (view === state.view) updateIndicator();
  });
  view.on('notification', (data) => {
    if (data && typeof data === 'object') toast(data.type, data.message);
  });
  updateIndicator();
}

function signedOut(message) {
  state.signedOut = true;
  showBanner('Not signed in',
    'Your session has ended or you are not signed in. Sign in, then press Refresh.' +
    (message && message !== 'unauthorized' ? ` (${message})` : ''));
  if (!state.view || !state.view.loaded) el.empty.textContent = 'Not signed in.';
}

async function manualRefresh() {
  el.refresh.disabled = true;
  el.refresh.classList.add('busy');
  try {
    if (!state.view || state.view.status === 'closed') start();
    else await state.view.refresh();
  } finally {
    setTimeout(() => {
      el.refresh.disabled = false;
      el.refresh.classList.remove('busy');
    }, 300);
  }
}

// ------------------------------------------------------------ rendering

function currentState() {
  const view = state.view;
  if (!navigator.onLine || state.signedOut || !view || view.status === 'closed') return 'offline';
  if (view.status === 'live') return 'live';
  // The last request got no answer at all: the server is out of reach.
  if (view.error && !view.error.status) return 'offline';
  if (view.status === 'polling') return 'polling';
  return 'reconnecting';
}

function updateIndicator() {
  const s = currentState();
  const view = state.view;
  if (el.conn.dataset.state !== s) el.conn.dataset.state = s;
  if (el.conn.textContent !== CONN_LABELS[s]) el.conn.textContent = CONN_LABELS[s];
  let title;
  switch (s) {
    case 'live':
      title = 'Connected: changes appear as they happen';
      break;
    case 'polling': {
      const ms = pollOverride || (view && view.config && view.config.pollIntervalMs) || 30000;
      title = `Refreshing every ${Math.round(ms / 1000)} s` +
        (view && view.config && view.config.liveUpdates ? '; live connection unavailable' : '');
      break;
    }
    case 'offline':
      title = state.signedOut ? 'Not signed in'
        : !navigator.onLine ? 'This device is offline' : 'The server cannot be reached';
      break;
    default:
      title = view && view.status === 'reconnecting' ? 'Connection lost; trying again' : 'Connecting';
  }
  el.conn.title = title;
  if (s === 'offline' && view && !view.loaded && !state.signedOut) el.empty.textContent = 'Cannot reach the server. Trying again…';
}

function scheduleRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  setTimeout(() => {
    state.renderQueued = false;
    render();
  }, 0);
}

function render() {
  renderStats();
  renderTickets();
  renderUpdated();
}

function renderUpdated() {
  el.updated.textContent = state.lastUpdated ? `Updated ${clockFormat.format(new Date(state.lastUpdated))}` : '';
}

function setValue(target, value) {
  const v = Number.isFinite(value) ? value : null;
  const dv = v === null ? '' : String(v);
  if (target.dataset.value === dv) return false;
  target.dataset.value = dv;
  target.textContent = v === null ? '–' : numberFormat.format(v);
  return true;
}

function bump(target) {
  const card = target.closest('.card, .mini-card') || target;
  card.classList.remove('bump');
  void card.offsetWidth; // restart the animation
  card.classList.add('bump');
}

function renderStats() {
  const s = state.view && state.view.stats;
  if (!s) return;
  const byStatus = s.byStatus && typeof s.byStatus === 'object' ? s.byStatus : {};
  const byPriority = s.byPriority && typeof s.byPriority === 'object' ? s.byPriority : {};
  let total = Number(s.total);
  if (!Number.isFinite(total)) {
    total = Object.values(byStatus).reduce((a, b) => a + (Number(b) || 0), 0);
  }
  const hadValue = el.total.dataset.value !== '';
  if (setValue(el.total, total) && hadValue) bump(el.total);
  const open = (Number(byStatus.open) || 0) + (Number(byStatus.in_progress) || 0);
  el.totalNote.textContent = total > 0 ? `${numberFormat.format(open)} still open or in progress` : '';
  renderGroup(el.statusCards, 'status', byStatus, STATUS_ORDER, total);
  renderGroup(el.priorityCards, 'priority', byPriority, PRIORITY_ORDER, total);
}

function renderGroup(container, kind, counts, order, total) {
  const keys = order.slice();
  for (const k of Object.keys(counts).sort()) {
    if (!keys.includes(k)) keys.push(k);
  }
  const existing = new Map();
  for (const card of container.children) existing.set(card.dataset.key, card);
  keys.forEach((key, i) => {
    let card = existing.get(key);
    if (!card) {
      card = node('div', `mini-card ${kind}-${tone(key, order)}`);
      card.dataset.key = key;
      const label = node('div', 'stat-label');
      label.append(node('span', 'dot'), node('span', null, humanize(key)));
      const value = node('div', 'stat-value');
      value.dataset.stat = `${kind}:${key}`;
      value.dataset.value = '';
      const meter = node('div', 'meter');
      meter.append(node('span'));
      card.append(label, value, meter);
    }
    if (container.children[i] !== card) container.insertBefore(card, container.children[i] || null);
    existing.delete(key);
    const n = Number(counts[key]) || 0;
    const value = card.querySelector('.stat-value');
    const hadValue = value.dataset.value !== '';
    if (setValue(value, n) && hadValue) bump(value);
    const pct = total > 0 ? Math.min(100, (n / total) * 100) : 0;
    card.querySelector('.meter span').style.width = `${pct.toFixed(1)}%`;
    card.title = total > 0 ? `${humanize(key)}: ${numberFormat.format(n)} of ${numberFormat.format(total)} (${Math.round(pct)}%)` : '';
  });
  for (const card of existing.values()) card.remove();
}

function sortedTickets() {
  // The view keeps the newest LIMIT rows; shown newest first.
  const list = Array.from(state.view.rows, ([k, t]) => [String(k), t]);
  list.sort((a, b) => timeOf(b[1]) - timeOf(a[1]) || numericId(b[0]) - numericId(a[0]) || (a[0] < b[0] ? 1 : -1));
  return list.slice(0, LIMIT);
}

function renderTickets() {
  if (!state.view || !state.view.loaded) return;
  const now = Date.now();
  const list = sortedTickets();
  const seen = new Set();
  list.forEach(([k, t], i) => {
    seen.add(k);
    let row = rows.get(k);
    if (!row) {
      row = document.createElement('tr');
      row.dataset.ticketId = k;
      row.addEventListener('animationend', () => row.classList.remove('row-added', 'row-updated'));
      rows.set(k, row);
    }
    const until = state.newUntil.get(k) || 0;
    const isNew = until > now;
    if (!isNew && until) state.newUntil.delete(k);
    fillRow(row, t, isNew, now);
    if (el.body.children[i] !== row) el.body.insertBefore(row, el.body.children[i] || null);
    const flash = state.flash.get(k);
    if (flash) {
      row.classList.remove('row-added', 'row-updated');
      void row.offsetWidth; // restart the animation
      row.classList.add(flash === 'added' ? 'row-added' : 'row-updated');
    }
  });
  state.flash.clear();
  for (const [k, row] of rows) {
    if (!seen.has(k)) {
      row.remove();
      rows.delete(k);
    }
  }
  el.empty.hidden = list.length > 0;
  el.empty.textContent = 'No tickets yet.';
  el.count.textContent = list.length ? `${list.length} most recently updated` : '';
}

function fillRow(row, t, isNew, now) {
  const sig = JSON.stringify([t, isNew]);
  if (row._sig === sig) {
    updateTime(row, now);
    return;
  }
  row._sig = sig;
  const status = t.status == null ? '' : String(t.status);
  const priority = t.priority == null ? '' : String(t.priority);
  row.dataset.status = status;
  row.dataset.priority = priority;

  const idCell = node('td', 'col-id', `#${t.id}`);

  const titleCell = node('td', 'col-title');
  const titleLine = node('div', 'title-line');
  const title = node('span', 'title', t.title == null || t.title === '' ? '(no title)' : String(t.title));
  titleLine.append(title);
  if (isNew) titleLine.append(node('span', 'badge badge-new', 'New'));
  if (t.category != null && t.category !== '') titleLine.append(node('span', 'chip', String(t.category)));
  titleCell.append(titleLine);
  if (t.description != null && t.description !== '') {
    const desc = String(t.description);
    titleCell.append(node('div', 'description', desc));
    titleCell.title = desc.length > 400 ? `${desc.slice(0, 400)}…` : desc;
  } else {
    titleCell.removeAttribute('title');
  }

  const statusCell = node('td', 'col-status');
  statusCell.append(node('span', `badge status-${tone(status, STATUS_ORDER)}`, status ? humanize(status) : '—'));
  const priorityCell = node('td', 'col-priority');
  priorityCell.append(node('span', `badge priority-${tone(priority, PRIORITY_ORDER)}`, priority ? humanize(priority) : '—'));

  const assignee = t.assignee_email ? node('td', 'col-person', String(t.assignee_email))
    : node('td', 'col-person muted', 'Unassigned');
  const requester = t.requester_email ? node('td', 'col-person col-requester', String(t.requester_email))
    : node('td', 'col-person col-requester muted', '—');
  for (const c of [assignee, requester]) c.title = c.textContent;

  const timeCell = node('td', 'col-time');
  const time = node('time');
  timeCell.append(time);

  row.replaceChildren(idCell, titleCell, statusCell, priorityCell, assignee, requester, timeCell);
  row._time = time;
  row._ms = timeOf(t);
  updateTime(row, now);
}

function updateTime(row, now) {
  const time = row._time;
  if (!time) return;
  const text = relativeTime(row._ms, now);
  if (time.textContent !== text) time.textContent = text;
  if (row._ms && !time.dateTime) {
    const d = new Date(row._ms);
    time.dateTime = d.toISOString();
    time.title = fullFormat.format(d);
  }
}

// --------------------------------------------------------------- banner

function showBanner(title, text) {
  el.bannerTitle.textContent = title;
  el.bannerText.textContent = text;
  el.banner.hidden = false;
}

function hideBanner() {
  el.banner.hidden = true;
}

// --------------------------------------------------------------- toasts

const TOAST_ICONS = { success: '✓', info: 'i', warning: '!', error: '×' };

function toast(type, message) {
  if (message == null || message === '') return;
  const kind = TOAST_TYPES.includes(type) ? type : 'info';
  let text = String(message);
  if (text.length > 500) text = `${text.slice(0, 500)}…`;
  const t = node('div', `toast toast-${kind}`);
  t.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  const icon = node('span', 'toast-icon', TOAST_ICONS[kind]);
  icon.setAttribute('aria-hidden', 'true');
  const body = node('span', 'toast-message', text);
  const close = node('button', 'toast-close', '×');
  close.type = 'button';
  close.setAttribute('aria-label', 'Dismiss');
  close.addEventListener('click', () => dismiss(t));
  t.append(icon, body, close);
  el.toasts.append(t);
  while (el.toasts.children.length > MAX_TOASTS) el.toasts.firstElementChild.remove();
  setTimeout(() => dismiss(t), TOAST_MS);
}

function dismiss(t) {
  if (!t.isConnected || t.classList.contains('leaving')) return;
  t.classList.add('leaving');
  setTimeout(() => t.remove(), 250);
}

// ---------------------------------------------------------------- wiring

el.refresh.addEventListener('click', manualRefresh);

window.addEventListener('offline', updateIndicator);
window.addEventListener('online', () => {
  updateIndicator();
  if (!state.view || state.view.status === 'closed') start();
  else state.view.refresh();
});

// Keep relative times current.
setInterval(() => {
  const now = Date.now();
  for (const row of rows.values()) updateTime(row, now);
}, 15000);

start();
