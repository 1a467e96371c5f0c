// rowcast.js: a live view of a rowcast table, for dashboards.
//
// connect(options) loads the rows from /api/snapshot (every page, or the
// newest N), streams changes from the snapshot's cursor over WebSocket
// (/ws) or Server-Sent Events (/events), and keeps `rows` equal to the
// table under the filter: rows are upserted and deleted by primary key,
// events already applied are dropped by id, a `resync` reloads, a row that
// leaves the filter is removed. Without live updates (503, or a stream
// that keeps failing) it polls the snapshot and goes live again when it
// can. Event names, the key and the snapshot's field names come from the
// server's /api/config, not from this file.
//
// No dependencies; runs in browsers and in Node (pass `WebSocket`, e.g.
// the `ws` package, where there is no global one).

const DEFAULTS = {
  // pollInterval: the server's ROWCAST_POLL_INTERVAL (30 s by default)
  // unless given.
  // Reconnection: the n-th retry waits a random time between half and all
  // of min(maxReconnectDelay, reconnectDelay * 2^n).
  reconnectDelay: 500,
  maxReconnectDelay: 15000,
  // Failed stream attempts in a row before the view also polls.
  fallbackAfter: 3,
  // A stream that stayed open this long resets the backoff.
  stableAfter: 10000,
  requestTimeout: 10000,
  pageSize: 500,
};

const MAX_RECENT = 500;

/** The values of `view.status`. */
export const STATUSES = Object.freeze(['connecting', 'live', 'reconnecting', 'polling', 'closed']);

/**
 * An error from rowcast or the network; `status` is the HTTP status (0
 * when there was no answer).
 */
export class RowcastError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.name = 'RowcastError';
    this.status = status;
  }
}

/** Opens a live view; see the View class. */
export function connect(options = {}) {
  return new View(options);
}

// ------------------------------------------------------------- event ids

// Event ids come in two forms, each ordered within its kind:
// "00000000016B3748-00000003" (commit position and index; logical
// capture, stable across restarts) and "e18A2B3C4D5E-0000000000000007"
// (epoch and counter; notify capture, where ids of different epochs are
// unrelated).
function parseId(id) {
  let m = /^e([0-9a-f]+)-([0-9a-f]{16})$/i.exec(id);
  if (m) return { kind: `e${m[1].toUpperCase()}`, a: m[2].toUpperCase(), b: '' };
  m = /^([0-9a-f]{16})-([0-9a-f]{8})$/i.exec(id);
  if (m) return { kind: 'pos', a: m[1].toUpperCase(), b: m[2].toUpperCase() };
  return null;
}

/**
 * Orders two event ids: -1, 0 or 1, or null when they cannot be compared
 * (unknown form, or different epochs).
 */
export function compareEventIds(x, y) {
  const a = parseId(String(x));
  const b = parseId(String(y));
  if (!a || !b || a.kind !== b.kind) return null;
  if (a.a !== b.a) return a.a < b.a ? -1 : 1;
  if (a.b !== b.b) return a.b < b.b ? -1 : 1;
  return 0;
}

// ------------------------------------------------------------- filters

// The server compares a column's text with the filter's values: strings
// as they are, NULL as "", other JSON as written.
function scalarText(v) {
  if (v === null || v === undefined) return '';
  return typeof v === 'string' ? v : JSON.stringify(v);
}

function normalizeFilter(filter) {
  if (filter === null || filter === undefined) return null;
  if (typeof filter !== 'object' || Array.isArray(filter)) {
    throw new TypeError('rowcast: filter must be an object of column: value or column: [values]');
  }
  const out = {};
  for (const [col, v] of Object.entries(filter)) {
    const values = (Array.isArray(v) ? v : [v]).map(scalarText);
    if (values.length === 0) throw new TypeError(`rowcast: filter ${col} has no values`);
    for (const s of values) {
      // Filters travel as comma-separated query parameters.
      if (s.includes(',')) throw new TypeError(`rowcast: filter ${col}: values may not contain commas (${JSON.stringify(s)})`);
    }
    out[col] = values;
  }
  return Object.keys(out).length ? out : null;
}

function matches(filter, row) {
  if (!filter) return true;
  for (const [col, values] of Object.entries(filter)) {
    if (!values.includes(scalarText(row[col]))) return false;
  }
  return true;
}

// ----------------------------------------------------- "newest N" order

