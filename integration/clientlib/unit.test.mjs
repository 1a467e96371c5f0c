// Unit tests of rowcast.js with a scripted server: fetch and WebSocket
// are fakes the tests drive, so each rule of the client protocol is
// checked on its own (integration/clientlib_test.go checks the whole
// against rowcast and PostgreSQL). Run: node --test
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, compareEventIds } from 'rowcast-client';

const BASE = 'http://rowcast.test';

function config(over = {}) {
  return {
    liveUpdates: true,
    ready: true,
    pollIntervalMs: 30000,
    demoLogin: false,
    prefix: 'ticket',
    events: {
      profile: 'colon',
      created: 'ticket:created',
      updated: 'ticket:updated',
      deleted: 'ticket:deleted',
      stats: 'stats:updated',
      resync: 'resync',
      createdType: 'new_ticket',
      updatedType: 'updated_ticket',
      deletedType: 'deleted_ticket',
    },
    deletedKeyField: 'ticketId',
    rowsField: 'tickets',
    key: ['id'],
    recentOrder: ['updated_at', 'id'],
    filterColumns: ['status'],
    snapshotLimit: 500,
    pages: true,
    ...over,
  };
}

// A scripted rowcast: `snapshot(params)` answers /api/snapshot, sockets
// are recorded for the test to drive.
function fakeServer({ cfg = config(), snapshot, wsStatus = () => 400 } = {}) {
  // Upgrades fail at once while /ws would answer other than 400 (the
  // answer to a probe that is not an upgrade).
  const srv = { cfg, requests: [], sockets: [], snapshot };
  srv.fetch = async (url) => {
    const u = new URL(url);
    srv.requests.push(u);
    const reply = (status, body) => ({ ok: status >= 200 && status < 300, status, text: async () => JSON.stringify(body) });
    if (u.pathname === '/api/config') return typeof srv.cfg === 'function' ? reply(200, srv.cfg()) : reply(200, srv.cfg);
    if (u.pathname === '/api/snapshot') {
      const r = srv.snapshot(Object.fromEntries(u.searchParams));
      return reply(r.status || 200, r.body || r);
    }
    if (u.pathname === '/ws') return reply(wsStatus(), { error: 'x' });
    return reply(404, { error: 'not found' });
  };
  srv.WebSocket = class {
    constructor(url) {
      this.url = new URL(url);
      this.closed = false;
      srv.sockets.push(this);
      if (wsStatus() !== 400) setTimeout(() => this.drop(), 1);
    }
    close() {
      this.closed = true;
    }
    // Test controls.
    open() {
      this.onopen && this.onopen({});
    }
    send(msg) {
      this.onmessage && this.onmessage({ data: JSON.stringify(msg) });
    }
    drop(code = 1006) {
      this.closed = true;
      this.onclose && this.onclose({ code });
    }
  };
  srv.lastSocket = () => srv.sockets[srv.sockets.length - 1];
  return srv;
}

const tick = () => new Promise((r) => setTimeout(r, 5));

async function until(what, fn, ms = 3000) {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await tick();
  }
}

function open(srv, options = {}) {
  return connect({ url: BASE, fetch: srv.fetch, WebSocket: srv.WebSocket, reconnectDelay: 5, maxReconnectDelay: 20, ...options });
}

const row = (id, extra = {}) => ({ id, title: `t${id}`, status: 'open', updated_at: '2026-01-01T00:00:00.000000+00:00', ...extra });

test('compareEventIds orders ids of one kind and refuses others', () => {
  assert.equal(compareEventIds('0000000000000010-00000001', '0000000000000010-00000002'), -1);
  assert.equal(compareEventIds('0000000000000011-00000000', '0000000000000010-00000002'), 1);
  assert.equal(compareEventIds('e1A-0000000000000002', 'e1a-0000000000000002'), 0);
  assert.equal(compareEventIds('e1A-0000000000000002', 'e1B-0000000000000001'), null);
  assert.equal(compareEventIds('e1A-0000000000000002', '0000000000000010-00000002'), null);
  assert.equal(compareEventIds('nonsense', 'e1A-0000000000000002'), null);
});

