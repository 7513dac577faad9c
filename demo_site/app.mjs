// nimbus terminal: xterm.js on one nimbus.ssh.v1 WebSocket, run by the
// Python client inside Pyodide.  All runtime calls go through
// nimbus_adapter.mjs.
//
// URL parameters (all optional):
//   target=HOST:PORT  user=NAME   -> SSH mode (the server runs --backend ssh);
//                                    the password or key is asked in the form
//   token=...                     -> bearer token for the nimbus server; removed
//                                    from the address bar as soon as it is read
//   share=...                     -> a share link's token: watch (or type into) the
//                                    terminal someone shared (share.mjs); removed from
//                                    the address bar like token=, kept for a reload
//                                    the same way
//   ws=/path or ws://host:port/.. -> the WebSocket endpoint; only this page's
//                                    own origin (default: ws/ssh next to the page)
//   connect=0                     -> show the form instead of connecting
//   fontSize=18 theme=light ...   -> preferences for this load (prefs.mjs,
//                                    docs/page-features.md)
// Passwords and keys are only ever typed into the form: never in the URL,
// never stored.  The bearer token is kept in memory; for a reload it is kept
// in sessionStorage only encrypted under a non-extractable key
// (token_store.mjs).  A page reload within the resume TTL re-attaches to the
// same shell (the runtime keeps its resume state in sessionStorage).
// The page connects only to its own origin: a foreign ?ws= (or WebSocket URL
// typed into the form) is refused before any connection (docs/security.md, 6).

import * as nimbus from "./nimbus_adapter.mjs";
import * as tokens from "./token_store.mjs";
import * as messages from "./messages.mjs";
import { saveScreens, takeScreens, forgetScreens } from "./screen_state.mjs";
import { Tabs, state as tabState } from "./tabs.mjs";
import * as prefs from "./prefs.mjs";
import * as keys from "./keys.mjs";
import * as keybar from "./keybar.mjs";
import * as transfers from "./transfers.mjs";
import * as share from "./share.mjs";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// First thing: the bearer token (and a share link's token) leave the address
// bar and this history entry, before the page fetches anything else
// (site.json, Pyodide, the wheel).  Every request carries no Referer at all
// (Referrer-Policy from the server, <meta name="referrer"> for other servers).
const urlShare = takeUrlParam("share");
const urlToken = takeUrlParam("token");
const CONFIG_KEY = "nimbus-demo.config";
const MAX_EVENTS = 200;

// Test and debugging hooks (the e2e tests read these).  The terminal's own
// fields (term, rx, written, channel, exit, screenState...) are the tab on
// screen's; nimbusDemo.tabs shows every tab.
let tabs = null; // the Tabs (tabs.mjs), made below
const activeTab = () => tabs?.active ?? null;
const demo = (window.nimbusDemo = {
  phase: "loading", // loading | connecting | form | ready | exited | error
  state: "loading", // the connection's state
  get rx() {
    return activeTab()?.rx ?? 0; // payload bytes received on the tab's channel
  },
  get written() {
    return activeTab()?.written ?? 0; // bytes xterm has parsed (write callbacks run)
  },
  sessions: 0, // channels opened or attached by this page
  get resumed() {
    return activeTab()?.resumed ?? false; // the tab's channel came back through a resume
  },
  get channelId() {
    return activeTab()?.ch?.id ?? null;
  },
  get exit() {
    return activeTab()?.exit ?? null; // {code, sig} once the tab's shell exited
  },
  error: null, // last terminal error {code, name, text}
  pauseReasons: [],
  refused: null, // {url, reason} of the last WebSocket URL the page refused to connect to
  refusals: 0, // how many times it refused one
  tokenStorage: "none", // where the bearer token is kept: none | memory | wrapped (token_store.mjs)
  // A viewer's page (?share=): {mode: "read"|"write"|null (the server's word), size: the shared
  // terminal's {cols, rows}, banner}; null on an owner's page.
  get view() {
    if (!viewing()) return null;
    return { mode: viewMode(), size: tabs?.fixedSize ?? null, banner: $("view-banner").textContent, ended: demo.viewEnded };
  },
  viewEnded: null, // why a viewer's link stopped working (the sentence shown), once it did
  events: [], // last MAX_EVENTS {t, type, ...} state/policy/diagnostic events
  tap: window.__nimbusTap ?? null, // optional (bytes, channelId) => void, called for every output chunk
  get term() {
    return activeTab()?.term ?? null;
  },
  conn: null,
  get channel() {
    return activeTab()?.ch ?? null;
  },
  get screenState() {
    return activeTab()?.keeper.status ?? null;
  },
  bootMs: null,
  screenText() {
    return screenText(this.term);
  },
  wasmBytes: () => nimbus.wasmMemoryBytes(), // Pyodide's linear memory (not in the JS heap)
  cursorLine() {
    return cursorLine(this.term);
  },
  // Every tab, in strip order (tests/e2e/test_page_tabs.py).
  tabs: {
    state: tabState,
    refused: 0, // "new tab" refused by the runtime (CHANNEL_LIMIT)
    lastRefusal: null,
    saved: null, // {chars, records} of the last save
    get count() {
      return tabs.count;
    },
    get activeIndex() {
      return tabs.list.indexOf(tabs.active);
    },
    info() {
      return tabs.list.map((t, i) => ({
        index: i,
        id: t.ch?.id ?? null,
        name: t.name,
        title: t.title,
        label: tabs.label(t),
        phase: t.phase,
        active: t === tabs.active,
        resumed: t.resumed,
        rx: t.rx,
        written: t.written,
        cols: t.term.cols,
        rows: t.term.rows,
        hidden: t.pane.hidden,
        screenState: t.keeper.status,
      }));
    },
    term: (i) => tabs.list[i]?.term ?? null,
    screenText: (i) => screenText(tabs.list[i]?.term),
    cursorLine: (i) => cursorLine(tabs.list[i]?.term),
  },
});