// ISO timestamps as the rows carry them (with "Z" from events, "+00:00"
// from snapshots, microseconds), as [milliseconds, fraction]; null when v
// is not one.
function timeOf(v) {
  if (typeof v !== 'string') return null;
  const m = /^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d(?::?\d\d)?)?$/.exec(v);
  if (!m) return null;
  let zone = m[4] || 'Z';
  if (/^[+-]\d\d$/.test(zone)) zone += ':00';
  const ms = Date.parse(`${m[1]}T${m[2]}${zone}`);
  return Number.isFinite(ms) ? [ms, m[3] ? Number(`0${m[3]}`) : 0] : null;
}

function compareValues(a, b) {
  // PostgreSQL's descending order puts NULL first: the "newest".
  const an = a === null || a === undefined;
  const bn = b === null || b === undefined;
  if (an || bn) return an === bn ? 0 : an ? 1 : -1;
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  const ta = timeOf(a);
  const tb = timeOf(b);
  if (ta && tb) return ta[0] - tb[0] || ta[1] - tb[1];
  const sa = scalarText(a);
  const sb = scalarText(b);
  return sa < sb ? -1 : sa > sb ? 1 : 0;
}

// --------------------------------------------------------------- the view

/**
 * A live view of the table. Fields: rows (Map from key to row), stats,
 * status, lastEventId, error, config, filter, loaded, version.
 */
export class View {
  #opts;
  #listeners = new Map();
  #closed = false;
  #wake = null;
  #stream = null;
  #needConfig = true;
  #needReload = true;
  #reloadGen = 0;
  #failures = 0;
  #attempt = 0;
  #fallback = false;
  #nextPoll = 0;
  #wasLive = false;
  #resyncs = 0;
  #readyResolve;
  #reloadWaiters = [];
  #interrupts = 0;

  constructor(options = {}) {
    const o = { ...DEFAULTS, ...options };
    if (o.url === undefined || o.url === null || o.url === '') {
      if (typeof location === 'undefined') throw new TypeError('rowcast: options.url is required outside browsers');
      o.url = location.origin;
    }
    o.url = String(o.url).replace(/\/+$/, '');
    o.transport = o.transport || 'ws';
    if (o.transport !== 'ws' && o.transport !== 'sse') throw new TypeError('rowcast: transport must be "ws" or "sse"');
    o.fetch = o.fetch || (typeof fetch === 'function' ? fetch.bind(globalThis) : null);
    if (!o.fetch) throw new TypeError('rowcast: no fetch; pass options.fetch');
    o.WebSocket = o.WebSocket || globalThis.WebSocket;
    if (o.transport === 'ws' && !o.WebSocket) {
      throw new TypeError('rowcast: no WebSocket here; pass options.WebSocket (e.g. the ws package) or transport: "sse"');
    }
    if (o.recent !== undefined && o.recent !== null) {
      if (!Number.isInteger(o.recent) || o.recent < 1 || o.recent > MAX_RECENT) {
        throw new RangeError(`rowcast: recent must be a whole number from 1 to ${MAX_RECENT}`);
      }
    } else {
      o.recent = 0;
    }
    if (o.pollInterval !== undefined && o.pollInterval !== null && !(Number(o.pollInterval) > 0)) {
      throw new RangeError('rowcast: pollInterval must be a positive number');
    }
    for (const k of ['reconnectDelay', 'maxReconnectDelay', 'fallbackAfter', 'stableAfter', 'requestTimeout', 'pageSize']) {
      if (!(Number(o[k]) > 0)) throw new RangeError(`rowcast: ${k} must be a positive number`);
    }
    this.#opts = o;

    /** Rows by primary key (the key's value, or JSON of the values for composite keys). */
    this.rows = new Map();
    /** The last stats:updated payload's stats (null for users who get no global counts). */
    this.stats = null;
    /** "connecting", "live", "reconnecting", "polling" or "closed". */
    this.status = 'connecting';
    /** The id of the last event applied, or the snapshot's cursor. */
    this.lastEventId = '';
    /** The last error (a RowcastError), null while things work. */
    this.error = null;
    /** The server's /api/config, once loaded. */
    this.config = null;
    /** The filter in force: column → values (strings), or null. */
    this.filter = normalizeFilter(options.filter);
    /** Whether rows hold a snapshot yet. */
    this.loaded = false;
    /** Grows with every change of rows, stats or status. */
    this.version = 0;
    /** Resolves once rows are loaded (or the view is closed). */
    this.ready = new Promise((resolve) => {
      this.#readyResolve = resolve;
    });
    this.#run().catch((err) => this.#fatal(err instanceof RowcastError ? err : new RowcastError(String(err && err.message ? err.message : err))));
  }