test('loads every page and streams from the first page\'s cursor', async () => {
  const srv = fakeServer({
    snapshot(p) {
      assert.equal(p.order, 'key');
      assert.equal(p.status, 'open,in_progress');
      const after = p.after ? JSON.parse(p.after).id : 0;
      const ids = [after + 1, after + 2].filter((i) => i <= 5);
      return {
        stats: { total: 5 },
        tickets: ids.map((i) => row(i)),
        lastEventId: `00000000000000${10 + after}-00000000`,
        ...(ids.length && ids[ids.length - 1] < 5 ? { next: JSON.stringify({ id: ids[ids.length - 1] }) } : {}),
      };
    },
  });
  const view = open(srv, { filter: { status: ['open', 'in_progress'] }, pageSize: 2 });
  await view.ready;
  assert.deepEqual([...view.rows.keys()], [1, 2, 3, 4, 5]);
  assert.equal(view.lastEventId, '0000000000000010-00000000');
  assert.deepEqual(view.stats, { total: 5 });
  await until('socket', () => srv.sockets.length === 1);
  const ws = srv.lastSocket();
  assert.equal(ws.url.pathname, '/ws');
  assert.equal(ws.url.searchParams.get('lastEventId'), '0000000000000010-00000000');
  assert.equal(ws.url.searchParams.get('status'), 'open,in_progress');
  ws.open();
  assert.equal(view.status, 'live');
  view.close();
  assert.equal(view.status, 'closed');
});

test('upserts, deletes, drops what was applied, removes rows that leave the filter', async () => {
  const srv = fakeServer({ snapshot: () => ({ stats: null, tickets: [row(1), row(2)], lastEventId: '0000000000000010-00000000' }) });
  const view = open(srv, { filter: { status: 'open' } });
  const changes = [];
  view.on('change', (c) => changes.push(c));
  const toasts = [];
  view.on('notification', (p, meta) => toasts.push([p.message, meta.id]));
  await until('socket', () => srv.sockets.length === 1);
  const ws = srv.lastSocket();
  ws.open();
  ws.send({ id: '0000000000000009-00000000', event: 'ticket:updated', data: { ticket: row(1, { title: 'stale' }) } });
  assert.equal(view.rows.get(1).title, 't1', 'an event at or before the cursor is dropped');
  ws.send({ id: '0000000000000011-00000000', event: 'ticket:created', data: { ticket: row(3) } });
  ws.send({ id: '0000000000000011-00000001', event: 'ticket:updated', data: { ticket: row(1, { title: 'new' }) } });
  ws.send({ id: '0000000000000011-00000001', event: 'ticket:updated', data: { ticket: row(1, { title: 'again' }) } });
  ws.send({ id: '0000000000000012-00000000', event: 'ticket:updated', data: { ticket: row(2, { status: 'closed' }) } });
  ws.send({ id: '0000000000000013-00000000', event: 'ticket:deleted', data: { ticketId: 3 } });
  ws.send({ id: '0000000000000014-00000000', event: 'notification', data: { message: 'hi' } });
  ws.send({ id: '0000000000000014-00000000', event: 'notification', data: { message: 'hi' } });
  ws.send({ event: 'stats:updated', data: { stats: { total: 9 } } });
  assert.deepEqual([...view.rows.keys()], [1]);
  assert.equal(view.rows.get(1).title, 'new');
  assert.deepEqual(view.stats, { total: 9 });
  assert.deepEqual(toasts, [['hi', '0000000000000014-00000000']]);
  assert.equal(view.lastEventId, '0000000000000014-00000000');
  assert.deepEqual(changes.filter((c) => c.type !== 'snapshot').map((c) => [c.type, c.op, c.key, c.reason]), [
    ['upsert', 'created', 3, undefined],
    ['upsert', 'updated', 1, undefined],
    ['delete', 'updated', 2, 'filter'],
    ['delete', 'deleted', 3, undefined],
    ['stats', undefined, undefined, undefined],
  ]);
  view.close();
});

test('resync closes the stream, reloads and streams from the new cursor', async () => {
  let n = 0;
  const srv = fakeServer({ snapshot: () => ({ tickets: n++ === 0 ? [row(1)] : [row(7)], lastEventId: `e1-000000000000000${n}` }) });
  const view = open(srv);
  await until('socket', () => srv.sockets.length === 1);
  const ws = srv.lastSocket();
  ws.open();
  ws.send({ event: 'resync', data: { reason: 'x' } });
  assert.ok(ws.closed);
  await until('second socket', () => srv.sockets.length === 2);
  assert.deepEqual([...view.rows.keys()], [7]);
  assert.equal(srv.lastSocket().url.searchParams.get('lastEventId'), 'e1-0000000000000002');
  view.close();
});