function screenText(term) {
  if (!term) return "";
  const buf = term.buffer.active;
  const lines = [];
  for (let i = 0; i < buf.length; i++) lines.push(buf.getLine(i)?.translateToString(true) ?? "");
  while (lines.length && !lines[lines.length - 1]) lines.pop();
  return lines.join("\n");
}

function cursorLine(term) {
  if (!term) return "";
  const buf = term.buffer.active;
  return (buf.getLine(buf.baseY + buf.cursorY)?.translateToString(true) ?? "").trimEnd();
}

function takeUrlParam(name) {
  if (!params.has(name)) return null;
  const value = params.get(name);
  params.delete(name);
  const clean = new URL(location.href);
  clean.searchParams.delete(name);
  history.replaceState(history.state, "", clean.href);
  return value;
}

function record(type, data) {
  demo.events.push({ t: Math.round(performance.now()), type, ...data });
  if (demo.events.length > MAX_EVENTS) demo.events.splice(0, demo.events.length - MAX_EVENTS);
}

// ---------------------------------------------------------------- terminal

// One xterm.js terminal per tab, each on its own channel of the one connection
// (tabs.mjs).  Font, theme, scrollback, cursor: defaults < server < saved < URL
// (prefs.mjs), for every terminal.
prefs.initial(params);
const notify = (text, level) => setMessage(text, level);
tabs = new Tabs({
  host: $("terminal"),
  strip: $("tabs"),
  newButton: $("tab-new"),
  Terminal: window.Terminal,
  FitAddon: window.FitAddon.FitAddon,
  SerializeAddon: window.SerializeAddon?.SerializeAddon,
  options: () => prefs.xtermOptions(prefs.current()),
  // Clipboard shortcuts, links, Unicode 11, OSC 52 (keys.mjs), on every terminal.
  setup: (term) => keys.install(term, { prefs: prefs.current, notify }),
  hooks: {
    onInput: (tab, typed) => {
      const d = keybar.modify(typed); // the key bar's sticky Ctrl/Alt
      if (viewing()) return void viewerInput(tab, d);
      if (d === "\r" && tab.phase === "exited") return void restart(tab);
      if (d === "\r" && demo.phase === "error" && !$("btn-reconnect").hidden) return void $("btn-reconnect").click();
      if (tab.ch && tab.phase === "ready") nimbus.send(tab.ch, d).catch?.(reportInputError);
    },
    onBinary: (tab, d) => {
      if (viewing() && viewMode() !== "write") return; // a read-only viewer sends nothing
      if (tab.ch && tab.phase === "ready") nimbus.send(tab.ch, Uint8Array.from(d, (c) => c.charCodeAt(0))).catch?.(reportInputError);
    },
    onResize: (tab, cols, rows) => {
      if (viewing()) return; // the owner's size rules: a viewer's terminal follows it
      if (tab.ch && tab.phase === "ready") nimbus.resize(tab.ch, cols, rows);
    },
    onActivate: () => {
      showActiveTab();
      shareUI.refresh();
    },
    onTitle: (tab) => {
      if (tab === tabs.active) showTitle();
    },
    onNew: () => newTab(),
    onClose: (tab) => closeTab(tab),
  },
});
// The touch key bar (keybar.mjs) and the settings panel (prefs.mjs) act on the
// terminal on screen; a preference reaches the hidden terminals when they are
// shown (tabs.activate: a hidden terminal cannot measure its font).
const onScreen = {
  get modes() {
    return tabs.active?.term.modes ?? {};
  },
  input: (data, user) => tabs.active?.term.input(data, user),
  focus: () => tabs.focus(),
  options: new Proxy(
    {},
    {
      get: (_, k) => tabs.active?.term.options[k],
      set: (_, k, v) => {
        if (tabs.active) tabs.active.term.options[k] = v;
        return true;
      },
    },
  ),
};
const updateKeybar = keybar.install(onScreen, { prefs: prefs.current });
prefs.install(onScreen, { onApplied: () => (updateKeybar(), fitNow()), notify });
demo.page = { prefs: prefs.state, clipboard: keys.state, keybar: keybar.state };

// File transfer (transfers.mjs): shown once the server announced it (refreshStatus).
// A transfer shares the context of the tab on screen: its channel is the
// `ref`, so relative paths start in that shell's working directory.
const fileUI = transfers.install({
  context: () => {
    if (!conn || conn.state === "closed") return null;
    const ch = tabs.active?.ch;
    const ssh = config.mode === "ssh";
    return {
      conn,
      ref: ch && tabs.active.phase === "ready" ? ch : null,
      // No credentials: with `ref` the SSH backend uses that tab's SSH connection.
      target: ssh ? parseTarget(config.target) : { host: "localhost", port: 0 },
      user: { username: ssh ? config.user : "", auth: {} },
    };
  },
  upload: nimbus.upload,
  download: nimbus.download,
  describe: nimbus.describeError,
  notify: (text, level) => setMessage(text, level),
  focus: () => tabs.focus(),
});
demo.transfers = transfers.state;

// Share links (share.mjs): "Share…" and the viewer count, shown once the server
// announced caps.share (refreshStatus), for the terminal on screen.
const shareUI = share.install({
  channel: () => (conn && conn.state !== "closed" && tabs.active?.phase === "ready" ? tabs.active.ch : null),
  notify: (text, level) => setMessage(text, level),
  focus: () => tabs.focus(),
});
demo.share = share.state;

// ------------------------------------------------------------ viewer page

// A page opened with ?share=TOKEN watches someone's terminal: one tab at the
// owner's size, no tabs, files or sharing of its own; a read-only viewer sends
// no input.  What the viewer may do is the server's to enforce.
function viewing() {
  return Boolean(config?.view);
}

/** "read" / "write": the server's word (conn.viewMode); read-only until it said. */
function viewMode() {
  return conn?.viewMode ?? "read";
}

function viewerInput(tab, data) {
  if (data === "\r" && demo.phase === "error" && !$("btn-reconnect").hidden) return void $("btn-reconnect").click();
  if (viewMode() !== "write" || !tab.ch || tab.phase !== "ready") return;
  nimbus.send(tab.ch, data).catch?.(reportInputError);
}