  /**
   * Calls fn for "change" (rows or stats changed; fn gets what changed),
   * "status" (fn gets the status), "error" (a RowcastError, or the
   * server's error event), "subscribed", or an application event's name
   * (fn gets its payload and {id}). Returns a function that removes fn.
   */
  on(name, fn) {
    if (typeof fn !== 'function') throw new TypeError('rowcast: on() needs a function');
    let set = this.#listeners.get(name);
    if (!set) {
      set = new Set();
      this.#listeners.set(name, set);
    }
    set.add(fn);
    return () => {
      set.delete(fn);
    };
  }

  /**
   * Changes the filter: the view reloads under the new filter and streams
   * from the new cursor. Resolves once the new rows are loaded.
   */
  subscribe(filter) {
    const f = normalizeFilter(filter);
    const allowed = this.config && this.config.filterColumns;
    if (f && allowed) {
      // Checked here so that a typo throws instead of closing the view
      // (rowcast refuses unknown columns with 400, which is final).
      for (const col of Object.keys(f)) {
        if (!allowed.includes(col)) throw new TypeError(`rowcast: unknown filter column ${JSON.stringify(col)}: filters may use ${allowed.join(', ')}`);
      }
    }
    this.filter = f;
    return this.refresh();
  }

  /** Reloads the rows now; resolves once they are loaded. */
  refresh() {
    if (this.#closed) return Promise.resolve();
    this.#reloadGen++;
    this.#needReload = true;
    const p = new Promise((resolve) => this.#reloadWaiters.push(resolve));
    this.#interrupt();
    return p;
  }

  /** Stops streaming and polling for good. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#interrupt();
    this.#setStatus('closed');
    this.#settleWaiters();
  }

  // ----------------------------------------------------------- internals

  #emit(name, ...args) {
    const set = this.#listeners.get(name);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        // One broken listener must not stop the view.
        if (typeof reportError === 'function') reportError(err);
        else setTimeout(() => { throw err; });
      }
    }
  }

  #changed(detail) {
    this.version++;
    this.#emit('change', detail);
  }

  #setStatus(s) {
    if (this.status === s || (this.#closed && s !== 'closed')) return;
    this.status = s;
    if (s === 'live') this.#wasLive = true;
    this.version++;
    this.#emit('status', s);
  }

  #setError(err) {
    this.error = err;
    this.#emit('error', err);
  }

  #fatal(err) {
    if (this.#closed) return;
    this.#setError(err);
    this.close();
  }

  #settleWaiters() {
    const waiters = this.#reloadWaiters;
    this.#reloadWaiters = [];
    for (const w of waiters) w();
    this.#readyResolve();
  }

  // Stops the current stream or wait, so the loop looks at its state again.
  #interrupt() {
    this.#interrupts++;
    if (this.#stream) this.#stream.stop();
    if (this.#wake) this.#wake();
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.#wake === done) this.#wake = null;
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this.#wake = done;
    });
  }

  #backoff() {
    const o = this.#opts;
    const cap = Math.min(o.maxReconnectDelay, o.reconnectDelay * 2 ** Math.min(this.#attempt++, 20));
    return cap / 2 + Math.random() * (cap / 2);
  }

  // The loop: config, rows, then a stream until it ends; polling instead
  // while streams are off, and beside stream attempts while they fail.
  // Rows are only ever reloaded while no stream is open, so an event is
  // never applied under a snapshot read after it.
  async #run() {
    while (!this.#closed) {
      const polling = !this.config || !this.config.liveUpdates || this.#fallback;
      try {
        if (this.#needConfig) {
          this.config = await this.#loadConfig();
          this.#needConfig = false;
        }
        if (this.#needReload || (polling && this.loaded && Date.now() >= this.#nextPoll)) {
          await this.#reload();
          // Superseded by subscribe or refresh while loading: load again.
          if (this.#needReload) continue;
        }
      } catch (err) {
        if (await this.#givesUp(err)) return;
        if (this.#closed) return;
        if (!this.config || !this.config.liveUpdates || this.#fallback) {
          if (this.loaded) this.#setStatus('polling');
        } else {
          this.#setStatus(this.#wasLive ? 'reconnecting' : 'connecting');
        }
        const delay = this.#backoff();
        await this.#sleep(polling && this.loaded ? Math.min(delay, this.#pollInterval()) : delay);
        continue;
      }
      if (this.#closed) return;

      if (!this.config.liveUpdates) {
        // Streams answer 503: poll, and ask again each time whether live
        // updates are back.
        this.#fallback = false;
        this.#setStatus('polling');
        await this.#sleep(this.#nextPoll - Date.now());
        this.#needConfig = true;
        continue;
      }
      if (this.config.ready === false || !this.lastEventId) {
        // Capture is not running yet (rowcast is starting): a stream now
        // would be told to resync. Wait, as for a failed attempt.
        this.#afterFailure();
        this.#needConfig = true;
        if (!this.lastEventId) this.#needReload = true;
        await this.#sleep(this.#retryDelay());
        continue;
      }

      let end;
      try {
        end = await this.#openStream();
      } catch (err) {
        // E.g. a token function that failed: a failed attempt.
        this.#setError(err instanceof RowcastError ? err : new RowcastError(String(err && err.message ? err.message : err)));
        end = { opened: false, lived: 0 };
      }
      if (this.#closed) return;
      if (end.resync) {
        // Refetch and stream from the new cursor. Resyncs in a row (the
        // server keeps refusing our cursor) back off.
        this.#needReload = true;
        if (this.#resyncs++ > 0) await this.#sleep(this.#backoff());
        continue;
      }
      if (end.stopped) continue; // subscribe, refresh or close
      if (end.fatal) {
        this.#fatal(end.fatal);
        return;
      }
      if (end.status === 401 || end.status === 403) {
        // The probe of a failed upgrade: signed out, or an origin rowcast
        // does not allow.
        const err = new RowcastError(end.status === 401 ? 'unauthorized' : 'origin not allowed: add it to CORS_ORIGINS', end.status);
        if (await this.#givesUp(err)) return;
      }
      if (end.opened && end.lived >= this.#opts.stableAfter) {
        // A connection that worked for a while and was lost: reconnect
        // from the start of the backoff.
        this.#failures = 0;
        this.#attempt = 0;
        this.#setStatus(this.#fallback ? 'polling' : 'reconnecting');
      } else {
        this.#afterFailure();
      }
      // Whatever ended the stream, ask again whether live updates are on
      // and capture is running before the next attempt.
      this.#needConfig = true;
      await this.#sleep(this.#retryDelay());
    }
  }

  #afterFailure() {
    this.#failures++;
    if (!this.#fallback && this.#failures >= this.#opts.fallbackAfter && this.loaded) {
      // The stream keeps failing: poll too, starting now, since the rows
      // may be stale; stream attempts go on.
      this.#fallback = true;
      this.#nextPoll = 0;
    }
    this.#setStatus(this.#fallback ? 'polling' : this.#wasLive ? 'reconnecting' : 'connecting');
  }

  #pollInterval() {
    const given = Number(this.#opts.pollInterval);
    if (given > 0) return given;
    const server = this.config && Number(this.config.pollIntervalMs);
    return server > 0 ? server : 30000;
  }

  #retryDelay() {
    const delay = this.#backoff();
    if (this.#fallback) return Math.max(0, Math.min(delay, this.#nextPoll - Date.now()));
    return delay;
  }

  // #givesUp decides what a failed request means: true when the view is
  // closed for good (the caller returns), false to retry.
  async #givesUp(err) {
    if (this.#closed) return true;
    const status = err instanceof RowcastError ? err.status : 0;
    if (status === 401) {
      const again = this.#opts.onUnauthorized ? await this.#opts.onUnauthorized(err) : false;
      if (this.#closed) return true;
      if (again) return false;
      this.#fatal(new RowcastError(err.message || 'unauthorized', 401));
      return true;
    }
    if (status === 400 || status === 403 || status === 404) {
      // A bad filter, an origin rowcast does not allow, or no rowcast at
      // this URL: retrying cannot help.
      this.#fatal(err);
      return true;
    }
    this.#setError(err instanceof RowcastError ? err : new RowcastError(String(err && err.message ? err.message : err)));
    return false;
  }

  // --------------------------------------------------------------- HTTP

  async #token() {
    const t = this.#opts.token;
    if (typeof t === 'function') return (await t()) || '';
    return t || '';
  }

  async #url(path, params) {
    const u = new URL(this.#opts.url + path);
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== undefined && v !== null && v !== '') u.searchParams.set(k, String(v));
    }
    const token = await this.#token();
    if (token) u.searchParams.set('access_token', token);
    return u;
  }

  #filterParams() {
    const p = {};
    if (this.filter) for (const [col, values] of Object.entries(this.filter)) p[col] = values.join(',');
    return p;
  }

  async #getJSON(path, params) {
    const u = await this.#url(path, params);
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), this.#opts.requestTimeout);
    let res;
    let text;
    try {
      res = await this.#opts.fetch(u.href, {
        credentials: this.#opts.credentials || 'same-origin',
        cache: 'no-store',
        headers: { Accept: 'application/json' },
        signal: ctrl.signal,
      });
      text = await res.text();
    } catch (err) {
      throw new RowcastError(`GET ${path}: ${err && err.name === 'AbortError' ? 'timed out' : (err && err.message) || err}`);
    } finally {
      clearTimeout(timer);
    }
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!res.ok) {
      throw new RowcastError((body && body.error) || `GET ${path}: HTTP ${res.status}`, res.status);
    }
    if (!body || typeof body !== 'object') throw new RowcastError(`GET ${path}: not a JSON object`, res.status);
    return body;
  }

  async #loadConfig() {
    const c = await this.#getJSON('/api/config');
    if (!Array.isArray(c.key) || c.key.length === 0 || !c.events || !c.rowsField) {
      // An older rowcast: the view cannot know the table's key.
      throw new RowcastError('rowcast at this URL does not describe its table in /api/config; upgrade rowcast', 404);
    }
    if (!this.#opts.recent && !c.pages) {
      throw new RowcastError('rowcast at this URL does not serve pages; use recent: N', 404);
    }
    return c;
  }

  // #reload loads the rows (every page, or the newest N) and replaces the
  // view's. The cursor is the first page's: applying the stream from it
  // brings every page up to date, whenever each page was read.
  async #reload() {
    const gen = this.#reloadGen;
    const c = this.config;
    const next = new Map();
    let cursor;
    let stats;
    if (this.#opts.recent) {
      const snap = await this.#getJSON('/api/snapshot', { ...this.#filterParams(), limit: this.#opts.recent });
      cursor = snap.lastEventId;
      stats = snap.stats;
      for (const row of snap[c.rowsField] || []) next.set(this.#keyOf(row), row);
    } else {
      let after = null;
      for (let first = true; first || after; first = false) {
        const page = await this.#getJSON('/api/snapshot', {
          ...this.#filterParams(),
          order: 'key',
          limit: Math.min(this.#opts.pageSize, c.snapshotLimit || MAX_RECENT),
          after,
        });
        if (this.#closed || gen !== this.#reloadGen) return; // superseded
        if (first) {
          cursor = page.lastEventId;
          stats = page.stats;
        }
        for (const row of page[c.rowsField] || []) next.set(this.#keyOf(row), row);
        after = page.next || null;
      }
    }
    if (this.#closed || gen !== this.#reloadGen) return;
    this.rows.clear();
    for (const [k, row] of next) this.rows.set(k, row);
    if (stats !== undefined) this.stats = stats;
    this.lastEventId = typeof cursor === 'string' ? cursor : '';
    this.loaded = true;
    this.error = null;
    this.#needReload = false;
    this.#nextPoll = Date.now() + this.#pollInterval();
    this.#changed({ type: 'snapshot', rows: this.rows.size });
    this.#settleWaiters();
  }

  // ------------------------------------------------------------- streams

  #keyOf(row) {
    const key = this.config.key;
    if (key.length === 1) return row[key[0]];
    return JSON.stringify(key.map((k) => row[k]));
  }

  // The key in a delete payload: the value, or an object for composite keys.
  #deletedKey(v) {
    const key = this.config.key;
    if (key.length === 1) return v;
    return JSON.stringify(key.map((k) => (v && typeof v === 'object' ? v[k] : undefined)));
  }

  // #openStream connects and resolves when the stream ends, with
  // {opened, lived, resync, stopped, status, fatal}.
  async #openStream() {
    // The URL may wait for a token function; whatever interrupts the loop
    // meanwhile (close, refresh, subscribe) must not meet a stream it
    // cannot stop.
    const before = this.#interrupts;
    const u = await this.#url(this.#opts.transport === 'sse' ? '/events' : '/ws', this.#streamParams());
    if (this.#closed || before !== this.#interrupts) return { opened: false, lived: 0, stopped: true };
    return this.#opts.transport === 'sse' ? this.#openSSE(u) : this.#openWS(u);
  }

  #streamParams() {
    return { ...this.#filterParams(), lastEventId: this.lastEventId };
  }

  #openWS(u) {
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    return new Promise((resolve) => {
      let ws;
      let opened = false;
      let openedAt = 0;
      let ended = false;
      let serverError = null;
      const end = (info) => {
        if (ended) return;
        ended = true;
        clearTimeout(openTimer);
        if (this.#stream === handle) this.#stream = null;
        try {
          ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
          ws.close(1000);
        } catch {
          // already closed
        }
        resolve({ opened, lived: opened ? Date.now() - openedAt : 0, ...info });
      };
      const handle = { stop: () => end({ stopped: true }) };
      const openTimer = setTimeout(() => end({ timeout: true }), this.#opts.requestTimeout);
      try {
        ws = new this.#opts.WebSocket(u.href);
      } catch (err) {
        clearTimeout(openTimer);
        resolve({ opened: false, lived: 0, error: err });
        return;
      }
      this.#stream = handle;
      ws.onopen = () => {
        opened = true;
        openedAt = Date.now();
        clearTimeout(openTimer);
        this.#live();
      };
      ws.onmessage = (m) => {
        let msg;
        try {
          msg = JSON.parse(typeof m.data === 'string' ? m.data : String(m.data));
        } catch {
          return;
        }
        // rowcast says what was wrong before it closes with 1008.
        if (msg && msg.event === 'error') serverError = msg.data || {};
        this.#handle(msg, () => end({ resync: true }));
      };
      ws.onerror = () => {
        // onclose follows and says more.
      };
      ws.onclose = async (e) => {
        if (ended) return;
        const code = e && e.code;
        if (code === 1008 && serverError) {
          end({ fatal: new RowcastError(serverError.message || 'refused by rowcast', 400) });
          return;
        }
        if (!opened) {
          // A browser does not say why an upgrade failed; ask.
          const status = await this.#probe(u);
          end({ status, code });
          return;
        }
        end({ code });
      };
    });
  }

  async #probe(u) {
    try {
      const p = new URL(u.href);
      p.protocol = p.protocol === 'wss:' ? 'https:' : 'http:';
      const res = await this.#opts.fetch(p.href, { credentials: this.#opts.credentials || 'same-origin', cache: 'no-store' });
      await res.text().catch(() => '');
      return res.status;
    } catch {
      return 0;
    }
  }

  // SSE over fetch rather than EventSource: it reads the HTTP status
  // (503, 401), works in Node, and leaves reconnection to this loop.
  #openSSE(u) {
    const ctrl = new AbortController();
    let opened = false;
    let openedAt = 0;
    let ended = false;
    let done;
    const result = new Promise((resolve) => {
      done = resolve;
    });
    const end = (info) => {
      if (ended) return;
      ended = true;
      clearTimeout(openTimer);
      if (this.#stream === handle) this.#stream = null;
      ctrl.abort();
      done({ opened, lived: opened ? Date.now() - openedAt : 0, ...info });
    };
    const handle = { stop: () => end({ stopped: true }) };
    const openTimer = setTimeout(() => end({ timeout: true }), this.#opts.requestTimeout);
    this.#stream = handle;
    (async () => {
      const res = await this.#opts.fetch(u.href, {
        credentials: this.#opts.credentials || 'same-origin',
        cache: 'no-store',
        headers: { Accept: 'text/event-stream' },
        signal: ctrl.signal,
      });
      if (!res.ok || !res.body) {
        let message = '';
        try {
          message = (JSON.parse(await res.text()) || {}).error || '';
        } catch {
          // no JSON body
        }
        if (res.status === 400) end({ fatal: new RowcastError(message || 'refused by rowcast', 400) });
        else end({ status: res.status });
        return;
      }
      opened = true;
      openedAt = Date.now();
      clearTimeout(openTimer);
      this.#live();
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      let ev = { id: '', event: '', data: [] };
      for (;;) {
        const { value, done: eof } = await reader.read();
        if (eof) break;
        buf += decoder.decode(value, { stream: true });
        let nl;
        while (!ended && (nl = buf.indexOf('\n')) >= 0) {
          let line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.endsWith('\r')) line = line.slice(0, -1);
          if (line === '') {
            if (ev.data.length) {
              let data;
              try {
                data = JSON.parse(ev.data.join('\n'));
              } catch {
                data = ev.data.join('\n');
              }
              this.#handle({ id: ev.id || undefined, event: ev.event || 'message', data }, () => end({ resync: true }));
            }
            ev = { id: '', event: '', data: [] };
            continue;
          }
          if (line.startsWith(':')) continue; // keepalive
          const i = line.indexOf(':');
          const field = i < 0 ? line : line.slice(0, i);
          let value = i < 0 ? '' : line.slice(i + 1);
          if (value.startsWith(' ')) value = value.slice(1);
          if (field === 'id') ev.id = value;
          else if (field === 'event') ev.event = value;
          else if (field === 'data') ev.data.push(value);
        }
        if (ended) return;
      }
      end({});
    })().catch((err) => end({ error: err }));
    return result;
  }

  #live() {
    this.#fallback = false;
    this.error = null;
    this.#setStatus('live');
  }

  // #handle applies one message; returns true when it ended the stream.
  #handle(msg, resync) {
    if (!msg || typeof msg !== 'object' || typeof msg.event !== 'string') return false;
    const { id, event, data } = msg;
    const ev = this.config.events;
    if (event === (ev.resync || 'resync')) {
      resync();
      return true;
    }
    if (event === (ev.stats || 'stats:updated')) {
      this.stats = data && typeof data === 'object' ? (data.stats ?? null) : null;
      this.#changed({ type: 'stats' });
      return false;
    }
    if (id) {
      // Already applied (a replay after a restart): drop it. Ids that
      // cannot be compared (a new epoch) are new.
      const cmp = this.lastEventId ? compareEventIds(id, this.lastEventId) : null;
      if (cmp !== null && cmp <= 0) return false;
    }
    if (!this.#applyRow(event, data, id)) {
      this.#emit(event, data, { id: id || null });
    }
    if (id) {
      this.lastEventId = id;
      this.#resyncs = 0;
    }
    return false;
  }

  // #applyRow applies a row event; false when event is not one.
  #applyRow(event, data, id) {
    const ev = this.config.events;
    const prefix = this.config.prefix;
    if (!data || typeof data !== 'object') return false;
    let kind = '';
    let row = null;
    if (ev.profile === 'ticket_update') {
      // One event name for all three; the type field says which.
      if (event !== ev.created) return false;
      row = data[prefix];
      kind = data.type === ev.createdType ? 'created' : data.type === ev.updatedType ? 'updated' : data.type === ev.deletedType ? 'deleted' : '';
    } else if (event === ev.created) {
      row = data[prefix];
      kind = 'created';
    } else if (event === ev.updated) {
      row = data[prefix];
      kind = 'updated';
    } else if (event === ev.deleted) {
      kind = 'deleted';
    } else {
      return false;
    }
    const op = kind === 'deleted' ? 'delete' : kind ? 'upsert' : '';
    if (op === 'upsert' && row && typeof row === 'object') {
      const key = this.#keyOf(row);
      if (!matches(this.filter, row)) {
        // It left the filter: rowcast sends such updates so we drop it.
        this.rows.delete(key);
        this.#changed({ type: 'delete', id, event, op: kind, key, row, reason: 'filter' });
      } else {
        this.rows.set(key, row);
        if (this.#opts.recent) this.#trim();
        this.#changed({ type: 'upsert', id, event, op: kind, key, row });
      }
    } else if (op === 'delete') {
      const key = ev.profile === 'ticket_update' ? (row ? this.#keyOf(row) : undefined) : this.#deletedKey(data[this.config.deletedKeyField]);
      this.rows.delete(key);
      this.#changed({ type: 'delete', id, event, op: kind, key });
    }
    return true;
  }

  // #trim keeps the newest N rows by the server's snapshot order.
  #trim() {
    const order = (this.config.recentOrder && this.config.recentOrder.length) ? this.config.recentOrder : this.config.key;
    while (this.rows.size > this.#opts.recent) {
      let oldestKey;
      let oldest;
      for (const [k, row] of this.rows) {
        if (oldest === undefined || this.#newer(oldest, row, order) > 0) {
          oldest = row;
          oldestKey = k;
        }
      }
      this.rows.delete(oldestKey);
    }
  }

  #newer(a, b, order) {
    for (const col of order) {
      const c = compareValues(a[col], b[col]);
      if (c) return c;
    }
    return 0;
  }
}
