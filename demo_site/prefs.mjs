// Terminal preferences (issue 15.4): font, theme and colours, scrollback,
// cursor, copy-on-select, OSC 52, the key bar.
//
// Four layers, the later winning, key by key (colours merge name by name):
//   defaults  <  the server's --terminal-option (GET page-config.json)
//             <  this browser's saved settings (localStorage)
//             <  URL parameters of this load (?fontSize=18&theme=light&color.red=%23ff5555)
// The user's own choice beats the operator's; a link beats both for one load
// (docs/page-features.md).  localStorage holds these preferences only, never a
// token, password or address.  `osc52` (the remote side may write the
// clipboard) is taken from the settings panel only: never from a URL or the
// server.  The same keys and ranges as node_runtime/server/page_config.py
// (tests/server/test_terminal_options.py holds both to one table).
// No DOM at module level: node can import this file (that test does).

export const STORAGE_KEY = "nimbus-demo.prefs";
/** A stored settings document larger than this is ignored (bounded parse). */
export const MAX_STORED = 16 * 1024;
export const MAX_TEXT = 200;

export const COLOR_NAMES = Object.freeze([
  "foreground", "background", "cursor", "cursorAccent", "selectionBackground",
  "black", "red", "green", "yellow", "blue", "magenta", "cyan", "white",
  "brightBlack", "brightRed", "brightGreen", "brightYellow",
  "brightBlue", "brightMagenta", "brightCyan", "brightWhite",
]);

/** The named themes: every colour of xterm.js's ITheme the page sets. */
export const THEMES = Object.freeze({
  dark: Object.freeze({
    background: "#0d1117", foreground: "#c9d1d9", cursor: "#58a6ff", cursorAccent: "#0d1117",
    selectionBackground: "#264f78",
    black: "#484f58", red: "#ff7b72", green: "#3fb950", yellow: "#d29922",
    blue: "#58a6ff", magenta: "#bc8cff", cyan: "#39c5cf", white: "#b1bac4",
    brightBlack: "#6e7681", brightRed: "#ffa198", brightGreen: "#56d364", brightYellow: "#e3b341",
    brightBlue: "#79c0ff", brightMagenta: "#d2a8ff", brightCyan: "#56d4dd", brightWhite: "#f0f6fc",
  }),
  light: Object.freeze({
    background: "#ffffff", foreground: "#1f2328", cursor: "#0969da", cursorAccent: "#ffffff",
    selectionBackground: "#b6d7ff",
    black: "#24292f", red: "#cf222e", green: "#116329", yellow: "#4d2d00",
    blue: "#0969da", magenta: "#8250df", cyan: "#1b7c83", white: "#6e7781",
    brightBlack: "#57606a", brightRed: "#a40e26", brightGreen: "#1a7f37", brightYellow: "#633c01",
    brightBlue: "#218bff", brightMagenta: "#a475f9", brightCyan: "#3192aa", brightWhite: "#8c959f",
  }),
});

export const DEFAULTS = Object.freeze({
  fontSize: 14,
  fontFamily: '"JetBrains Mono", "Fira Code", "DejaVu Sans Mono", Menlo, Consolas, monospace',
  lineHeight: 1.1,
  theme: "dark",
  colors: Object.freeze({}),
  scrollback: 5000,
  cursorStyle: "block",
  cursorBlink: true,
  copyOnSelect: false,
  osc52: false,
  keybar: "auto",
});

// ------------------------------------------------------------------ checks

const fail = (text) => {
  throw new RangeError(text);
};

function int(lo, hi) {
  return (v) => {
    const n = typeof v === "number" ? v : typeof v === "string" && /^\s*[+-]?\d+\s*$/.test(v) ? Number(v) : NaN;
    return Number.isInteger(n) && n >= lo && n <= hi ? n : fail(`expected a whole number ${lo}..${hi}`);
  };
}

function num(lo, hi) {
  return (v) => {
    const n = typeof v === "number" ? v : typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
    return Number.isFinite(n) && n >= lo && n <= hi ? n : fail(`expected a number ${lo}..${hi}`);
  };
}

function bool(v) {
  if (typeof v === "boolean") return v;
  const t = String(v).trim().toLowerCase();
  if (["true", "1", "yes", "on"].includes(t)) return true;
  if (["false", "0", "no", "off"].includes(t)) return false;
  return fail("expected true or false");
}

