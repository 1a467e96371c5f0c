#!/usr/bin/env node
// Headless-browser checks of the helpdesk dashboard against a running rowcast
// server and its database.
//
//   node dashboard.mjs --url http://127.0.0.1:PORT \
//     --psql '["/usr/lib/postgresql/15/bin/psql","postgres://..."]' \
//     --screenshot out.png --mode live|polling
//
// mode live: the server runs with auth on and demo login enabled. Two pages
// (separate browser contexts) must show a ticket inserted with plain SQL, its
// update and its deletion, and the counts, within 2 s.
// mode polling: the server runs with live updates disabled; the URL should
// carry ?poll=MS. One page must show an inserted ticket within MS + 3 s.
//
// Chromium comes from $CHROMIUM_PATH (default /usr/bin/chromium). Prints one
// line per check; exits 1 with a message on the first failed check, 2 on bad
// arguments.

import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const LIVE_DEADLINE_MS = 2000;
const POLL_SLACK_MS = 3000;
const CONNECT_TIMEOUT_MS = 15000;
const OVERALL_TIMEOUT_MS = 180000;

class CheckError extends Error {}

function usage(message) {
  console.error(`dashboard.mjs: ${message}`);
  console.error('usage: node dashboard.mjs --url URL --psql \'["psql","postgres://..."]\' [--screenshot FILE.png] [--mode live|polling]');
  process.exit(2);
}

function parseOptions() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        url: { type: 'string' },
        psql: { type: 'string' },
        screenshot: { type: 'string' },
        mode: { type: 'string', default: 'live' },
      },
      strict: true,
    }));
  } catch (err) {
    usage(err.message);
  }
  if (!values.url) usage('--url is required');
  if (!values.psql) usage('--psql is required');
  if (!['live', 'polling'].includes(values.mode)) usage(`--mode must be live or polling, not ${values.mode}`);
  let url;
  try {
    url = new URL(values.url);
  } catch {
    usage(`--url is not a URL: ${values.url}`);
  }
  let psql;
  try {
    psql = JSON.parse(values.psql);
  } catch (err) {
    usage(`--psql must be a JSON array of strings: ${err.message}`);
  }
  if (!Array.isArray(psql) || psql.length === 0 || !psql.every((s) => typeof s === 'string')) {
    usage('--psql must be a non-empty JSON array of strings');
  }
  return { url, psql, screenshot: values.screenshot, mode: values.mode };
}

const opts = parseOptions();
const started = Date.now();

function log(line) {
  console.log(line);
}

function pass(line) {
  log(`ok   ${line}`);
}

function fail(message) {
  throw new CheckError(message);
}

// sql runs one statement through the psql command and returns its output
// lines (command tags excluded).
function sql(statement) {
  const [cmd, ...rest] = opts.psql;
  const args = [...rest, '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-c', statement];
  return new Promise((resolvePromise, reject) => {
    execFile(cmd, args, { timeout: 15000, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        reject(new CheckError(`psql failed for ${JSON.stringify(statement)}: ${(stderr || err.message).trim()}`));
        return;
      }
      resolvePromise(stdout.split('\n').map((l) => l.trim()).filter((l) => l && !/^(INSERT|UPDATE|DELETE) \d/.test(l)));
    });
  });
}

// write runs a statement and returns its output and the time psql returned,
// i.e. just after the commit; the page timings are measured from there.
async function write(statement, what) {
  const start = Date.now();
  const out = await sql(statement);
  const t0 = Date.now();
  const text = typeof what === 'function' ? what(out) : what;
  log(`     ${text} (psql took ${t0 - start} ms)`);
  return { out, t0 };
}

function quote(s) {
  return `'${String(s).replace(/'/g, "''")}'`;
}

// ------------------------------------------------------------ page helpers

async function pageState(page) {
  try {
    return await page.evaluate(() => {
      const conn = document.getElementById('conn-status');
      const total = document.getElementById('stat-total');
      return {
        conn: conn ? `${conn.textContent.trim()} (${conn.dataset.state})` : 'missing',
        total: total ? total.dataset.value ?? total.textContent : 'missing',
        rows: document.querySelectorAll('[data-ticket-id]').length,
        banner: document.getElementById('banner')?.hidden === false ? document.getElementById('banner').textContent.trim() : '',
      };
    });
  } catch (err) {
    return { error: err.message };
  }
}