function showViewer() {
  const mode = viewMode();
  $("app").dataset.view = mode;
  const banner = $("view-banner");
  banner.dataset.mode = mode;
  delete banner.dataset.ended;
  banner.textContent = share.bannerText(mode);
  banner.hidden = false;
  for (const t of tabs.list) t.term.options.disableStdin = mode !== "write";
}

/** Keep the viewer's terminal at the shared terminal's size: now, and on every "resize". */
function followViewSize(tab, ch, resumed) {
  const apply = (size) => {
    if (!size || tab.ch !== ch) return;
    share.saveViewSize(size);
    tabs.setFixedSize(size);
  };
  // After a reload the size comes back with the screen (the server does not repeat it).
  apply(ch.termSize ?? (resumed ? share.loadViewSize() ?? { cols: tab.term.cols, rows: tab.term.rows } : null));
  // In stream order: after the output before it is parsed, before the output after it.
  return nimbus.on(ch, "resize", (size) => tab.term.write("", () => apply(size)));
}

/** The viewer's link stopped working (4016, or 4003 for a dead link): say so; reconnecting cannot help. */
function showViewEnded(sentence, detail, title = "Sharing ended") {
  demo.viewEnded = sentence;
  const banner = $("view-banner");
  banner.dataset.ended = "";
  banner.textContent = sentence;
  banner.hidden = false;
  $("btn-reconnect").hidden = true;
  setMessage(sentence, "error", detail);
  showNotice(title, sentence, detail);
  $("notice-reconnect").hidden = true;
  $("notice-settings").hidden = true;
}

function showTitle() {
  const t = tabs.active?.title;
  document.title = t ? `${t} — nimbus` : "nimbus terminal";
}

function reportInputError(e) {
  record("input_error", { message: String(e?.message ?? e) });
}

// Resize follows the window: a ResizeObserver, debounced to one fit per
// animation frame + 50 ms (the core coalesces resize messages on top).
// Only the terminal on screen is fitted; a hidden one is fitted when shown.
let fitTimer = 0;
new ResizeObserver(() => {
  clearTimeout(fitTimer);
  fitTimer = setTimeout(() => requestAnimationFrame(fitNow), 50);
}).observe($("terminal"));

function fitNow() {
  tabs.fitActive();
}

// ------------------------------------------------------------ status bar