function choice(...choices) {
  return (v) => (choices.includes(v) ? v : fail(`expected one of ${choices.join(", ")}`));
}

// A font family list: xterm.js writes it into CSS, so letters, digits and
// a little punctuation only (a link must not restyle the page).
function font(v) {
  if (typeof v !== "string" || !v.trim() || v.length > MAX_TEXT) fail(`expected text of 1..${MAX_TEXT} characters`);
  if (!/^[\p{L}\p{N} ,'"._-]+$/u.test(v)) fail(`only letters, digits, spaces and , ' " . _ - are allowed`);
  return v.trim();
}

const HEX = /^#(?:[0-9a-f]{3}|[0-9a-f]{6})$/i;

function colors(v) {
  if (typeof v === "string") {
    try {
      v = JSON.parse(v);
    } catch {
      fail("expected a JSON object of colours");
    }
  }
  if (v == null || typeof v !== "object" || Array.isArray(v)) fail("expected a JSON object of colours");
  const out = {};
  for (const [name, c] of Object.entries(v)) {
    if (!COLOR_NAMES.includes(name)) fail(`unknown colour ${JSON.stringify(name.slice(0, 40))}`);
    if (typeof c !== "string" || !HEX.test(c)) fail(`colour ${name} must be #rgb or #rrggbb`);
    out[name] = c.toLowerCase();
  }
  return out;
}

/** Every key, with its check: the server's (page_config.TERMINAL_OPTIONS) and the page's own. */
export const SPEC = Object.freeze({
  fontSize: int(6, 72),
  fontFamily: font,
  lineHeight: num(1, 3),
  letterSpacing: num(-5, 20),
  cursorStyle: choice("block", "underline", "bar"),
  cursorBlink: bool,
  scrollback: int(0, 50_000),
  theme: choice(...Object.keys(THEMES)),
  colors,
  drawBoldTextInBrightColors: bool,
  minimumContrastRatio: num(1, 21),
  macOptionIsMeta: bool,
  rightClickSelectsWord: bool,
  // The page's own (not xterm.js options; not settable by the server).
  copyOnSelect: bool,
  osc52: bool,
  keybar: choice("auto", "on", "off"),
});
const PAGE_ONLY = new Set(["copyOnSelect", "osc52", "keybar"]);
const NOT_FROM_URL = new Set(["osc52"]);

/** [key, value] checked (a theme given as a JSON object becomes `colors`); throws RangeError. */
export function normalize(key, value) {
  if (key === "theme" && !(typeof value === "string" && Object.hasOwn(THEMES, value.trim()))) {
    try {
      return ["colors", colors(value)];
    } catch (e) {
      fail(`theme: ${e.message}`);
    }
  }
  if (!Object.hasOwn(SPEC, key)) fail(`unknown preference ${JSON.stringify(String(key).slice(0, 40))}`);
  if (typeof value === "string" && key !== "fontFamily") value = value.trim();
  try {
    return [key, SPEC[key](value)];
  } catch (e) {
    return fail(`${key}: ${e.message}`);
  }
}

/** `entries` checked: {prefs, errors}; keys in `skip` are refused. */
export function check(entries, skip = new Set()) {
  const prefs = {};
  const errors = [];
  for (const [key, value] of entries) {
    try {
      if (skip.has(key)) fail(`${key} cannot be set here`);
      const [k, v] = normalize(key, value);
      prefs[k] = k === "colors" ? { ...(prefs.colors ?? {}), ...v } : v;
    } catch (e) {
      errors.push(e.message);
    }
  }
  return { prefs, errors };
}

/** Layers merged in order (later wins; colours merge by name). */
export function merge(...layers) {
  const out = { ...DEFAULTS, colors: {} };
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer ?? {})) {
      if (k === "colors") out.colors = { ...out.colors, ...v };
      else out[k] = v;
    }
  }
  return out;
}

/** The URL layer: every known key but `osc52`, and `color.<name>`. */
export function fromParams(params) {
  const entries = [];
  for (const [key, value] of params) {
    if (key.startsWith("color.")) entries.push(["colors", { [key.slice(6)]: value }]);
    else if (Object.hasOwn(SPEC, key) && key !== "colors") entries.push([key, value]);
  }
  return check(entries, NOT_FROM_URL);
}