// waitUntil polls a predicate in the page until it returns a truthy value
// and returns the elapsed time since `since`. On timeout it fails with
// `what` and the page's state.
async function waitUntil(tab, what, predicate, arg, deadline, since = Date.now()) {
  const timeout = Math.max(1, deadline - Date.now());
  try {
    await tab.page.waitForFunction(predicate, arg, { timeout, polling: 20 });
  } catch (err) {
    if (err instanceof Error && /Timeout|timeout/.test(err.message)) {
      const st = await pageState(tab.page);
      fail(`${what} on ${tab.name}: not within ${deadline - since} ms; page state ${JSON.stringify(st)}`);
    }
    throw err;
  }
  return Date.now() - since;
}

async function statValue(tab, selector) {
  return tab.page.evaluate((sel) => {
    const el = document.querySelector(sel);
    if (!el) return null;
    const raw = el.dataset.value !== undefined && el.dataset.value !== '' ? el.dataset.value : el.textContent.replace(/[^0-9-]/g, '');
    const n = Number(raw);
    return raw === '' || !Number.isFinite(n) ? null : n;
  }, selector);
}

async function requireStat(tab, selector) {
  const v = await statValue(tab, selector);
  if (v === null) fail(`${tab.name}: no numeric value in ${selector}`);
  return v;
}

const rowSel = (id) => `[data-ticket-id="${id}"]`;

function statEquals([sel, want]) {
  const el = document.querySelector(sel);
  if (!el) return false;
  const raw = el.dataset.value !== undefined && el.dataset.value !== '' ? el.dataset.value : el.textContent.replace(/[^0-9-]/g, '');
  return Number(raw) === want;
}

function statLoaded(sel) {
  const el = document.querySelector(sel);
  if (!el) return false;
  const raw = el.dataset.value !== undefined && el.dataset.value !== '' ? el.dataset.value : el.textContent.replace(/[^0-9-]/g, '');
  return raw !== '' && Number.isFinite(Number(raw));
}

function rowIsNew(sel) {
  const row = document.querySelector(sel);
  if (!row) return false;
  return Array.from(row.querySelectorAll('.badge-new')).some((b) => b.textContent.trim() === 'New');
}

function rowHasStatus([sel, status]) {
  const row = document.querySelector(sel);
  if (!row) return false;
  if (row.dataset.status !== undefined) return row.dataset.status === status;
  return row.textContent.toLowerCase().includes(status);
}

function rowGone(sel) {
  return document.querySelector(sel) === null;
}

function connState(state) {
  const el = document.getElementById('conn-status');
  return !!el && el.dataset.state === state && el.textContent.trim() === state.charAt(0).toUpperCase() + state.slice(1);
}

// --------------------------------------------------------------- browser

async function openTab(browser, name) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 960 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const tab = { name, context, page, errors: [], sockets: 0 };
  page.on('pageerror', (err) => tab.errors.push(err.message));
  page.on('console', (msg) => {
    // The first snapshot request is expected to get 401 before the page
    // signs itself in; other console errors are worth a note.
    if (msg.type() === 'error' && !/status of 401/.test(msg.text())) log(`note ${name} console error: ${msg.text()}`);
  });
  page.on('websocket', () => {
    tab.sockets++;
  });
  const t0 = Date.now();
  const res = await page.goto(opts.url.href, { waitUntil: 'load', timeout: CONNECT_TIMEOUT_MS });
  if (!res || !res.ok()) fail(`${name}: GET ${opts.url.href} answered ${res ? res.status() : 'nothing'}`);
  const ct = res.headers()['content-type'] || '';
  if (!ct.startsWith('text/html')) fail(`${name}: page Content-Type is ${JSON.stringify(ct)}, want text/html`);
  pass(`${name} loaded in ${Date.now() - t0} ms`);
  return tab;
}

async function waitForState(tab, state) {
  const label = state.charAt(0).toUpperCase() + state.slice(1);
  const ms = await waitUntil(tab, `connection indicator "${label}"`, connState, state, Date.now() + CONNECT_TIMEOUT_MS);
  pass(`${tab.name} shows "${label}" after ${ms} ms`);
  await waitUntil(tab, 'ticket counts loaded', statLoaded, '#stat-total', Date.now() + CONNECT_TIMEOUT_MS);
}