function fmtBytes(n) {
  if (n == null) return "–";
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KiB`;
  if (n < 1073741824) return `${(n / 1048576).toFixed(1)} MiB`;
  return `${(n / 1073741824).toFixed(2)} GiB`;
}

// The pill tells the truth: while the browser is offline (navigator.onLine)
// a live connection shows "offline", whatever its socket still says.
const LIVE_STATES = new Set(["connecting", "authenticating", "ready", "reconnecting"]);
let pillWanted = "loading";

function setPill(state) {
  pillWanted = state;
  const shown = navigator.onLine === false && LIVE_STATES.has(state) ? "offline" : state;
  const pill = $("st-state");
  pill.dataset.state = shown;
  pill.querySelector("b").textContent = shown;
}

let offlineShown = false;
function onNetworkChange() {
  setPill(pillWanted);
  if (navigator.onLine === false && LIVE_STATES.has(pillWanted)) {
    offlineShown = true;
    setMessage("Offline: the terminal goes on when the network is back", "warn");
  } else if (offlineShown) {
    offlineShown = false;
    if ($("st-msg").dataset.level === "warn") setMessage("Back online", "ok");
  }
}
addEventListener("offline", onNetworkChange);
addEventListener("online", onNetworkChange);

// `detail` (an error's code and raw reason) follows the sentence, smaller.
function setMessage(text, level = "", detail = "") {
  const el = $("st-msg");
  el.textContent = text;
  el.title = detail ? `${text}\n${detail}` : text;
  el.dataset.level = level;
  if (detail) el.append(" ", detailElement("span", "st-msg-detail", detail));
}

// A smaller, dimmer element holding `text` (textContent only: the reason is the server's).
function detailElement(tag, id, text) {
  const el = document.createElement(tag);
  el.id = id;
  el.className = "dim detail";
  el.style.fontSize = "0.85em";
  el.style.opacity = "0.8";
  el.textContent = text;
  return el;
}

let conn = null; // the facade connection
const windows = new Map(); // channel id -> largest credit grant seen

function refreshStatus() {
  const s = nimbus.stats(conn);
  demo.pauseReasons = s.pauseReasons;
  if (conn) demo.state = s.state;
  fileUI.setAvailable(Boolean(conn) && s.state !== "closed" && s.files && !viewing());
  const canShare = Boolean(conn) && s.state !== "closed" && s.share && !viewing();
  if (canShare !== share.state.available) shareUI.setAvailable(canShare);
  $("st-rtt").textContent = s.rttMs == null ? "RTT –" : `RTT ${s.rttMs < 10 ? s.rttMs.toFixed(1) : Math.round(s.rttMs)} ms`;
  $("st-buf").textContent = `buf ${fmtBytes(s.bufferedAmount)}`;
  const ch = tabs.active?.ch;
  const win = ch ? windows.get(ch.id) : null;
  $("st-win").textContent = `win ${win == null ? "–" : fmtBytes(win)}`;
  $("st-rx").textContent = `↓ ${fmtBytes(demo.rx)}`;
  const pause = $("st-pause");
  pause.hidden = s.pauseReasons.length === 0;
  pause.textContent = s.pauseReasons.length ? `paused: ${s.pauseReasons.join(", ")}` : "";
}
setInterval(refreshStatus, 250);
// A fresh RTT for the status bar every 10 s while the page is visible.
setInterval(() => {
  if (conn && conn.state === "ready" && document.visibilityState === "visible") nimbus.ping(conn);
}, 10_000);

// ---------------------------------------------------------------- loading

function showLoader(text, fraction = null) {
  const el = $("loader");
  el.hidden = false;
  delete el.dataset.error;
  $("loader-text").textContent = text;
  if (fraction == null) el.dataset.indeterminate = "";
  else {
    delete el.dataset.indeterminate;
    $("loader-bar").style.width = `${Math.max(2, Math.min(100, fraction * 100)).toFixed(1)}%`;
  }
}

function hideLoader() {
  $("loader").hidden = true;
  $("app").dataset.state = "running";
}

function fatal(text) {
  demo.phase = "error";
  setPill("error");
  const el = $("loader");
  el.hidden = false;
  el.dataset.error = "";
  delete el.dataset.indeterminate;
  $("loader-text").textContent = text;
  setMessage(text, "error");
}

// ------------------------------------------------------------ configuration

// What to connect to: URL parameters, else the last choice of this tab
// (sessionStorage; never a password, never the token in clear), else a local
// shell on this origin.  The token comes from ?token= or, after a reload,
// from token_store.mjs (restoreToken, asynchronous).
function loadConfig() {
  let saved = {};
  try {
    saved = JSON.parse(sessionStorage.getItem(CONFIG_KEY) || "{}");
  } catch {
    saved = {};
  }
  const cfg = {
    mode: saved.mode ?? "local",
    target: saved.target ?? "",
    user: saved.user ?? "",
    token: urlShare ?? urlToken ?? "",
    ws: saved.ws ?? "",
    // A viewer (?share=, or this tab's last load was one): the token is the share link's.
    view: urlShare != null || (urlToken == null && saved.view === true),
    hadToken: urlShare == null && urlToken == null && saved.hasToken === true, // to be restored by restoreToken()
  };
  if (params.has("target") || params.has("user")) cfg.mode = "ssh";
  for (const k of ["target", "user", "ws"]) if (params.has(k)) cfg[k] = params.get(k);
  if (cfg.view) cfg.mode = "local"; // a viewer opens the shared terminal, whatever the backend
  return cfg;
}

// The saved token of this tab (a reload), if it was saved for the same server.
// `tokenLost`: there was one, but it could not be brought back (no WebCrypto
// here, or another server): the form asks for it.
async function restoreToken(cfg) {
  if (!cfg.hadToken) return;
  const ws = resolveWs(cfg.ws);
  const token = ws.url ? await tokens.loadToken(ws.url) : null;
  cfg.hadToken = false;
  if (token) {
    cfg.token = token;
    demo.tokenStorage = "wrapped";
  } else cfg.tokenLost = true;
}

async function saveConfig(cfg) {
  const { mode, target, user, ws } = cfg;
  try {
    sessionStorage.setItem(CONFIG_KEY, JSON.stringify({ mode, target, user, ws, hasToken: Boolean(cfg.token), view: Boolean(cfg.view) }));
  } catch {
    /* storage disabled: no reload memory */
  }
  demo.tokenStorage = await tokens.saveToken(cfg.token, wsURL(cfg));
}

/**
 * The WebSocket URL the page may use for `text` -- `{url}` -- or `{error}`.
 * Empty: the endpoint `ws/ssh` next to the page (`/ws/ssh` for a page at
 * `/`, `/term/ws/ssh` for a page at `/term/` behind a proxy: docs/deploy.md).  A relative path, or this origin written as http(s):, becomes
 * ws(s):.  Anything but this page's own origin (ws: for http:, wss: for
 * https:, same host and port) is refused: the page sends the bearer token
 * and the SSH password typed into its form over this socket.
 */
function resolveWs(value) {
  const text = typeof value === "string" ? value : "";
  const own = location.protocol === "https:" ? "wss:" : "ws:";
  const origin = `${own}//${location.host}`;
  const shown = text.length > 120 ? `${text.slice(0, 120)}…` : text;
  let url;
  try {
    url = new URL(text || "ws/ssh", location.href);
  } catch {
    return { error: `"${shown}" is not a URL` };
  }
  if (url.protocol === location.protocol) url.protocol = own;
  if (url.protocol !== own || url.host !== location.host || url.username || url.password) {
    return { error: `Refused to connect to ${shown}: this page only connects to its own server (${origin})` };
  }
  url.hash = "";
  return { url: url.href };
}

function wsURL(cfg) {
  const ws = resolveWs(cfg.ws);
  if (ws.error) throw new Error(ws.error);
  return ws.url;
}

// A WebSocket URL the page will not use: say so, connect to nothing, and let
// the user correct it in the form.
function refuseWs(cfg, error) {
  demo.refused = { url: cfg.ws, reason: error };
  demo.refusals += 1;
  record("ws_refused", { url: cfg.ws });
  setPill("error");
  setMessage(error, "error");
  showForm(cfg, error);
}

function parseTarget(text) {
  const m = /^\s*(\[[^\]]+\]|[^:\s]+)(?::(\d+))?\s*$/.exec(text || "");
  if (!m) return null;
  return { host: m[1].replace(/^\[|\]$/g, ""), port: m[2] ? Number(m[2]) : 22 };
}

// ---------------------------------------------------------------- the form

const form = $("connect-form");

function syncForm() {
  form.dataset.mode = form.elements.mode.value;
  form.dataset.auth = form.elements.auth.value;
}
form.addEventListener("change", syncForm);

function showForm(cfg, note = "") {
  formReturnPhase = demo.phase === "form" ? formReturnPhase : demo.phase;
  demo.phase = "form";
  $("connect-cancel").hidden = !(tabs.active?.ch && ["ready", "exited"].includes(formReturnPhase));
  const f = form.elements;
  f.mode.value = cfg.mode;
  f.target.value = cfg.target;
  f.user.value = cfg.user;
  f.token.value = cfg.token;
  f.ws.value = cfg.ws;
  f.password.value = "";
  f.passphrase.value = "";
  if (cfg.token || cfg.ws || cfg.tokenLost) form.querySelector("details").open = true;
  $("connect-note").hidden = !note;
  $("connect-note").textContent = note;
  syncForm();
  hideLoader();
  $("connect").hidden = false;
  const first = cfg.mode === "ssh" ? (cfg.target ? (cfg.user ? f.password : f.user) : f.target) : form.querySelector("button");
  first.focus();
}