/** The server's layer (page-config.json's `terminal`): xterm.js options only. */
export function fromServer(doc) {
  const terminal = doc && typeof doc === "object" ? doc.terminal : null;
  if (!terminal || typeof terminal !== "object") return { prefs: {}, errors: [] };
  return check(Object.entries(terminal), PAGE_ONLY);
}

/** The palette of `p`: its theme, its colours on top. */
export function palette(p) {
  return { ...(THEMES[p.theme] ?? THEMES.dark), ...p.colors };
}

const XTERM_KEYS = [
  "fontSize", "fontFamily", "lineHeight", "letterSpacing", "cursorStyle", "cursorBlink", "scrollback",
  "drawBoldTextInBrightColors", "minimumContrastRatio", "macOptionIsMeta", "rightClickSelectsWord",
];

/** xterm.js options for preferences `p` (unset keys keep xterm's own defaults). */
export function xtermOptions(p) {
  const out = { theme: palette(p) };
  for (const k of XTERM_KEYS) if (p[k] !== undefined) out[k] = p[k];
  return out;
}

// ------------------------------------------------------------- the layers

/** The test and debugging view (window.nimbusDemo.page.prefs). */
export const state = {
  effective: merge(),
  server: {},
  stored: {},
  url: {},
  errors: [], // "source: message" of every value ignored
  serverLoaded: false,
};
const listeners = new Set();

/** The preferences in force now. */
export const current = () => state.effective;

/** `fn(prefs)` after every change; returns an unsubscribe function. */
export function onChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function readStored() {
  let raw = null;
  try {
    raw = localStorage.getItem(STORAGE_KEY);
  } catch {
    return {};
  }
  if (!raw || raw.length > MAX_STORED) return {};
  let doc;
  try {
    doc = JSON.parse(raw);
  } catch {
    return {};
  }
  const { prefs, errors } = check(Object.entries(doc?.prefs ?? {}));
  state.errors.push(...errors.map((e) => `saved settings: ${e}`));
  return prefs;
}

function writeStored(prefs) {
  try {
    if (Object.keys(prefs).length) localStorage.setItem(STORAGE_KEY, JSON.stringify({ v: 1, prefs }));
    else localStorage.removeItem(STORAGE_KEY);
  } catch {
    /* storage disabled: this load only */
  }
}

function recompute() {
  state.effective = merge(state.server, state.stored, state.url);
  for (const fn of listeners) fn(state.effective);
}

/** The preferences to build the terminal with (saved + URL; the server's come later). */
export function initial(params) {
  state.stored = readStored();
  const url = fromParams(params);
  state.url = url.prefs;
  state.errors.push(...url.errors.map((e) => `URL parameter ${e}`));
  state.effective = merge(state.server, state.stored, state.url);
  return state.effective;
}

/**
 * Fetch page-config.json (the server's --terminal-option) and apply it.
 * Never throws; bounded by `timeoutMs`.  A server without it (404, another
 * web server) leaves the defaults.
 */
export async function loadServer(url = "page-config.json", timeoutMs = 3000) {
  try {
    const r = await fetch(url, { cache: "no-store", credentials: "omit", signal: AbortSignal.timeout(timeoutMs) });
    if (r.ok) {
      const { prefs, errors } = fromServer(await r.json());
      state.server = prefs;
      state.errors.push(...errors.map((e) => `server option ${e}`));
    }
  } catch {
    /* no page-config.json here */
  }
  state.serverLoaded = true;
  recompute();
  return state.effective;
}

// ------------------------------------------------------ terminal and page

function applyPage(p) {
  const root = document.documentElement;
  const pal = palette(p);
  root.dataset.theme = p.theme;
  root.style.setProperty("--term-bg", pal.background);
  document.querySelector('meta[name="color-scheme"]')?.setAttribute("content", p.theme === "light" ? "light" : "dark");
}

function applyTerminal(term, p) {
  for (const [k, v] of Object.entries(xtermOptions(p))) {
    if (k === "theme" || term.options[k] !== v) term.options[k] = v;
  }
}

// ---------------------------------------------------------- settings panel

const $ = (id) => document.getElementById(id);
const FORM_KEYS = ["fontSize", "fontFamily", "theme", "scrollback", "cursorStyle", "cursorBlink", "copyOnSelect", "osc52", "keybar"];
const expand = (c) => (c.length === 4 ? `#${c[1]}${c[1]}${c[2]}${c[2]}${c[3]}${c[3]}` : c).toLowerCase();

