// A dashboard stand-in for integration/clientlib_test.go: it opens a live
// view with rowcast.js (installed from the package's npm pack tarball),
// or renders one through the React hook, and reports what it holds.
//
// Usage: node view.mjs '{"url": "http://127.0.0.1:8080", "token": "...",
//   "options": {...connect options...}, "react": false, "events": ["notification"]}'
//
// It prints one JSON line per thing that happens:
//
//   {"type":"status","status":"live"}
//   {"type":"error","message":"...","httpStatus":503}
//   {"type":"event","name":"notification","data":{...},"id":"..."}
//   {"type":"dump", ...}             the answer to "dump", see dump()
//   {"type":"subscribed"}            the answer to "subscribe"
//   {"type":"ssr","rows":[...]}      the answer to "ssr"
//
// and reads commands from stdin, one per line:
//
//   dump              print the view: its rows and what was applied
//   kill-socket       cut the stream's connection, as a network failure would
//   subscribe JSON    view.subscribe(JSON)
//   ssr               render the loaded view with react-dom/server through
//                     useRowcast({view}) and print the rows of the HTML
//   exit              close the view and exit
//
// Every row event the view applies is checked here: within one snapshot
// (between reloads) ids must strictly increase, i.e. no event is applied
// twice and none out of order.
import { createInterface } from 'node:readline';
import WebSocket from 'ws';
import { connect, compareEventIds } from 'rowcast-client';

const cfg = JSON.parse(process.argv[2] ?? '{}');
const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

// The stream connections, so that kill-socket can cut them.
const sockets = new Set();
class TrackedWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    sockets.add(this);
    this.addEventListener('close', () => sockets.delete(this));
  }
}
const streams = new Set();
function trackedFetch(url, init = {}) {
  if (!String(url).includes('/events')) return fetch(url, init);
  const ctrl = new AbortController();
  if (init.signal) init.signal.addEventListener('abort', () => ctrl.abort());
  streams.add(ctrl);
  return fetch(url, { ...init, signal: ctrl.signal });
}

const options = {
  url: cfg.url,
  token: cfg.token,
  WebSocket: TrackedWebSocket,
  fetch: trackedFetch,
  ...(cfg.options ?? {}),
};

// What was applied, checked as it happens.
const applied = { events: 0, snapshots: 0, violations: [], last: '', ids: 0 };
function watch(view) {
  view.on('change', (c) => {
    if (c.type === 'snapshot') {
      applied.snapshots++;
      applied.last = '';
      return;
    }
    if (c.type !== 'upsert' && c.type !== 'delete') return;
    applied.events++;
    if (!c.id) return;
    applied.ids++;
    if (applied.last) {
      const cmp = compareEventIds(c.id, applied.last);
      if (cmp !== null && cmp <= 0 && applied.violations.length < 10) {
        applied.violations.push(`${c.id} applied after ${applied.last}`);
      }
    }
    applied.last = c.id;
  });
  view.on('status', (status) => out({ type: 'status', status }));
  view.on('error', (err) => out({ type: 'error', message: err && err.message, httpStatus: err && err.status }));
  for (const name of cfg.events ?? []) {
    view.on(name, (data, meta) => out({ type: 'event', name, data, id: meta && meta.id }));
  }
}

let view = null;
let reactTree = null;
let React = null;
let useRowcast = null;

if (cfg.react) {
  React = await import('react');
  ({ useRowcast } = await import('rowcast-client/react'));
  const TestRenderer = (await import('react-test-renderer')).default;
  let watched = null;
  function Tickets({ opts }) {
    const state = useRowcast(opts);
    if (state.view && state.view !== watched) {
      watched = state.view;
      view = state.view;
      watch(view);
    }
    return React.createElement(
      'ul',
      { 'data-status': state.status },
      [...state.rows.values()].map((row) => React.createElement('li', { key: JSON.stringify(row.id) }, JSON.stringify(row))),
    );
  }
  reactTree = TestRenderer.create(React.createElement(Tickets, { opts: options }));
} else {
  view = connect(options);
  watch(view);
}

// The rows the component rendered, read back from its tree.
function renderedRows() {
  const tree = reactTree.toJSON();
  const items = Array.isArray(tree.children) ? tree.children : [];
  return { status: tree.props['data-status'], rows: items.map((li) => JSON.parse(li.children.join(''))) };
}

function dump() {
  const d = {
    type: 'dump',
    status: view ? view.status : 'none',
    loaded: view ? view.loaded : false,
    lastEventId: view ? view.lastEventId : '',
    stats: view ? view.stats : null,
    rows: view ? [...view.rows.values()] : [],
    keys: view ? [...view.rows.keys()].map((k) => JSON.stringify(k)) : [],
    applied,
  };
  if (reactTree) {
    const r = renderedRows();
    d.rendered = r.rows;
    d.renderedStatus = r.status;
  }
  out(d);
}

async function ssr() {
  if (!React) {
    React = await import('react');
    ({ useRowcast } = await import('rowcast-client/react'));
  }
  const { renderToString } = await import('react-dom/server');
  await view.ready;
  function Tickets() {
    const { rows, status } = useRowcast({ view });
    return React.createElement(
      'ul',
      { 'data-status': status },
      [...rows.values()].map((row) => React.createElement('li', { key: JSON.stringify(row.id) }, JSON.stringify(row))),
    );
  }
  const html = renderToString(React.createElement(Tickets));
  const unescape = (s) => s.replace(/&quot;/g, '"').replace(/&#x27;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
  const rows = [...html.matchAll(/<li>(.*?)<\/li>/g)].map((m) => JSON.parse(unescape(m[1])));
  out({ type: 'ssr', rows, status: /data-status="([^"]*)"/.exec(html)?.[1] ?? '' });
}

const rl = createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  const [cmd, ...rest] = line.trim().split(' ');
  try {
    switch (cmd) {
      case 'dump':
        dump();
        break;
      case 'kill-socket':
        for (const s of sockets) s.terminate();
        for (const c of streams) c.abort();
        streams.clear();
        out({ type: 'killed' });
        break;
      case 'subscribe':
        await view.subscribe(JSON.parse(rest.join(' ')));
        out({ type: 'subscribed' });
        break;
      case 'ssr':
        await ssr();
        break;
      case 'exit':
        if (reactTree) reactTree.unmount();
        if (view) view.close();
        out({ type: 'exit', status: view ? view.status : 'none' });
        process.exit(0);
        break;
      default:
        out({ type: 'error', message: `unknown command ${cmd}` });
    }
  } catch (err) {
    out({ type: 'error', message: String(err && err.stack ? err.stack : err) });
  }
});
rl.on('close', () => process.exit(0));