form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = form.elements;
  const cfg = {
    mode: f.mode.value,
    target: f.target.value.trim(),
    user: f.user.value.trim(),
    token: f.token.value,
    ws: f.ws.value.trim(),
  };
  let credentials = {};
  if (cfg.mode === "ssh") {
    if (!parseTarget(cfg.target)) return showFormNote("Target must be HOST or HOST:PORT");
    if (!cfg.user) return showFormNote("User is required");
    credentials =
      f.auth.value === "key"
        ? { type: "key", private_key: f.key.value, ...(f.passphrase.value ? { passphrase: f.passphrase.value } : {}) }
        : { type: "password", password: f.password.value };
  }
  f.password.value = "";
  f.passphrase.value = "";
  $("connect").hidden = true;
  const intent = formIntent;
  formIntent = {};
  start(cfg, credentials, intent).catch(showFatal);
});

// Cancel (or Escape) goes back to the running terminal.
let formReturnPhase = "loading";
function cancelForm() {
  if ($("connect-cancel").hidden) return;
  $("connect").hidden = true;
  demo.phase = formReturnPhase;
  formIntent = {};
  tabs.focus();
}
$("connect-cancel").addEventListener("click", cancelForm);
form.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") cancelForm();
});

function showFormNote(text) {
  $("connect-note").hidden = false;
  $("connect-note").textContent = text;
}

// "New session…": the form, whose session replaces the one on screen; "+" (and
// Alt+Shift+T) opens one more tab instead (newTab).
let formIntent = {}; // what the form's Connect does: {} (replace the tab on screen) or {newTab: true}
$("btn-new").addEventListener("click", () => {
  $("notice").hidden = true;
  formIntent = {};
  showForm(config);
});
$("btn-reconnect").addEventListener("click", () => {
  if (askingToken) return void askForToken(); // the same token would fail the same way
  $("btn-reconnect").hidden = true;
  start(config, null).catch(showFatal);
});

// ------------------------------------------------------------ connection

let config = loadConfig();

function setPhase(phase) {
  demo.phase = phase;
  $("app").dataset.phase = phase;
}

/** What a tab is called in the strip before its program sets a title. */
function tabName(cfg) {
  return cfg.mode === "ssh" ? `${cfg.user}@${cfg.target}` : "shell";
}

/**
 * Connect (re-using the open connection when the server and token did not
 * change), then bring back the resumed channels -- one tab each -- or open a
 * new session: in `intent.tab` (replacing its session), in a new tab
 * (`intent.newTab`), else in the tab on screen.
 * `credentials` null: a reconnect -- resume if possible, else ask again.
 */
async function start(cfg, credentials, intent = {}) {
  const ws = resolveWs(cfg.ws);
  if (ws.error) return refuseWs(cfg, ws.error);
  config = cfg;
  setPhase("connecting");
  await saveConfig(cfg);
  $("btn-reconnect").hidden = true;
  $("notice").hidden = true;
  askingToken = false;
  setMessage("");
  const key = `${wsURL(cfg)}|${cfg.token}|${cfg.view ? "view" : ""}`;
  if (!conn || conn.state === "closed" || conn.__key !== key) {
    await dropConnection();
    setPhase("connecting");
    setPill("connecting");
    showLoader(`Connecting to ${wsURL(cfg)}…`);
    const gen = ++connGen;
    const c = await nimbus.connect({
      url: wsURL(cfg),
      token: cfg.view ? "" : cfg.token,
      share: cfg.view ? cfg.token : null,
      listeners: connectionListeners(gen),
    });
    if (gen !== connGen) return void nimbus.closeConnection(c).catch(() => {}); // superseded meanwhile
    conn = c;
    conn.__key = key;
    demo.conn = conn;
    demo.state = conn.state;
    // A new connection: the tabs of the old one are gone with it.
    tabs.clear();
    if (cfg.view) showViewer();
    const resumed = nimbus.resumedChannels(conn);
    if (resumed.length) return void (await restoreTabs(resumed));
    forgetScreens(); // nothing resumed: saved screens are of sessions that are gone
    intent = {};
  }
  if (cfg.mode === "ssh" && !credentials) {
    formIntent = intent;
    showForm(cfg);
    return;
  }
  if (intent.newTab && tabs.count) return void (await openTab(cfg, credentials ?? {}));
  const tab = intent.tab && tabs.list.includes(intent.tab) ? intent.tab : tabs.active;
  await openNew(cfg, credentials ?? {}, tab);
}

/**
 * A reload: one tab per resumed channel, in the saved order and with the saved
 * names and titles, each screen written back before its output goes on
 * (screen_state.mjs); the tab that was on screen is shown again.
 */
async function restoreTabs(resumed) {
  const saved = takeScreens();
  const place = new Map((saved?.tabs ?? []).map((t, i) => [t.id, i]));
  const order = [...resumed].sort((a, b) => (place.get(a.id) ?? 1e9) - (place.get(b.id) ?? 1e9));
  let gap = 0;
  for (const ch of order) {
    const entry = saved?.tabs[place.get(ch.id)] ?? null;
    const tab = tabs.create({ name: entry?.name || tabName(config), title: entry?.title ?? "", show: false });
    const shown = await tab.keeper.restore(ch, entry?.screen); // the screen as it was, before its output goes on
    gap += shown.gap;
    attach(tab, ch, { resumed: true });
  }
  tabs.activate(tabs.list.find((t) => t.ch?.id === saved?.active) ?? tabs.list[0]);
  hideLoader();
  $("connect").hidden = true;
  nimbus.ping(conn);
  const what = order.length > 1 ? `${order.length} sessions resumed` : "Session resumed";
  if (gap) setMessage(`${what}; ${fmtBytes(gap)} of output before the reload could not be kept (Ctrl-L redraws)`, "warn");
  else setMessage(what, "ok");
}