/**
 * Apply preferences to `term` and the page now and on every change, and run
 * the settings panel (#settings).  `onApplied()` after each change (the page
 * refits the terminal); `notify(text, level)` for what was ignored.
 */
export function install(term, { onApplied = () => {}, notify = () => {} } = {}) {
  const apply = (p) => {
    applyPage(p);
    applyTerminal(term, p);
    onApplied(p);
  };
  onChange(apply);
  applyPage(state.effective);
  if (state.errors.length) notify(`Ignored: ${state.errors.join("; ")}`, "warn");

  const panel = $("settings");
  const form = $("settings-form");
  if (!panel || !form) return;
  const f = form.elements;
  const grid = $("settings-colors");
  for (const name of COLOR_NAMES) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "color";
    input.name = `color.${name}`;
    label.append(input, " ", name);
    grid.append(label);
  }

  // The panel shows the effective values; Save stores what differs from the
  // defaults + the server's options, and drops this load's URL overrides.
  const base = () => merge(state.server);
  const fill = (p) => {
    for (const k of FORM_KEYS) {
      const el = f[k];
      if (el.type === "checkbox") el.checked = Boolean(p[k]);
      else el.value = String(p[k]);
    }
    const pal = palette(p);
    for (const name of COLOR_NAMES) f[`color.${name}`].value = expand(pal[name]);
  };
  const read = () => {
    const entries = FORM_KEYS.map((k) => [k, f[k].type === "checkbox" ? f[k].checked : f[k].value]);
    const { prefs, errors } = check(entries);
    const b = base();
    const pal = palette({ ...b, theme: prefs.theme ?? b.theme });
    const changed = {};
    for (const name of COLOR_NAMES) {
      const v = f[`color.${name}`].value.toLowerCase();
      if (v !== expand(pal[name])) changed[name] = v;
    }
    prefs.colors = changed;
    return { prefs, errors };
  };
  // What was ignored (a bad URL parameter...) stays on the settings button
  // and in the panel until the next Save or Reset.
  const showIgnored = () => {
    const btn = $("btn-settings");
    const text = state.errors.length ? `Ignored: ${state.errors.join("; ")}` : "";
    $("settings-note").textContent = text;
    $("settings-note").hidden = !text;
    if (!btn) return;
    btn.title = text ? `Settings — ${text}` : "Settings";
    if (text) btn.dataset.warn = "";
    else delete btn.dataset.warn;
  };
  showIgnored();
  const open = () => {
    fill(state.effective);
    showIgnored();
    panel.hidden = false;
    f.fontSize.focus();
  };
  const close = () => {
    panel.hidden = true;
    term.focus();
  };
  // Another theme in the panel shows that theme's palette (colour edits reset).
  f.theme.addEventListener("change", () => {
    const pal = palette({ ...base(), theme: f.theme.value });
    for (const name of COLOR_NAMES) f[`color.${name}`].value = expand(pal[name]);
  });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const { prefs, errors } = read();
    if (errors.length) {
      $("settings-note").textContent = errors.join("; ");
      $("settings-note").hidden = false;
      return;
    }
    const b = base();
    const stored = {};
    for (const [k, v] of Object.entries(prefs)) {
      if (k === "colors") {
        if (Object.keys(v).length) stored.colors = v;
      } else if (v !== b[k]) stored[k] = v;
    }
    state.stored = stored;
    state.url = {};
    state.errors = [];
    dropUrlPrefs();
    writeStored(stored);
    recompute();
    showIgnored();
    close();
  });
  $("settings-reset").addEventListener("click", () => {
    state.stored = {};
    state.url = {};
    state.errors = [];
    dropUrlPrefs();
    writeStored({});
    recompute();
    showIgnored();
    fill(state.effective);
  });
  $("settings-cancel").addEventListener("click", close);
  form.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") close();
  });
  $("btn-settings")?.addEventListener("click", () => (panel.hidden ? open() : close()));
}

// Saved settings replace this load's URL overrides: take them out of the
// address bar too, so that a reload shows what was saved.
function dropUrlPrefs() {
  const url = new URL(location.href);
  for (const key of [...url.searchParams.keys()]) {
    if ((Object.hasOwn(SPEC, key) && key !== "colors") || key.startsWith("color.")) url.searchParams.delete(key);
  }
  if (url.href !== location.href) history.replaceState(history.state, "", url.href);
}