test('composite keys and the ticket_update profile', async () => {
  const cfg = config({ key: ['region', 'n'], prefix: 'line', rowsField: 'lines', deletedKeyField: 'lineId' });
  cfg.events = { ...cfg.events, profile: 'ticket_update', created: 'line_update', updated: 'line_update', deleted: 'line_update', createdType: 'new_line', updatedType: 'updated_line', deletedType: 'deleted_line' };
  const srv = fakeServer({ cfg, snapshot: () => ({ lines: [{ region: 'a', n: 1, v: 0 }], lastEventId: 'e1-0000000000000001' }) });
  const view = open(srv);
  await until('socket', () => srv.sockets.length === 1);
  const ws = srv.lastSocket();
  ws.open();
  ws.send({ id: 'e1-0000000000000002', event: 'line_update', data: { type: 'new_line', line: { region: 'b', n: 1, v: 1 } } });
  ws.send({ id: 'e1-0000000000000003', event: 'line_update', data: { type: 'updated_line', line: { region: 'a', n: 1, v: 2 } } });
  ws.send({ id: 'e1-0000000000000004', event: 'line_update', data: { type: 'deleted_line', line: { region: 'b', n: 1 } } });
  assert.deepEqual([...view.rows.entries()], [['["a",1]', { region: 'a', n: 1, v: 2 }]]);
  view.close();

  // The colon profile's delete carries the key as an object.
  const srv2 = fakeServer({ cfg: config({ key: ['region', 'n'], prefix: 'line', rowsField: 'lines', deletedKeyField: 'lineId',
    events: { ...config().events, created: 'line:created', updated: 'line:updated', deleted: 'line:deleted' } }),
  snapshot: () => ({ lines: [{ region: 'a', n: 1 }, { region: 'a', n: 2 }], lastEventId: 'e1-0000000000000001' }) });
  const v2 = open(srv2);
  await until('socket', () => srv2.sockets.length === 1);
  srv2.lastSocket().open();
  srv2.lastSocket().send({ id: 'e1-0000000000000002', event: 'line:deleted', data: { lineId: { region: 'a', n: 2 } } });
  assert.deepEqual([...v2.rows.keys()], ['["a",1]']);
  v2.close();
});

test('a "newest N" view trims by the server\'s order, whatever the timestamp form', async () => {
  const srv = fakeServer({
    snapshot(p) {
      assert.equal(p.limit, '2');
      assert.equal(p.order, undefined);
      return { tickets: [row(2, { updated_at: '2026-01-01T00:00:02.000001+00:00' }), row(1, { updated_at: '2026-01-01T00:00:01+00:00' })], lastEventId: 'e1-0000000000000001' };
    },
  });
  const view = open(srv, { recent: 2 });
  await until('socket', () => srv.sockets.length === 1);
  const ws = srv.lastSocket();
  ws.open();
  // Newer than 1, older than 2 by a microsecond's difference of form.
  ws.send({ id: 'e1-0000000000000002', event: 'ticket:created', data: { ticket: row(3, { updated_at: '2026-01-01T00:00:02.000000Z' }) } });
  assert.deepEqual([...view.rows.keys()].sort(), [2, 3]);
  ws.send({ id: 'e1-0000000000000003', event: 'ticket:updated', data: { ticket: row(1, { updated_at: '2026-01-01T00:00:03Z' }) } });
  assert.deepEqual([...view.rows.keys()].sort(), [1, 2]);
  view.close();
});

test('polls while live updates are off and goes live when they are back', async () => {
  let live = false;
  let polls = 0;
  const srv = fakeServer({ snapshot: () => ({ tickets: [row(++polls)], lastEventId: `e1-000000000000000${polls}` }) });
  srv.cfg = () => config({ liveUpdates: live });
  const view = open(srv, { pollInterval: 20 });
  await until('polling', () => view.status === 'polling');
  await until('three polls', () => polls >= 3);
  assert.equal(srv.sockets.length, 0);
  live = true;
  await until('socket', () => srv.sockets.length === 1);
  srv.lastSocket().open();
  assert.equal(view.status, 'live');
  const before = polls;
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(polls, before, 'no polling while live');
  view.close();
});