function checkNoPageErrors(tabs) {
  for (const tab of tabs) {
    if (tab.errors.length) fail(`${tab.name}: uncaught script errors: ${tab.errors.join(' | ')}`);
  }
}

async function screenshot(tab) {
  if (!opts.screenshot) return;
  const file = resolve(opts.screenshot);
  await mkdir(dirname(file), { recursive: true });
  await tab.page.screenshot({ path: file });
  pass(`screenshot of ${tab.name} saved to ${file}`);
}

// ------------------------------------------------------------------ modes

async function insertTicket() {
  const title = `Browser test ticket ${randomBytes(4).toString('hex')}`;
  const { out, t0 } = await write(
    `INSERT INTO tickets(title, status, priority, requester_email) VALUES (${quote(title)}, 'open', 'high', 'browser@example.com') RETURNING id`,
    (lines) => `inserted ticket ${lines.find((l) => /^\d+$/.test(l))} ${JSON.stringify(title)}`,
  );
  const id = out.find((l) => /^\d+$/.test(l));
  if (!id) fail(`INSERT returned no id (psql printed ${JSON.stringify(out)})`);
  return { id, title, t0 };
}

async function runLive(browser, cleanup) {
  const tabs = [await openTab(browser, 'page 1'), await openTab(browser, 'page 2')];
  await Promise.all(tabs.map((tab) => waitForState(tab, 'live')));

  const totals = await Promise.all(tabs.map((tab) => requireStat(tab, '#stat-total')));

  // Insert.
  const ticket = await insertTicket();
  cleanup.push(() => sql(`DELETE FROM tickets WHERE id = ${ticket.id}`));
  const sel = rowSel(ticket.id);
  const insertDeadline = ticket.t0 + LIVE_DEADLINE_MS;
  await Promise.all(tabs.map(async (tab) => {
    const ms = await waitUntil(tab, `inserted row ${ticket.id} with the "New" badge`, rowIsNew, sel, insertDeadline, ticket.t0);
    pass(`insert visible on ${tab.name} with "New" badge after ${ms} ms`);
  }));
  await Promise.all(tabs.map(async (tab, i) => {
    const want = totals[i] + 1;
    const ms = await waitUntil(tab, `stat-total ${totals[i]} -> ${want}`, statEquals, ['#stat-total', want], insertDeadline, ticket.t0);
    pass(`${tab.name} total ${totals[i]} -> ${want} after ${ms} ms`);
    const info = await tab.page.evaluate((s) => {
      const row = document.querySelector(s);
      const first = document.querySelector('[data-ticket-id]');
      return { text: row ? row.textContent : '', first: first ? first.dataset.ticketId : null };
    }, sel);
    if (!info.text.includes(ticket.title)) fail(`${tab.name}: row ${ticket.id} does not show the title ${JSON.stringify(ticket.title)}`);
    if (info.first !== ticket.id) fail(`${tab.name}: newest ticket ${ticket.id} is not the first row (first is ${info.first})`);
    pass(`${tab.name} shows the title, row is first`);
  }));
  await screenshot(tabs[0]);

  // Update.
  const resolved = await Promise.all(tabs.map((tab) => statValue(tab, '[data-stat="status:resolved"]')));
  const { t0: t1 } = await write(`UPDATE tickets SET status = 'resolved' WHERE id = ${ticket.id}`, 'updated status');
  await Promise.all(tabs.map(async (tab, i) => {
    const ms = await waitUntil(tab, `row ${ticket.id} status resolved`, rowHasStatus, [sel, 'resolved'], t1 + LIVE_DEADLINE_MS, t1);
    const text = await tab.page.evaluate((s) => document.querySelector(s)?.textContent.toLowerCase() ?? '', sel);
    if (!text.includes('resolved')) fail(`${tab.name}: row ${ticket.id} does not show "resolved"`);
    pass(`update visible on ${tab.name} after ${ms} ms`);
    const before = resolved[i] ?? 0;
    const ms2 = await waitUntil(tab, `status:resolved ${before} -> ${before + 1}`, statEquals,
      ['[data-stat="status:resolved"]', before + 1], t1 + LIVE_DEADLINE_MS, t1);
    pass(`${tab.name} status:resolved ${before} -> ${before + 1} after ${ms2} ms`);
  }));

  // Delete.
  const { t0: t2 } = await write(`DELETE FROM tickets WHERE id = ${ticket.id}`, 'deleted ticket');
  cleanup.length = 0;
  await Promise.all(tabs.map(async (tab, i) => {
    const ms = await waitUntil(tab, `row ${ticket.id} removed`, rowGone, sel, t2 + LIVE_DEADLINE_MS, t2);
    pass(`delete visible on ${tab.name} after ${ms} ms`);
    const ms2 = await waitUntil(tab, `stat-total back to ${totals[i]}`, statEquals, ['#stat-total', totals[i]], t2 + LIVE_DEADLINE_MS, t2);
    pass(`${tab.name} total back to ${totals[i]} after ${ms2} ms`);
  }));

  for (const tab of tabs) {
    if (!(await tab.page.evaluate(connState, 'live'))) fail(`${tab.name}: no longer "Live" at the end: ${JSON.stringify(await pageState(tab.page))}`);
  }
  checkNoPageErrors(tabs);
  pass('both pages still "Live", no script errors');
}

