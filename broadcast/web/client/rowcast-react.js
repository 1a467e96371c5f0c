// rowcast-react.js: useRowcast, a React hook over rowcast.js's live view.
//
//   const { rows, stats, status } = useRowcast({ filter: { status: 'open' } });
//
// The hook opens a view when the component mounts and closes it when it
// unmounts or when the options that define the view (url, filter,
// transport, recent, token, intervals) change; functions passed as
// options (fetch, WebSocket, token getters, onUnauthorized) may change
// freely between renders. Pass `view` to render a view opened elsewhere
// (it is then not closed by the hook, and server rendering shows its rows).
import { useEffect, useMemo, useRef, useState, useSyncExternalStore } from 'react';
import { connect } from './rowcast.js';

const EMPTY = Object.freeze({
  rows: new Map(),
  stats: null,
  status: 'connecting',
  lastEventId: '',
  error: null,
  view: null,
});

const EMPTY_STORE = {
  subscribe: () => () => {},
  get: () => EMPTY,
};

// Options that define the view; a change to one of them opens a new view.
function identity(options) {
  const { url, filter, transport, recent, pollInterval, pageSize, reconnectDelay, maxReconnectDelay, fallbackAfter, stableAfter, requestTimeout, credentials, token } = options;
  return JSON.stringify({
    url, filter, transport, recent, pollInterval, pageSize, reconnectDelay, maxReconnectDelay, fallbackAfter, stableAfter, requestTimeout, credentials,
    token: typeof token === 'function' ? 'function' : token,
  });
}

// A store over one view. The state object changes whenever the view's
// version does; its rows are copied from the view only when a render reads
// them, so a burst of events costs one copy per render, not per event, and
// a component can memoize on `rows`.
function storeFor(view) {
  let version = -1;
  let state = EMPTY;
  return {
    subscribe(onChange) {
      const offChange = view.on('change', onChange);
      const offStatus = view.on('status', onChange);
      return () => {
        offChange();
        offStatus();
      };
    },
    get() {
      if (view.version !== version) {
        version = view.version;
        let rows = null;
        state = {
          get rows() {
            if (!rows) rows = new Map(view.rows);
            return rows;
          },
          stats: view.stats,
          status: view.status,
          lastEventId: view.lastEventId,
          error: view.error,
          view,
        };
      }
      return state;
    },
  };
}

/**
 * Opens a live view of rowcast's table for the component's lifetime and
 * re-renders on every change: returns {rows, stats, status, lastEventId,
 * error, view}.
 */
export function useRowcast(options = {}) {
  const given = options.view || null;
  const latest = useRef(options);
  latest.current = options;
  const key = given ? null : identity(options);
  const [own, setOwn] = useState(null);

  useEffect(() => {
    if (given) return undefined;
    // Functions are read through the ref, so new closures on each render
    // do not reconnect.
    const o = latest.current;
    const view = connect({
      ...o,
      fetch: o.fetch ? (...a) => latest.current.fetch(...a) : undefined,
      token: typeof o.token === 'function' ? () => latest.current.token() : o.token,
      onUnauthorized: o.onUnauthorized ? (err) => latest.current.onUnauthorized(err) : undefined,
    });
    setOwn(view);
    return () => {
      view.close();
      setOwn((current) => (current === view ? null : current));
    };
  }, [given, key]);

  const view = given || own;
  const store = useMemo(() => (view ? storeFor(view) : EMPTY_STORE), [view]);
  return useSyncExternalStore(store.subscribe, store.get, store.get);
}
