// Type declarations for rowcast-react.js.
import type { ConnectOptions, Row, RowKey, RowcastError, Stats, Status, View } from './rowcast.js';

export interface UseRowcastOptions extends ConnectOptions {
  /** Render a view opened elsewhere instead of opening one (it is not closed by the hook). */
  view?: View;
}

export interface RowcastState {
  /** Rows by primary key; a new Map whenever they change. */
  rows: Map<RowKey, Row>;
  stats: Stats | null;
  status: Status;
  lastEventId: string;
  error: RowcastError | null;
  /** The view behind the hook (null until it is opened). */
  view: View | null;
}

/** Opens a live view for the component's lifetime and re-renders on every change. */
export declare function useRowcast(options?: UseRowcastOptions): RowcastState;