test('falls back to polling when the stream keeps failing (503), and back to live', async () => {
  let polls = 0;
  let refuse = true;
  const srv = fakeServer({ snapshot: () => ({ tickets: [row(1)], lastEventId: `e1-000000000000000${++polls}` }), wsStatus: () => (refuse ? 503 : 400) });
  const view = open(srv, { pollInterval: 20, fallbackAfter: 2 });
  await until('polling', () => view.status === 'polling');
  assert.ok(srv.sockets.length >= 2);
  await until('polls', () => polls >= 3);
  refuse = false;
  const n = srv.sockets.length;
  await until('another attempt', () => srv.sockets.length > n);
  srv.lastSocket().open();
  assert.equal(view.status, 'live');
  view.close();
});

test('a stream lost after working a while says reconnecting and resumes from the last id', async () => {
  const srv = fakeServer({ snapshot: () => ({ tickets: [], lastEventId: 'e1-0000000000000001' }) });
  const view = open(srv, { stableAfter: 1 });
  await until('socket', () => srv.sockets.length === 1);
  srv.lastSocket().open();
  srv.lastSocket().send({ id: 'e1-0000000000000005', event: 'ticket:created', data: { ticket: row(1) } });
  await new Promise((r) => setTimeout(r, 5));
  srv.lastSocket().drop(1001);
  await until('reconnecting', () => view.status === 'reconnecting');
  await until('reconnect', () => srv.sockets.length === 2);
  assert.equal(srv.lastSocket().url.searchParams.get('lastEventId'), 'e1-0000000000000005');
  assert.equal(srv.requests.filter((u) => u.pathname === '/api/snapshot').length, 1, 'resuming needs no reload');
  view.close();
});

test('waits for capture before connecting (config.ready false)', async () => {
  let ready = false;
  const srv = fakeServer({ snapshot: () => ({ tickets: [], lastEventId: 'e1-0000000000000001' }) });
  srv.cfg = () => config({ ready });
  const view = open(srv, { fallbackAfter: 1000 });
  await until('config asked again', () => srv.requests.filter((u) => u.pathname === '/api/config').length >= 3);
  assert.equal(srv.sockets.length, 0);
  ready = true;
  await until('socket', () => srv.sockets.length === 1);
  view.close();
});

test('subscribe reloads under the new filter; unknown columns throw', async () => {
  const srv = fakeServer({ snapshot: (p) => ({ tickets: p.status === 'closed' ? [row(9, { status: 'closed' })] : [row(1)], lastEventId: 'e1-0000000000000001' }) });
  const view = open(srv, { filter: { status: 'open' } });
  await until('socket', () => srv.sockets.length === 1);
  srv.lastSocket().open();
  assert.throws(() => view.subscribe({ statsu: 'closed' }), /unknown filter column "statsu"/);
  await view.subscribe({ status: 'closed' });
  assert.deepEqual([...view.rows.keys()], [9]);
  assert.ok(srv.sockets[0].closed);
  await until('new socket', () => srv.sockets.length === 2);
  assert.equal(srv.lastSocket().url.searchParams.get('status'), 'closed');
  view.close();
});

test('close while the token is being fetched opens no stream', async () => {
  let release;
  const srv = fakeServer({ snapshot: () => ({ tickets: [], lastEventId: 'e1-0000000000000001' }) });
  let calls = 0;
  const view = open(srv, {
    token: () => {
      calls++;
      // The config and the snapshot get it at once; the stream waits.
      if (calls <= 2) return 'tok';
      return new Promise((r) => {
        release = r;
      });
    },
  });
  await until('token asked for the stream', () => release);
  view.close();
  release('tok');
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(srv.sockets.length, 0);
  assert.equal(view.status, 'closed');
  assert.equal(srv.requests[0].searchParams.get('access_token'), 'tok');
});

test('401: onUnauthorized may sign in and retry; otherwise the view closes with the error', async () => {
  let signedIn = false;
  const srv = fakeServer({ snapshot: () => (signedIn ? { tickets: [row(1)], lastEventId: 'e1-0000000000000001' } : { status: 401, body: { error: 'no token' } }) });
  const view = open(srv, { onUnauthorized: async () => { signedIn = true; return true; } });
  await view.ready;
  assert.equal(view.rows.size, 1);
  view.close();

  signedIn = false;
  const v2 = open(srv);
  await v2.ready;
  assert.equal(v2.status, 'closed');
  assert.equal(v2.error.status, 401);
  assert.equal(v2.error.message, 'no token');
});
