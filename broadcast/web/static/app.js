// Live helpdesk dashboard.
//
// Loads a snapshot of the newest tickets and the counts, then applies row
// changes pushed over a WebSocket. Falls back to polling the snapshot when
// live updates are disabled or the WebSocket keeps failing.
'use strict';

(() => {
  const LIMIT = 50;
  const NEW_BADGE_MS = 5000;
  const TOAST_MS = 5000;
  const MAX_TOASTS = 5;
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const FAILURES_BEFORE_POLLING = 3;
  const WS_RETRY_WHILE_POLLING_MS = 60000;
  const STABLE_CONNECTION_MS = 10000;
  const FETCH_TIMEOUT_MS = 10000;
  const DEFAULT_POLL_MS = 30000;
  const APPLIED_IDS_KEPT = 2000;

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
    config: null,
    pollMs: DEFAULT_POLL_MS,
    tickets: new Map(), // String(id) -> ticket
    stats: null,
    loaded: false,
    lastEventId: '',
    applied: new Set(),
    appliedOrder: [],
    newUntil: new Map(), // String(id) -> ms timestamp
    flash: new Map(), // String(id) -> 'added' | 'updated'

    ws: null,
    wsOpen: false,
    hadConnection: false,
    failures: 0,
    attempt: 0,
    stableTimer: 0,
    reconnectTimer: 0,
    reconnectAt: 0,

    polling: false,
    pollReason: '', // 'disabled' | 'fallback'
    pollTimer: 0,

    fetching: null,
    refetchAgain: false,
    buffer: null,
    snapshotFailed: false,
    snapshotAttempt: 0,
    snapshotTimer: 0,
    signedOut: false,
    starting: false,
    startTimer: 0,
    startAttempt: 0,
    lastUpdated: 0,
    renderQueued: false,
    backfillTimer: 0,
  };

  const rows = new Map(); // String(id) -> <tr>

  class AuthError extends Error {}

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

  // Event ids come in two forms, each sorting as a string within its kind:
  // "00000000016B3748-00000003" (position-index) and
  // "e18A2B-0000000000000007" (epoch-position; ids of different epochs are
  // unrelated). parseId returns {kind, a, b} or null for other forms.
  function parseId(id) {
    let m = /^e([0-9a-f]+)-([0-9a-f]{16})$/i.exec(id);
    if (m) return { kind: `e${m[1].toUpperCase()}`, a: m[2].toUpperCase(), b: '' };
    m = /^([0-9a-f]{16})-([0-9a-f]{8})$/i.exec(id);
    if (m) return { kind: 'pos', a: m[1].toUpperCase(), b: m[2].toUpperCase() };
    return null;
  }

  // compareIds orders two event ids, or returns null when they cannot be
  // compared (unknown form, or different epochs).
  function compareIds(x, y) {
    const a = parseId(x);
    const b = parseId(y);
    if (!a || !b || a.kind !== b.kind) return null;
    if (a.a !== b.a) return a.a < b.a ? -1 : 1;
    if (a.b !== b.b) return a.b < b.b ? -1 : 1;
    return 0;
  }

  function backoff(attempt) {
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 10));
    return Math.round(cap / 2 + Math.random() * (cap / 2));
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

  // ---------------------------------------------------------------- network

  async function request(path, options = {}) {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), FETCH_TIMEOUT_MS);
    try {
      const res = await fetch(path, {
        credentials: 'same-origin',
        cache: 'no-store',
        headers: { Accept: 'application/json' },
        signal: ctrl.signal,
        ...options,
      });
      let body = null;
      if (res.status !== 204) {
        const text = await res.text();
        if (text) {
          try {
            body = JSON.parse(text);
          } catch {
            body = null;
          }
        }
      }
      return { status: res.status, ok: res.ok, body };
    } finally {
      clearTimeout(timer);
    }
  }

  async function loadConfig() {
    const res = await request('/api/config');
    if (!res.ok || !res.body || typeof res.body !== 'object') {
      throw new Error(`config: HTTP ${res.status}`);
    }
    return res.body;
  }

  async function fetchSnapshot() {
    const path = `/api/snapshot?limit=${LIMIT}`;
    let res = await request(path);
    if (res.status === 401 && state.config && state.config.demoLogin) {
      const login = await request('/demo/login', { method: 'POST' });
      if (login.ok) res = await request(path);
    }
    if (res.status === 401) {
      throw new AuthError((res.body && res.body.error) || 'unauthorized');
    }
    if (!res.ok || !res.body || typeof res.body !== 'object') {
      throw new Error(`snapshot: HTTP ${res.status}`);
    }
    return res.body;
  }

  // refreshSnapshot fetches the snapshot and replaces the local state with
  // it. Live events that arrive meanwhile are held back and applied on top,
  // so none is lost. Concurrent calls share one fetch (and fetch once more
  // if asked while a fetch was already under way).
  function refreshSnapshot() {
    if (state.fetching) {
      state.refetchAgain = true;
      return state.fetching;
    }
    clearTimeout(state.snapshotTimer);
    state.fetching = (async () => {
      do {
        state.refetchAgain = false;
        state.buffer = [];
        let snap;
        try {
          snap = await fetchSnapshot();
        } catch (err) {
          const held = state.buffer;
          state.buffer = null;
          held.forEach(applyMessage);
          snapshotFailed(err);
          return false;
        }
        const held = state.buffer;
        state.buffer = null;
        applySnapshot(snap, held);
      } while (state.refetchAgain);
      return true;
    })().finally(() => {
      state.fetching = null;
    });
    return state.fetching;
  }

  function snapshotFailed(err) {
    if (err instanceof AuthError) {
      signedOut(err.message);
      return;
    }
    state.snapshotFailed = true;
    if (!state.loaded) el.empty.textContent = 'Cannot reach the server. Trying again…';
    updateIndicator();
    // Polling retries by itself; otherwise retry with backoff.
    if (!state.polling) {
      clearTimeout(state.snapshotTimer);
      state.snapshotTimer = setTimeout(refreshSnapshot, backoff(state.snapshotAttempt++));
    }
  }

  function signedOut(message) {
    state.signedOut = true;
    stopPolling();
    closeSocket();
    showBanner('Not signed in',
      'Your session has ended or you are not signed in. Sign in, then press Refresh.' +
      (message && message !== 'unauthorized' ? ` (${message})` : ''));
    if (!state.loaded) el.empty.textContent = 'Not signed in.';
    updateIndicator();
  }

  function applySnapshot(snap, held) {
    const next = new Map();
    const list = Array.isArray(snap.tickets) ? snap.tickets : [];
    for (const t of list) {
      if (t && t.id != null) next.set(String(t.id), t);
    }
    state.tickets = next;
    if (snap.stats && typeof snap.stats === 'object') state.stats = snap.stats;
    const snapId = typeof snap.lastEventId === 'string' ? snap.lastEventId : '';
    if (snapId) state.lastEventId = snapId;

    const recovered = state.snapshotFailed;
    state.loaded = true;
    state.snapshotFailed = false;
    state.snapshotAttempt = 0;
    state.signedOut = false;
    state.lastUpdated = Date.now();
    hideBanner();

    // Apply events received while the snapshot was in flight. Those the
    // snapshot already holds are skipped when ids can be compared; the rest
    // are upserts and deletes, harmless to repeat. A held stats event is
    // newer than the snapshot only if it came after a newer row change.
    let sawNewer = false;
    for (const msg of held) {
      if (msg.event === 'stats:updated') {
        if (sawNewer) applyMessage(msg);
        continue;
      }
      const id = msg.id != null ? String(msg.id) : '';
      if (id && snapId) {
        const c = compareIds(id, snapId);
        if (c !== null && c <= 0) {
          markApplied(id);
          continue;
        }
      }
      if (msg.event && msg.event.startsWith('ticket:')) sawNewer = true;
      applyMessage(msg);
    }
    scheduleRender();
    updateIndicator();
    // The server answers again: try the live connection now rather than
    // at the next occasional retry.
    if (recovered && state.polling && state.pollReason === 'fallback' && liveAllowed() && !state.ws) {
      state.attempt = 0;
      connect();
    }
  }

  // --------------------------------------------------------------- events

  function markApplied(id) {
    if (state.applied.has(id)) return;
    state.applied.add(id);
    state.appliedOrder.push(id);
    if (state.appliedOrder.length > APPLIED_IDS_KEPT) {
      state.applied.delete(state.appliedOrder.shift());
    }
    const c = state.lastEventId ? compareIds(id, state.lastEventId) : 1;
    if (c === null || c > 0) state.lastEventId = id;
  }

  function handleMessage(msg) {
    if (!msg || typeof msg !== 'object' || typeof msg.event !== 'string') return;
    if (msg.id != null && msg.id !== '' && state.applied.has(String(msg.id))) return;
    if (state.buffer && msg.event !== 'notification') {
      state.buffer.push(msg);
      return;
    }
    applyMessage(msg);
  }

  function applyMessage(msg) {
    const id = msg.id != null ? String(msg.id) : '';
    if (id && state.applied.has(id)) return;
    const data = msg.data && typeof msg.data === 'object' ? msg.data : {};
    switch (msg.event) {
      case 'ticket:created':
        upsert(data.ticket, true);
        break;
      case 'ticket:updated':
        upsert(data.ticket, false);
        break;
      case 'ticket:deleted': {
        const tid = data.ticketId != null ? data.ticketId : data.ticket && data.ticket.id;
        if (tid != null) removeTicket(String(tid));
        break;
      }
      case 'stats:updated':
        if (data.stats && typeof data.stats === 'object') {
          state.stats = data.stats;
          scheduleRender();
        }
        break;
      case 'resync':
        refreshSnapshot();
        break;
      case 'notification':
        toast(data.type, data.message);
        break;
      default:
        return; // unknown events are ignored
    }
    if (id) markApplied(id);
    state.lastUpdated = Date.now();
  }

  function upsert(t, created) {
    if (!t || typeof t !== 'object' || t.id == null) return;
    const k = String(t.id);
    const prev = state.tickets.get(k);
    // A change older than the row we hold is stale (e.g. replayed).
    if (prev && timeOf(t) && timeOf(prev) && timeOf(t) < timeOf(prev)) return;
    state.tickets.set(k, prev ? { ...prev, ...t } : t);
    if (created) {
      state.newUntil.set(k, Date.now() + NEW_BADGE_MS);
      setTimeout(scheduleRender, NEW_BADGE_MS + 50);
      state.flash.set(k, 'added');
    } else if (!state.flash.has(k)) {
      state.flash.set(k, 'updated');
    }
    scheduleRender();
  }

  function removeTicket(k) {
    const had = state.tickets.delete(k);
    state.newUntil.delete(k);
    state.flash.delete(k);
    scheduleRender();
    if (had) scheduleBackfill();
  }

  // After deletions the list may hold fewer rows than the server has:
  // fetch the snapshot again, once things have settled.
  function scheduleBackfill() {
    clearTimeout(state.backfillTimer);
    state.backfillTimer = setTimeout(() => {
      const total = state.stats ? Number(state.stats.total) : NaN;
      if (!state.polling && state.tickets.size < LIMIT && Number.isFinite(total) && total > state.tickets.size) {
        refreshSnapshot();
      }
    }, 1500);
  }

  // ------------------------------------------------------------ websocket

  function liveAllowed() {
    return !!(state.config && state.config.liveUpdates) && !state.signedOut;
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = 0;
    state.reconnectAt = 0;
    if (state.ws || !liveAllowed()) return;
    if (!navigator.onLine) {
      updateIndicator();
      return; // the 'online' event reconnects
    }
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let url = `${proto}//${location.host}/ws`;
    if (state.lastEventId) url += `?lastEventId=${encodeURIComponent(state.lastEventId)}`;

    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      socketClosed(false, false, 0);
      return;
    }
    state.ws = ws;
    let opened = false;
    let openedAt = 0;

    ws.onopen = () => {
      if (state.ws !== ws) return;
      opened = true;
      openedAt = Date.now();
      state.wsOpen = true;
      const reconnected = state.hadConnection || state.polling;
      state.hadConnection = true;
      stopPolling();
      clearTimeout(state.stableTimer);
      state.stableTimer = setTimeout(() => {
        state.failures = 0;
        state.attempt = 0;
      }, STABLE_CONNECTION_MS);
      updateIndicator();
      // Changes may have been missed while disconnected.
      if (reconnected || !state.loaded) refreshSnapshot();
    };
    ws.onmessage = (e) => {
      if (state.ws !== ws || typeof e.data !== 'string') return;
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      handleMessage(msg);
    };
    ws.onerror = () => {}; // a close event follows
    ws.onclose = (e) => {
      if (state.ws !== ws) return;
      state.ws = null;
      state.wsOpen = false;
      clearTimeout(state.stableTimer);
      const stable = opened && Date.now() - openedAt >= STABLE_CONNECTION_MS;
      socketClosed(opened, stable, e.code);
    };
  }

  function closeSocket() {
    clearTimeout(state.reconnectTimer);
    clearTimeout(state.stableTimer);
    const ws = state.ws;
    state.ws = null;
    state.wsOpen = false;
    if (ws) {
      try {
        ws.close(1000, 'client closing');
      } catch {
        // already closed
      }
    }
  }

  async function socketClosed(opened, stable, code) {
    if (stable) {
      state.failures = 0;
      state.attempt = 0;
    } else {
      state.failures++;
    }
    if (!liveAllowed()) {
      updateIndicator();
      return;
    }
    if (!opened) {
      // The browser hides why an upgrade failed; ask the endpoint.
      const status = await probeSocket();
      if (state.ws || !liveAllowed()) return;
      if (status === 400 && state.lastEventId) {
        // The server no longer understands our position (e.g. it was
        // reconfigured): start over from a fresh snapshot.
        state.lastEventId = '';
        await refreshSnapshot();
        if (state.ws || !liveAllowed()) return;
      }
      if (status === 503) {
        startPolling('fallback');
        scheduleReconnect(WS_RETRY_WHILE_POLLING_MS);
        return;
      }
      if (status === 401) {
        await refreshSnapshot(); // signs in again, or shows "Not signed in"
        if (state.ws || !liveAllowed()) return;
      }
    }
    if (state.polling) {
      scheduleReconnect(WS_RETRY_WHILE_POLLING_MS);
    } else if (state.failures >= FAILURES_BEFORE_POLLING) {
      startPolling('fallback');
      scheduleReconnect(WS_RETRY_WHILE_POLLING_MS);
    } else {
      scheduleReconnect(backoff(state.attempt++));
    }
    updateIndicator();
  }

  async function probeSocket() {
    try {
      const q = state.lastEventId ? `?lastEventId=${encodeURIComponent(state.lastEventId)}` : '';
      const res = await request(`/ws${q}`);
      return res.status;
    } catch {
      return 0;
    }
  }

  function scheduleReconnect(delay) {
    clearTimeout(state.reconnectTimer);
    if (delay >= WS_RETRY_WHILE_POLLING_MS) delay = Math.round(delay * (0.8 + Math.random() * 0.4));
    state.reconnectAt = Date.now() + delay;
    state.reconnectTimer = setTimeout(connect, delay);
  }

  // -------------------------------------------------------------- polling

  function startPolling(reason) {
    if (state.polling) {
      state.pollReason = reason;
      return;
    }
    state.polling = true;
    state.pollReason = reason;
    clearTimeout(state.snapshotTimer);
    updateIndicator();
    // Coming from a failed WebSocket the data may be stale: poll now.
    schedulePoll(reason === 'fallback' ? 0 : state.pollMs);
  }

  function schedulePoll(delay) {
    clearTimeout(state.pollTimer);
    state.pollTimer = setTimeout(async () => {
      if (!state.polling) return;
      await refreshSnapshot();
      // While the server is unreachable, retry sooner than the interval.
      if (state.polling) {
        schedulePoll(state.snapshotFailed ? Math.min(state.pollMs, backoff(state.snapshotAttempt++)) : state.pollMs);
      }
    }, delay);
  }

  function stopPolling() {
    state.polling = false;
    state.pollReason = '';
    clearTimeout(state.pollTimer);
  }

  // -------------------------------------------------------------- startup

  async function start() {
    if (state.starting) return;
    state.starting = true;
    clearTimeout(state.startTimer);
    try {
      state.signedOut = false;
      hideBanner();
      try {
        state.config = await loadConfig();
      } catch {
        state.snapshotFailed = true;
        if (!state.loaded) el.empty.textContent = 'Cannot reach the server. Trying again…';
        updateIndicator();
        state.startTimer = setTimeout(start, backoff(state.startAttempt++));
        return;
      }
      state.startAttempt = 0;
      state.pollMs = pollOverride || positiveInt(state.config.pollIntervalMs) || DEFAULT_POLL_MS;
      await refreshSnapshot();
      if (state.signedOut) return;
      if (state.config.liveUpdates) {
        stopPolling();
        connect();
      } else {
        closeSocket();
        startPolling('disabled');
      }
      updateIndicator();
    } finally {
      state.starting = false;
    }
  }

  async function manualRefresh() {
    el.refresh.disabled = true;
    el.refresh.classList.add('busy');
    try {
      if (!state.config || state.signedOut) {
        await start();
        return;
      }
      await refreshSnapshot();
      if (liveAllowed() && !state.ws) {
        state.attempt = 0;
        connect();
      }
    } finally {
      setTimeout(() => {
        el.refresh.disabled = false;
        el.refresh.classList.remove('busy');
      }, 300);
    }
  }

  // ------------------------------------------------------------ rendering

  function currentState() {
    if (!navigator.onLine || state.snapshotFailed || state.signedOut) return 'offline';
    if (state.wsOpen) return 'live';
    if (state.polling) return 'polling';
    return 'reconnecting';
  }

  function updateIndicator() {
    const s = currentState();
    if (el.conn.dataset.state !== s) el.conn.dataset.state = s;
    if (el.conn.textContent !== CONN_LABELS[s]) el.conn.textContent = CONN_LABELS[s];
    let title;
    switch (s) {
      case 'live':
        title = 'Connected: changes appear as they happen';
        break;
      case 'polling':
        title = `Refreshing every ${Math.round(state.pollMs / 1000)} s` +
          (state.pollReason === 'fallback' ? '; live connection unavailable' : '');
        break;
      case 'offline':
        title = state.signedOut ? 'Not signed in'
          : !navigator.onLine ? 'This device is offline' : 'The server cannot be reached';
        break;
      default:
        title = state.hadConnection ? 'Connection lost; trying again' : 'Connecting';
    }
    el.conn.title = title;
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
    const s = state.stats;
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
    const list = Array.from(state.tickets.entries());
    list.sort((a, b) => timeOf(b[1]) - timeOf(a[1]) || numericId(b[0]) - numericId(a[0]) || (a[0] < b[0] ? 1 : -1));
    // Keep only the newest rows, in memory as on screen.
    for (const [k] of list.slice(LIMIT)) {
      state.tickets.delete(k);
      state.newUntil.delete(k);
    }
    return list.slice(0, LIMIT);
  }

  function renderTickets() {
    if (!state.loaded) return;
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
    if (!state.config || state.signedOut) {
      start();
      return;
    }
    refreshSnapshot();
    if (liveAllowed() && !state.ws && (!state.polling || state.pollReason === 'fallback')) {
      state.attempt = 0;
      connect();
    }
  });

  // Keep relative times current.
  setInterval(() => {
    const now = Date.now();
    for (const row of rows.values()) updateTime(row, now);
  }, 15000);

  updateIndicator();
  start();
})();