async function runPolling(browser, cleanup) {
  const poll = Number(opts.url.searchParams.get('poll')) || 30000;
  const tab = await openTab(browser, 'page 1');
  await waitForState(tab, 'polling');

  const ticket = await insertTicket();
  cleanup.push(() => sql(`DELETE FROM tickets WHERE id = ${ticket.id}`));
  const sel = rowSel(ticket.id);
  const ms = await waitUntil(tab, `inserted row ${ticket.id}`, (s) => document.querySelector(s) !== null, sel,
    ticket.t0 + poll + POLL_SLACK_MS, ticket.t0);
  pass(`insert visible on ${tab.name} after ${ms} ms (poll interval ${poll} ms)`);
  await screenshot(tab);

  const { t0: t2 } = await write(`DELETE FROM tickets WHERE id = ${ticket.id}`, 'deleted ticket');
  cleanup.length = 0;
  const ms2 = await waitUntil(tab, `row ${ticket.id} removed`, rowGone, sel, t2 + poll + POLL_SLACK_MS, t2);
  pass(`delete visible on ${tab.name} after ${ms2} ms`);

  if (!(await tab.page.evaluate(connState, 'polling'))) fail(`${tab.name}: no longer "Polling": ${JSON.stringify(await pageState(tab.page))}`);
  checkNoPageErrors([tab]);
  pass(`still "Polling", no script errors (${tab.sockets} WebSocket attempts)`);
}

// -------------------------------------------------------------------- main

async function main() {
  const executablePath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
  log(`dashboard check, mode ${opts.mode}, ${opts.url.href}, browser ${executablePath}`);
  const watchdog = setTimeout(() => {
    console.error(`FAIL: gave up after ${OVERALL_TIMEOUT_MS} ms`);
    process.exit(1);
  }, OVERALL_TIMEOUT_MS);
  watchdog.unref();

  let browser;
  const cleanup = [];
  try {
    const t0 = Date.now();
    const [count] = await sql('SELECT count(*) FROM tickets');
    pass(`database reachable, ${count} tickets (${Date.now() - t0} ms)`);
    try {
      browser = await chromium.launch({
        executablePath,
        headless: true,
        args: [
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--disable-quic',
          '--no-first-run',
          '--disable-background-networking',
          '--disable-component-update',
          '--disable-sync',
        ],
      });
    } catch (err) {
      fail(`cannot start Chromium at ${executablePath} (set CHROMIUM_PATH): ${err.message.split('\n')[0]}`);
    }
    if (opts.mode === 'live') await runLive(browser, cleanup);
    else await runPolling(browser, cleanup);
  } finally {
    for (const fn of cleanup) {
      try {
        await fn();
      } catch (err) {
        log(`note cleanup failed: ${err.message}`);
      }
    }
    if (browser) await browser.close().catch(() => {});
  }
  log(`PASS: all ${opts.mode} checks in ${Date.now() - started} ms`);
}

main().then(
  () => process.exit(0),
  (err) => {
    const msg = err instanceof CheckError ? err.message : (err && err.stack) || String(err);
    console.error(`FAIL: ${msg}`);
    process.exit(1);
  },
);
