// Several terminals in one page (issue 15.5): a tab strip and one xterm.js
// Terminal per channel of the one connection.  This module owns the strip,
// the terminals (each with its fit addon, its ScreenKeeper and the page's
// addons, installed by the page's `setup(term)`) and the tab shortcuts; the
// page (app.mjs) decides what runs in a tab -- it opens, attaches and closes
// the channels through nimbus_adapter.mjs.  No protocol rule here: how many
// channels a session may hold is the runtime's to say (openSession refuses).
//
// Only the tab on screen is shown, fitted and focused.  A hidden tab's pane is
// display:none: xterm.js still parses what is written to it (its write buffer
// runs on timers, not on rendering) and calls the write callbacks, so each
// channel's credit keeps following its own terminal and a hidden tab never
// stalls the others; it is only not rendered (xterm pauses its renderer while
// the element is not visible) and is fitted when it is shown again.
//
// Shortcuts (docs/page-features.md), taken before xterm.js sees the key:
//   Alt+Shift+T  new tab         Ctrl+Shift+T too, where the browser lets a page
//   Alt+Shift+W  close the tab   have it (an installed app or full screen)
//   Alt+1 .. Alt+9               the tab at that place (when there is one)
//   Ctrl+Shift+PageUp / PageDown the previous / next tab

import { ScreenKeeper } from "./screen_state.mjs";

/** The test and debugging view (window.nimbusDemo.tabs adds the tabs themselves). */
export const state = { created: 0, closed: 0, switches: 0, shortcuts: 0 };

// The letter of a shortcut (KeyT on any layout), as keys.mjs reads them.
function letter(ev) {
  const k = ev.key?.length === 1 ? ev.key.toLowerCase() : "";
  if (/^[a-z]$/.test(k)) return k;
  return /^Key[A-Z]$/.test(ev.code ?? "") ? ev.code.slice(3).toLowerCase() : k;
}

/** What a keydown asks of the tabs: {new} | {close} | {index} | {step}, or null. */
export function shortcutOf(ev) {
  if (ev.type !== "keydown" || ev.metaKey) return null;
  const k = letter(ev);
  if (ev.shiftKey && !ev.altKey !== !ev.ctrlKey) {
    // Alt+Shift or Ctrl+Shift (not both)
    if (k === "t") return { new: true };
    if (k === "w") return { close: true };
  }
  if (ev.altKey && !ev.ctrlKey && !ev.shiftKey) {
    const m = /^Digit([1-9])$/.exec(ev.code ?? "") ?? /^([1-9])$/.exec(ev.key ?? "");
    if (m) return { index: Number(m[1]) - 1 };
  }
  if (ev.ctrlKey && ev.shiftKey && !ev.altKey && (ev.key === "PageUp" || ev.key === "PageDown")) {
    return { step: ev.key === "PageUp" ? -1 : 1 };
  }
  return null;
}

/**
 * The tabs of the page.  `host`: the element the terminals live in; `strip`:
 * the tab list; `newButton`: the "+" button.  `options()` gives the xterm.js
 * options in force; `setup(term)` installs the page's addons on a new
 * terminal; hooks: `onInput(tab, data)`, `onBinary(tab, data)`,
 * `onResize(tab, cols, rows)`, `onActivate(tab)`, `onNew()`, `onClose(tab)`,
 * `onTitle(tab)`.
 */
export class Tabs {
  constructor({ host, strip, newButton, Terminal, FitAddon, SerializeAddon, options, setup, hooks }) {
    this.host = host;
    this.strip = strip;
    this.newButton = newButton;
    this.Terminal = Terminal;
    this.FitAddon = FitAddon;
    this.SerializeAddon = SerializeAddon;
    this.options = options;
    this.setup = setup;
    this.hooks = hooks;
    this.list = []; // in strip order
    this.active = null;
    /** {cols, rows} every terminal keeps instead of being fitted to its pane (a viewer's page), or null. */
    this.fixedSize = null;
    this._keys = 0;
    newButton?.addEventListener("click", () => hooks.onNew());
    newButton?.addEventListener("mousedown", (ev) => ev.preventDefault()); // the focus stays in the terminal
    // Capture phase on the window: before xterm.js's own keydown handler.
    addEventListener("keydown", (ev) => this._onKey(ev), true);
  }

  get count() {
    return this.list.length;
  }

  /** A new tab with its terminal (not attached to a channel yet); shown when `show`. */
  create({ name = "", title = "", show = true } = {}) {
    const tab = {
      key: ++this._keys,
      name,
      title,
      ch: null,
      phase: "opening", // opening | ready | exited
      exit: null,
      resumed: false,
      rx: 0,
      written: 0,
      offs: [],
    };
    tab.pane = document.createElement("div");
    tab.pane.className = "pane";
    tab.pane.dataset.key = String(tab.key);
    this.host.append(tab.pane);
    // Opened while visible, so that xterm.js measures its font and the fit
    // has a size; hidden again below unless it is the one shown.
    for (const t of this.list) t.pane.hidden = true;
    const term = new this.Terminal({ allowProposedApi: true, ...this.options() });
    tab.term = term;
    tab.fit = new this.FitAddon();
    term.loadAddon(tab.fit);
    term.open(tab.pane);
    tab.keeper = new ScreenKeeper(term, { SerializeAddon: this.SerializeAddon });
    this.setup(term);
    this._fit(tab);
    term.onData((d) => this.hooks.onInput(tab, d));
    term.onBinary((d) => this.hooks.onBinary(tab, d));
    term.onResize(({ cols, rows }) => this.hooks.onResize(tab, cols, rows));
    term.onTitleChange((t) => {
      tab.title = t;
      this.render();
      this.hooks.onTitle(tab);
    });
    this.list.push(tab);
    state.created += 1;
    if (show || !this.active) this.activate(tab);
    else {
      tab.pane.hidden = true;
      if (this.active) this.active.pane.hidden = false;
      this.render();
    }
    return tab;
  }