/** A new session in `tab` (a new tab when there is none), replacing the one it had. */
async function openNew(cfg, credentials, tab) {
  if (tab?.ch) {
    // A new session replaces the one on screen (which ends on the server).
    const old = tab.ch;
    tabs.detach(tab);
    tab.ch = null;
    nimbus.closeChannel(old).catch(() => {});
  }
  if (!tab) tab = tabs.create({ name: tabName(cfg) });
  tab.name = tabName(cfg);
  tab.title = "";
  tab.phase = "opening";
  tabs.activate(tab);
  setPhase("connecting");
  showLoader(cfg.mode === "ssh" ? `Opening ${cfg.user}@${cfg.target}…` : "Opening a shell…");
  fitNow();
  tab.term.reset();
  let ch;
  try {
    ch = await openChannel(cfg, credentials, tab.term);
  } catch (e) {
    const err = nimbus.describeError(e);
    record("open_error", { message: err.text });
    if (conn?.state === "closed") return onTerminalError(e);
    const local = cfg.mode === "local";
    showForm(
      { ...cfg, mode: local ? "ssh" : cfg.mode },
      local
        ? `A local shell could not be opened (${err.detail || err.text}). This server may run the SSH backend: choose a target.`
        : `Could not open ${cfg.user}@${cfg.target}: ${err.detail || err.text}`,
    );
    return;
  }
  if (!tabs.list.includes(tab)) return void nimbus.closeChannel(ch).catch(() => {}); // closed meanwhile
  attach(tab, ch, { resumed: false });
}

function openChannel(cfg, credentials, size) {
  // A viewer's one channel shows the shared terminal (any target the server allows will do).
  if (cfg.view) return nimbus.openSession(conn, { target: { host: "localhost", port: 22 }, user: { username: "", auth: {} }, cols: size.cols, rows: size.rows });
  const target = cfg.mode === "ssh" ? parseTarget(cfg.target) : { host: "localhost", port: 0 };
  const user = cfg.mode === "ssh" ? { username: cfg.user, auth: credentials } : { username: "", auth: {} };
  return nimbus.openSession(conn, { target, user, cols: size.cols, rows: size.rows });
}

/**
 * "+" or Alt+Shift+T: one more terminal on the same connection.  The channel
 * is asked for first (at the size of the terminal on screen: every tab has
 * the same pane); the runtime refuses one more than the session may hold,
 * and the page says so instead of opening a tab.  SSH asks for the
 * credentials first (they are never kept).
 */
async function newTab() {
  if (viewing()) return; // a viewer watches one terminal
  if (!conn || conn.state === "closed" || !["ready", "exited"].includes(demo.phase)) return;
  if (config.mode === "ssh") {
    formIntent = { newTab: true };
    return void showForm(config);
  }
  await openTab(config, {});
}

async function openTab(cfg, credentials) {
  const size = tabs.active?.term ?? { cols: 80, rows: 24 };
  setMessage("Opening a new terminal…");
  let ch;
  try {
    ch = await openChannel(cfg, credentials, size);
  } catch (e) {
    const err = nimbus.describeError(e);
    record("open_error", { message: err.text, name: err.name });
    if (conn?.state === "closed") return onTerminalError(e);
    if (err.name === "CHANNEL_LIMIT") {
      demo.tabs.refused += 1;
      demo.tabs.lastRefusal = err.text;
      flashNewButton();
      return void setMessage(`No new terminal: ${err.detail || err.text}`, "warn");
    }
    return void setMessage(`Could not open a new terminal: ${err.detail || err.text}`, "error");
  }
  const tab = tabs.create({ name: tabName(cfg) });
  attach(tab, ch, { resumed: false });
  setMessage("");
}

function flashNewButton() {
  const b = $("tab-new");
  b.dataset.refused = "";
  clearTimeout(flashNewButton.timer);
  flashNewButton.timer = setTimeout(() => delete b.dataset.refused, 1500);
}

/**
 * ✕ or Alt+Shift+W: the tab's channel is closed (its shell ends on the
 * server) and the tab goes.  The last tab stays, like a shell that exited:
 * Enter starts a new session in it.
 */
async function closeTab(tab) {
  if (!tab || viewing()) return;
  const ch = tab.ch;
  if (tabs.count > 1) {
    tab.ch = null;
    tabs.remove(tab);
    if (ch) nimbus.closeChannel(ch).catch(() => {});
    return;
  }
  if (!ch || tab.phase !== "ready") return;
  tabs.detach(tab);
  tab.ch = null;
  tab.phase = "exited";
  tab.term.write("\r\n\x1b[2m[session closed — press Enter for a new session]\x1b[0m\r\n");
  tabs.render();
  showActiveTab();
  setMessage("Session closed — press Enter for a new session");
  nimbus.closeChannel(ch).catch(() => {});
}

/** The page follows the tab on screen: phase, pill, title, status numbers. */
function showActiveTab() {
  const tab = tabs.active;
  showTitle();
  if (!tab || !["ready", "exited"].includes(demo.phase)) return;
  const phase = tab.phase === "exited" ? "exited" : "ready";
  setPhase(phase);
  setPill(phase === "exited" ? "exited" : conn?.state ?? "closed");
  refreshStatus();
}

// Output of a tab's channel -> its xterm.  `done` is called from xterm's
// write callback, once it has parsed the chunk: only then does the runtime
// count the bytes as consumed and grant the server more credit, so a slow
// renderer slows the server down instead of growing memory (xterm.js's
// flow-control guidance).  Each channel is paced by its own terminal: a
// hidden tab's xterm still parses (and calls back), so it never holds up
// another tab.
function output(tab) {
  return (chunk, done) => {
    const bytes = tab.keeper.fresh(chunk); // null: a restored screen shows these bytes already
    if (!bytes) return void done();
    tab.rx += bytes.length;
    if (demo.tap) demo.tap(bytes, tab.ch?.id ?? null);
    const parsed = tab.keeper.writing(bytes);
    tab.term.write(bytes, () => {
      parsed();
      tab.written += bytes.length;
      done();
    });
  };
}

// Reload, close or hide: the runtime writes its resume state now and every
// tab's screen is saved with the same stream position, in this one task
// (screen_state.mjs).
function saveScreen() {
  if (!conn || conn.state === "closed" || !tabs.list.some((t) => t.ch)) return;
  nimbus.persist(conn);
  demo.tabs.saved = saveScreens(tabs.list, { active: tabs.active?.ch?.id ?? null });
}
addEventListener("pagehide", saveScreen);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "hidden") saveScreen();
});

