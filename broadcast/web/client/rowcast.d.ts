// Type declarations for rowcast.js.

/** A row as rowcast sends it: column name → JSON value. */
export type Row = Record<string, unknown>;

/** The key of a row in `View.rows`: the key column's value, or JSON of the values for composite keys. */
export type RowKey = string | number | boolean;

/** A filter: column → value, or column → any of these values. */
export type Filter = Record<string, string | number | boolean | null | Array<string | number | boolean | null>>;

export type Status = 'connecting' | 'live' | 'reconnecting' | 'polling' | 'closed';

export declare const STATUSES: readonly Status[];

/** The counts rowcast keeps: {"total": N, "byStatus": {...}, ...}. */
export interface Stats {
  total: number;
  [by: string]: number | Record<string, number>;
}

export interface ConnectOptions {
  /** Base URL of rowcast; default the page's origin. */
  url?: string;
  /** Rows whose columns hold these values (equality; a list means any of them). */
  filter?: Filter | null;
  /** The JWT, sent as access_token when no cookie can carry it; a function is asked before each request. */
  token?: string | (() => string | null | undefined | Promise<string | null | undefined>);
  /** "ws" (default) or "sse". */
  transport?: 'ws' | 'sse';
  /** How often to reload the rows while live updates are off or the stream keeps failing (ms; default the server's ROWCAST_POLL_INTERVAL, 30000 unless set). */
  pollInterval?: number;
  /** The WebSocket implementation (e.g. the ws package in Node). */
  WebSocket?: unknown;
  /** The fetch implementation. */
  fetch?: (input: string, init?: any) => Promise<any>;
  /** A "newest N rows" view (N ≤ 500) instead of every row of the filter. */
  recent?: number;
  /** fetch's credentials mode (default "same-origin"; "include" sends cookies to another origin). */
  credentials?: 'omit' | 'same-origin' | 'include';
  /** Called on 401; resolve true to try again (e.g. after signing in), else the view closes with the error. */
  onUnauthorized?: (error: RowcastError) => boolean | Promise<boolean>;
  /** First reconnection delay (ms, default 500); doubles up to maxReconnectDelay, with jitter. */
  reconnectDelay?: number;
  /** Longest reconnection delay (ms, default 15000). */
  maxReconnectDelay?: number;
  /** Failed stream attempts in a row before the view also polls (default 3). */
  fallbackAfter?: number;
  /** A stream open this long resets the backoff (ms, default 10000). */
  stableAfter?: number;
  /** Timeout of each request and stream handshake (ms, default 10000). */
  requestTimeout?: number;
  /** Rows per page when loading the whole view (default 500, the server's maximum). */
  pageSize?: number;
}

/** What changed, passed to "change" listeners. */
export type Change =
  | { type: 'snapshot'; rows: number }
  | { type: 'stats' }
  | { type: 'upsert'; id?: string; event: string; op: 'created' | 'updated'; key: RowKey; row: Row }
  | { type: 'delete'; id?: string; event: string; op: 'created' | 'updated' | 'deleted'; key: RowKey; row?: Row; reason?: 'filter' };

/** The /api/config rowcast serves. */
export interface ServerConfig {
  liveUpdates: boolean;
  ready: boolean;
  pollIntervalMs: number;
  demoLogin: boolean;
  prefix: string;
  events: {
    profile: 'colon' | 'ticket_update';
    created: string;
    updated: string;
    deleted: string;
    stats: string;
    resync: string;
    createdType: string;
    updatedType: string;
    deletedType: string;
  };
  deletedKeyField: string;
  rowsField: string;
  key: string[];
  recentOrder: string[] | null;
  filterColumns: string[];
  snapshotLimit: number;
  pages: boolean;
}

export declare class RowcastError extends Error {
  /** The HTTP status, 0 when there was no answer. */
  status: number;
  constructor(message: string, status?: number);
}

export declare class View {
  constructor(options?: ConnectOptions);
  /** Rows by primary key. */
  readonly rows: Map<RowKey, Row>;
  /** The last stats:updated payload's stats (null for users who get no global counts, or before any). */
  readonly stats: Stats | null;
  readonly status: Status;
  /** The id of the last event applied, or the snapshot's cursor. */
  readonly lastEventId: string;
  /** The last error, null while things work. */
  readonly error: RowcastError | null;
  /** The server's /api/config, once loaded. */
  readonly config: ServerConfig | null;
  /** The filter in force, as column → values, or null. */
  readonly filter: Record<string, string[]> | null;
  /** Whether rows hold a snapshot yet. */
  readonly loaded: boolean;
  /** Grows with every change of rows, stats or status. */
  readonly version: number;
  /** Resolves once rows are loaded (or the view is closed). */
  readonly ready: Promise<void>;

  on(name: 'change', fn: (change: Change) => void): () => void;
  on(name: 'status', fn: (status: Status) => void): () => void;
  on(name: 'error', fn: (error: RowcastError | { message: string }) => void): () => void;
  /** An application event (rowcast.broadcast() in SQL), e.g. "notification". */
  on(name: string, fn: (payload: any, meta: { id: string | null }) => void): () => void;

  /** Changes the filter; resolves once the rows under it are loaded. */
  subscribe(filter: Filter | null): Promise<void>;
  /** Reloads the rows now; resolves once they are loaded. */
  refresh(): Promise<void>;
  /** Stops streaming and polling for good. */
  close(): void;
}

/** Opens a live view of rowcast's table. */
export declare function connect(options?: ConnectOptions): View;

/** Orders two event ids (-1, 0, 1), or null when they cannot be compared. */
export declare function compareEventIds(a: string, b: string): -1 | 0 | 1 | null;