  /** Show `tab` (fitted, focused); the others hide and keep running. */
  activate(tab) {
    if (!tab || !this.list.includes(tab)) return;
    const changed = this.active !== tab;
    this.active = tab;
    for (const t of this.list) t.pane.hidden = t !== tab;
    // Preferences changed while the tab was hidden (a hidden terminal cannot
    // measure its font): applied now that it is visible.
    const opts = this.options();
    for (const [k, v] of Object.entries(opts)) {
      if (k !== "theme" && tab.term.options[k] !== v) tab.term.options[k] = v;
    }
    if (changed) {
      if (opts.theme) tab.term.options.theme = opts.theme;
      state.switches += 1;
    }
    this._fit(tab);
    tab.term.focus();
    this.render();
    this.hooks.onActivate(tab);
  }

  /** The tab at `index` (0-based), or the one `step` places from the active one (wrapping). */
  select({ index, step }) {
    if (!this.list.length) return;
    if (index != null) return void this.activate(this.list[index]);
    const at = this.list.indexOf(this.active);
    this.activate(this.list[(at + step + this.list.length) % this.list.length]);
  }

  /** Remove `tab` and its terminal (the page closed its channel); shows a neighbour. */
  remove(tab) {
    const at = this.list.indexOf(tab);
    if (at < 0) return;
    this.detach(tab);
    this.list.splice(at, 1);
    tab.term.dispose();
    tab.pane.remove();
    state.closed += 1;
    if (this.active === tab) {
      this.active = null;
      const next = this.list[Math.min(at, this.list.length - 1)];
      if (next) this.activate(next);
    }
    this.render();
  }

  /** Remove every tab (the connection they belonged to is gone). */
  clear() {
    for (const tab of [...this.list]) this.remove(tab);
  }

  /** Stop listening to `tab`'s channel. */
  detach(tab) {
    for (const off of tab.offs) off();
    tab.offs = [];
  }

  /** Fit the tab on screen to its pane. */
  fitActive() {
    if (this.active) this._fit(this.active);
  }

  focus() {
    this.active?.term.focus();
  }

  /** Keep every terminal at `size` ({cols, rows}) instead of fitting it (null: fit again). */
  setFixedSize(size) {
    this.fixedSize = size ? { cols: size.cols, rows: size.rows } : null;
    this.fitActive();
  }

  _fit(tab) {
    const fixed = this.fixedSize;
    if (fixed) {
      if (tab.term.cols !== fixed.cols || tab.term.rows !== fixed.rows) tab.term.resize(fixed.cols, fixed.rows);
      return;
    }
    try {
      tab.fit.fit();
    } catch {
      /* not laid out yet */
    }
  }

  /** What the strip shows for `tab`: the terminal's title, else its name. */
  label(tab) {
    return tab.title || tab.name || "shell";
  }

  /** Redraw the strip: one tab per terminal, in order, the active one selected. */
  render() {
    const strip = this.strip;
    if (!strip) return;
    strip.replaceChildren(
      ...this.list.map((tab, i) => {
        const el = document.createElement("div");
        el.className = "tab";
        el.setAttribute("role", "tab");
        el.dataset.key = String(tab.key);
        el.dataset.phase = tab.phase;
        el.setAttribute("aria-selected", String(tab === this.active));
        el.title = `${this.label(tab)} (Alt+${i + 1})`;
        const num = document.createElement("span");
        num.className = "tab-num";
        num.textContent = String(i + 1);
        const text = document.createElement("span");
        text.className = "tab-label";
        text.textContent = this.label(tab); // textContent: the title comes from the remote side
        const close = document.createElement("button");
        close.type = "button";
        close.className = "tab-close";
        close.title = "Close this terminal (Alt+Shift+W)";
        close.setAttribute("aria-label", `Close terminal ${i + 1}`);
        close.textContent = "×";
        close.addEventListener("click", (ev) => {
          ev.stopPropagation();
          this.hooks.onClose(tab);
        });
        el.append(num, text, close);
        el.addEventListener("mousedown", (ev) => ev.preventDefault());
        el.addEventListener("click", () => this.activate(tab));
        return el;
      }),
    );
  }

  _onKey(ev) {
    const what = shortcutOf(ev);
    if (!what || !this.list.length) return;
    if (what.index != null && what.index >= this.list.length) return; // no such tab: the shell's Alt+digit
    // Not while a form (connection, settings, token) has the keyboard.
    if (ev.target instanceof Element && ev.target.closest("form, .overlay:not([hidden])")) return;
    ev.preventDefault();
    ev.stopPropagation();
    state.shortcuts += 1;
    if (what.new) this.hooks.onNew();
    else if (what.close) this.hooks.onClose(this.active);
    else this.select(what);
  }
}