function attach(tab, ch, { resumed }) {
  tabs.detach(tab);
  tab.ch = ch;
  tab.keeper.follow(ch, { resumed });
  tab.rx = 0;
  tab.written = 0;
  tab.resumed = resumed;
  tab.exit = null;
  tab.phase = "ready";
  demo.sessions += 1;
  const offs = [];
  if (viewing()) offs.push(followViewSize(tab, ch, resumed)); // before the output is piped: the size comes first
  else offs.push(nimbus.on(ch, "viewers", () => tab === tabs.active && shareUI.refresh()));
  offs.push(nimbus.pipeOutput(ch, output(tab)));
  offs.push(
    nimbus.on(ch, "exit", (ev) => {
      const code = ev?.code ?? null;
      const sig = ev?.sig ?? ev?.signal ?? null;
      tab.exit = { code, sig };
      record("exit", { id: ch.id ?? null, ...tab.exit });
      const what = sig ? `killed by SIG${sig}` : `exited with code ${code ?? "?"}`;
      if (viewing()) {
        tab.term.write(`\r\n\x1b[2m[the shared terminal's process ${what}]\x1b[0m\r\n`);
        tab.phase = "exited";
        setPhase("exited");
        setPill("exited");
        return void setMessage(`The shared terminal's process ${what}`, "warn");
      }
      const more = tabs.count > 1 ? ", Alt+Shift+W closes the tab" : "";
      tab.term.write(`\r\n\x1b[2m[process ${what} — press Enter for a new session${more}]\x1b[0m\r\n`);
      tab.phase = "exited";
      tabs.render();
      if (tab !== tabs.active) return void setMessage(`Terminal ${tabs.list.indexOf(tab) + 1}: shell ${what}`, code === 0 ? "" : "warn");
      setPhase("exited");
      setPill("exited");
      setMessage(`Shell ${what}`, code === 0 ? "" : "warn");
    }),
  );
  offs.push(
    nimbus.on(ch, "close", () => {
      record("channel_close", { id: ch.id ?? null });
      if (viewing()) {
        if (tab.ch === ch && tab.phase === "ready") tab.phase = "exited";
        if (!demo.viewEnded && demo.phase !== "error") setMessage("The view ended", "warn");
        return;
      }
      if (tab.ch === ch && tab.phase === "ready") {
        tab.phase = "exited";
        tabs.render();
        if (tab !== tabs.active) return;
        setPhase("exited");
        setPill("exited");
        setMessage("Session closed — press Enter for a new session");
      }
    }),
  );
  offs.push(
    nimbus.on(ch, "error", (e) => {
      const err = nimbus.describeError(e);
      record("channel_error", err);
      setMessage(`Session error: ${err.detail || err.text}`, "error");
    }),
  );
  tab.offs = offs;
  tabs.render();
  $("st-target").textContent = viewing() ? `shared terminal (${share.modeWords(viewMode())})` : config.mode === "ssh" ? `${config.user}@${config.target}` : "local shell";
  hideLoader();
  $("connect").hidden = true;
  if (viewing()) showViewer();
  else shareUI.refresh();
  if (tab !== tabs.active) return;
  setPhase("ready");
  setPill(conn.state);
  fitNow();
  if (resumed && !viewing()) nimbus.resize(ch, tab.term.cols, tab.term.rows); // the window may differ from before the reload
  nimbus.ping(conn);
  tabs.focus();
  refreshStatus();
}

// Connection listeners, registered with connect() so that no event of the
// handshake is missed; `gen` retires them once another connection replaced it.
let connGen = 0;

function connectionListeners(gen) {
  const live = () => gen === connGen;
  return {
    statechange: (ev) => {
      if (!live()) return;
      const state = nimbus.stateOf(ev);
      demo.state = state;
      record("state", { state });
      if (demo.phase !== "exited" && demo.phase !== "error") setPill(state);
      if (state === "reconnecting") setMessage("Connection lost — reconnecting…", "warn");
      else if (state === "ready" && $("st-msg").dataset.level === "warn") setMessage("Reconnected", "ok");
      refreshStatus();
    },
    policy: (p) => {
      if (!live()) return;
      if (p.kind === "credit_grant") {
        // The largest grant seen approximates the channel's current window
        // (the first grant is the whole window; later ones refill it).
        windows.set(p.channel, Math.max(windows.get(p.channel) ?? 0, p.value ?? 0));
        return; // frequent: not recorded
      }
      record("policy", { kind: p.kind, reason: p.reason ?? null, channel: p.channel ?? null, value: p.value ?? null });
      refreshStatus();
    },
    diagnostic: (ev) => {
      if (live()) record("diagnostic", { code: ev?.code ?? "", phase: ev?.phase ?? "" });
    },
    error: (e) => {
      if (live()) onTerminalError(e);
    },
  };
}

// A terminal error in plain words (messages.mjs), its code and raw reason on a
// smaller detail line.  A 1006 before the socket opened hides why (a browser's
// WebSocket does not show the HTTP answer): the page asks the server over HTTP
// whether it is there at all, and words the error after its answer.
function onTerminalError(e) {
  const err = nimbus.describeError(e);
  const host = hostOf(config);
  const reason = err.detail || err.text;
  const sentence = messages.userMessage(err.name, reason, host, err.code) ?? err.text;
  const detail = messages.detailLine(err.code, err.name, reason);
  const asksToken = messages.asksForToken(err.name, reason);
  askingToken = asksToken;
  demo.error = { ...err, sentence, detailLine: detail, probe: null, asksToken };
  record("error", err);
  setPhase("error");
  setPill("closed");
  hideLoader();
  $("connect").hidden = true;
  if (viewing() && messages.shareEnded(err.name, reason)) {
    return void showViewEnded(sentence, detail, err.name === "SHARE_REVOKED" ? "Sharing ended" : "Share link not valid");
  }
  $("btn-reconnect").hidden = false;
  $("btn-reconnect").textContent = asksToken ? "Enter token…" : "Reconnect";
  showError(sentence, detail, tabs.list.some((t) => t.ch) && !asksToken);
  if (asksToken) askForToken();
  if (err.name === "CONNECT_FAILED" && err.code === 1006) probeAfterConnectFailed(demo.error, host, detail);
}

function showError(sentence, detail, onTerminal) {
  setMessage(sentence, "error", detail);
  if (onTerminal) {
    // Every tab was on the connection: each says so.
    for (const t of tabs.list) {
      if (t.ch) t.term.write(`\r\n\x1b[31m[disconnected: ${sentence}]\x1b[0m \x1b[2m— press Enter to reconnect\r\n${detail}\x1b[0m\r\n`);
    }
  } else showNotice("Disconnected", sentence, detail);
}

async function probeAfterConnectFailed(shown, host, detail) {
  let url;
  try {
    url = new URL(wsURL(config));
  } catch {
    return;
  }
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  const name = await messages.probe(url.href);
  if (demo.error !== shown) return; // another error, or a new attempt, meanwhile
  shown.probe = name;
  const sentence = messages.userMessage(name, "", host) ?? shown.sentence;
  if (sentence === shown.sentence) return;
  shown.sentence = sentence;
  record("error_probe", { result: name });
  if (demo.phase !== "error") return;
  setMessage(sentence, "error", detail);
  if (!$("notice").hidden) showNotice("Disconnected", sentence, detail);
}

function hostOf(cfg) {
  try {
    return new URL(wsURL(cfg)).host;
  } catch {
    return location.host;
  }
}

// A missing or refused bearer token: reconnecting with it would fail the same
// way, so the notice asks for the token and connects with what is typed.
let askingToken = false; // the last terminal error was one; start() clears it
function askForToken() {
  if ($("notice").hidden) showNotice("Token needed", demo.error?.sentence ?? "", demo.error?.detailLine ?? "");
  $("notice-title").textContent = "Token needed";
  $("notice-token-form").hidden = false;
  $("notice-reconnect").textContent = "Connect";
  $("notice-token").focus();
}

$("notice-token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  $("notice-reconnect").click();
});

function showNotice(title, text, detail = "") {
  $("notice-token-form").hidden = true;
  $("notice-reconnect").hidden = false;
  $("notice-settings").hidden = false;
  $("notice-token").value = "";
  $("notice-reconnect").textContent = "Reconnect";
  $("notice-title").textContent = title;
  $("notice-text").textContent = text;
  $("notice-detail")?.remove();
  if (detail) $("notice-text").after(detailElement("p", "notice-detail", detail));
  $("notice").hidden = false;
  $("notice-reconnect").focus();
}

$("notice-reconnect").addEventListener("click", () => {
  if (!$("notice-token-form").hidden) {
    const token = $("notice-token").value;
    if (!token) return void $("notice-token").focus();
    $("notice").hidden = true;
    $("btn-reconnect").hidden = true;
    start({ ...config, token }, null).catch(showFatal);
    return;
  }
  $("notice").hidden = true;
  $("btn-reconnect").click();
});
$("notice-settings").addEventListener("click", () => {
  $("notice").hidden = true;
  showForm(config);
});

async function dropConnection() {
  for (const t of tabs.list) tabs.detach(t);
  connGen++;
  const old = conn;
  conn = null;
  if (old && old.state !== "closed") {
    try {
      await nimbus.closeConnection(old);
    } catch {
      /* already gone */
    }
  }
}

// Enter in a tab whose shell exited: a new session in that tab.
async function restart(tab) {
  const ch = tab.ch;
  tabs.detach(tab);
  tab.ch = null;
  if (ch) {
    try {
      await nimbus.closeChannel(ch);
    } catch {
      /* already closed */
    }
  }
  if (config.mode === "ssh") {
    formIntent = { tab };
    return showForm(config);
  }
  start(config, {}, { tab }).catch(showFatal);
}

function showFatal(e) {
  if (demo.phase === "error" && !$("btn-reconnect").hidden) return; // already reported
  const err = nimbus.describeError(e);
  if (err.code != null) return onTerminalError(e);
  console.error(e);
  fatal(`Could not start: ${e?.message ?? e}`);
  $("btn-reconnect").hidden = false;
}

// ------------------------------------------------------------------- boot

// What scripts/build_site.py wrote into index.html (<meta name="nimbus-site">, the
// content-hashed folders of the runtime and the wheel); site.json for an older build.
async function siteMeta() {
  const tag = document.querySelector('meta[name="nimbus-site"]');
  try {
    if (tag) return JSON.parse(tag.content);
    return await (await fetch("site.json", { cache: "no-cache" })).json();
  } catch {
    return {};
  }
}

async function boot() {
  const t0 = performance.now();
  setPill("loading");
  showLoader("Loading the Python runtime…");
  const restoring = restoreToken(config).catch(() => {
    config.tokenLost = true;
  });
  const serverPrefs = prefs.loadServer(); // --terminal-option (page-config.json); never throws
  const site = await siteMeta();
  await nimbus.loadRuntime({
    indexURL: new URL(site.runtime || "pyodide/", location.href).href,
    wheelURL: site.wheel ? new URL(site.wheel, location.href).href : undefined,
    bootBytes: site.bootBytes ?? null,
    onProgress: ({ text, fraction, loaded, total }) => {
      demo.boot = { loaded, total };
      showLoader(text || "Loading the Python runtime…", fraction);
    },
  });
  demo.bootMs = Math.round(performance.now() - t0);
  record("booted", { ms: demo.bootMs });
  await restoring;
  await serverPrefs; // before the first session: its size follows the font
  if (config.tokenLost && config.view) {
    setPhase("error");
    hideLoader();
    return showViewEnded("This tab's share link could not be kept for the reload: open the link again", "");
  }
  if (config.tokenLost && !resolveWs(config.ws).error) {
    return showForm(config, "This tab had a bearer token for this server: enter it again to resume (it is not stored here).");
  }
  if (params.get("connect") === "0") return showForm(config);
  await start(config, config.mode === "ssh" ? null : {});
}

boot().catch(showFatal);
