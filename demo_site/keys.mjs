// Clipboard the platform's way, clickable links, Unicode 11 widths (issue 15.2
// and 15.3), on xterm.js's own addons (vendor/xterm/addon-*.js, UMD bundles:
// window.ClipboardAddon, window.WebLinksAddon, window.Unicode11Addon).
//
// Shortcuts (docs/page-features.md):
//   Linux, Windows  Ctrl+Shift+C copy, Ctrl+Shift+V paste; Ctrl+C copies when
//                   text is selected (and clears the selection), else it is ^C
//   macOS           ⌘C copy, ⌘V paste; Ctrl+C is always ^C
//   everywhere      Ctrl+Insert copy, Shift+Insert paste (xterm.js / the browser)
// A paste is the browser's own paste event, which xterm.js turns into
// terminal input -- bracketed (ESC[200~ ... ESC[201~) when the application
// asked for it -- so no clipboard-read permission is ever needed.
// OSC 52: the remote side may *write* the clipboard only when the user turned
// it on (preference osc52), at most OSC52_MAX_CHARS characters; it may never
// *read* it (a query is swallowed, not answered).

/** Longest clipboard text the remote side may set through OSC 52 (characters). */
export const OSC52_MAX_CHARS = 1 << 20;
/** The longest base64 payload looked at: OSC52_MAX_CHARS characters of up to 3 UTF-8
 *  bytes each (xterm.js's own OSC parser stops at 10 MB anyway). */
export const OSC52_MAX_BASE64 = OSC52_MAX_CHARS * 4; // 3 bytes -> 4 base64 characters

/** The test and debugging view (window.nimbusDemo.page.clipboard). */
export const state = {
  platform: "other", // mac | other
  copies: 0,
  lastCopy: null, // {how, chars}
  copyErrors: 0,
  links: [], // last 20 links opened
  osc52: { writes: 0, refused: 0, reads: 0, lastRefusal: null },
  unicode: null, // xterm's active Unicode version
};

/** macOS (or iOS), as xterm.js itself decides it: navigator.platform. */
export function isMac(nav = globalThis.navigator) {
  const p = nav?.platform || nav?.userAgentData?.platform || "";
  return /^(mac|iphone|ipad|ipod)/i.test(p);
}

// The letter of a shortcut: the character typed when it is a Latin letter,
// else the physical key (KeyC), so that Ctrl+Shift+C works on other layouts.
function letter(ev) {
  const k = ev.key?.length === 1 ? ev.key.toLowerCase() : "";
  if (/^[a-z]$/.test(k)) return k;
  return /^Key[A-Z]$/.test(ev.code ?? "") ? ev.code.slice(3).toLowerCase() : k;
}

/**
 * Load the addons into `term` and take the clipboard shortcuts.
 * `prefs()` returns the preferences in force (copyOnSelect, osc52);
 * `notify(text, level)` tells the user in the status bar.
 */
export function install(term, { prefs = () => ({}), notify = () => {} } = {}) {
  const mac = isMac();
  state.platform = mac ? "mac" : "other";

  // ----------------------------------------------------------------- copy
  // Through the async Clipboard API where there is one (secure contexts),
  // else the browser's copy command, whose copy event xterm.js fills with the
  // selection (plain http to another host has no navigator.clipboard).
  const copied = (how, chars) => {
    state.copies += 1;
    state.lastCopy = { how, chars };
    notify(`Copied ${chars} character${chars === 1 ? "" : "s"}`, "ok");
  };
  const copyFailed = (e) => {
    state.copyErrors += 1;
    notify(`Could not copy: ${e?.message ?? e}`, "warn");
  };
  const execCopy = () => {
    try {
      return document.execCommand("copy");
    } catch {
      return false;
    }
  };
  function copySelection(how) {
    const text = term.getSelection();
    if (!text) return;
    if (!navigator.clipboard?.writeText) {
      if (execCopy()) copied(how, text.length);
      else copyFailed("the browser refused");
      return;
    }
    navigator.clipboard.writeText(text).then(
      () => copied(how, text.length),
      (e) => (execCopy() ? copied(how, text.length) : copyFailed(e)),
    );
  }

  // ------------------------------------------------------------ shortcuts
  // false: xterm.js leaves the key alone (no ^C/^V sent); a paste shortcut
  // keeps the browser's default, which fires the paste event.
  term.attachCustomKeyEventHandler((ev) => {
    if (ev.type !== "keydown") return true;
    const k = letter(ev);
    if (mac) {
      if (ev.metaKey && !ev.ctrlKey && !ev.altKey && (k === "c" || k === "v")) {
        if (k === "c" && term.hasSelection()) {
          if (navigator.clipboard?.writeText) ev.preventDefault(); // else the native copy event does it
          if (navigator.clipboard?.writeText) copySelection("cmd+c");
        }
        return false;
      }
      return true;
    }
    if (ev.ctrlKey && ev.shiftKey && !ev.altKey && !ev.metaKey && (k === "c" || k === "v")) {
      if (k === "c") {
        ev.preventDefault(); // not the browser's Ctrl+Shift+C (DevTools)
        copySelection("ctrl+shift+c");
      }
      return false;
    }
    if (ev.ctrlKey && !ev.shiftKey && !ev.altKey && !ev.metaKey && k === "c" && term.getSelection()) {
      ev.preventDefault();
      copySelection("ctrl+c");
      term.clearSelection();
      return false;
    }
    return true;
  });

  // Copy on select: when a mouse selection ends (not on every drag step).
  term.element?.addEventListener("mouseup", () => {
    if (prefs().copyOnSelect && term.hasSelection()) copySelection("select");
  });

  // ------------------------------------------------------------------ links
  // http(s) URLs in the output open in a new tab, without window.opener and
  // without a Referer (the page's address may hold a ?token= a moment).
  if (window.WebLinksAddon) {
    term.loadAddon(
      new window.WebLinksAddon.WebLinksAddon((_ev, uri) => {
        let url;
        try {
          url = new URL(uri);
        } catch {
          return;
        }
        if (url.protocol !== "http:" && url.protocol !== "https:") return;
        state.links.push(url.href);
        if (state.links.length > 20) state.links.shift();
        window.open(url.href, "_blank", "noopener,noreferrer");
      }),
    );
  }

  // ---------------------------------------------------------------- Unicode
  // Unicode 11 widths: CJK and emoji take two cells, as in the shell's wcwidth.
  if (window.Unicode11Addon) {
    term.loadAddon(new window.Unicode11Addon.Unicode11Addon());
    term.unicode.activeVersion = "11";
    state.unicode = term.unicode.activeVersion;
  }

  // ----------------------------------------------------------------- OSC 52
  // The addon decodes OSC 52 and writes through `provider`; the guard,
  // registered after it (xterm.js tries the newest handler first; true stops
  // there), swallows reads, writes while the preference is off, and
  // oversized ones, before the addon decodes anything.
  if (window.ClipboardAddon) {
    const refuse = (why) => {
      state.osc52.refused += 1;
      state.osc52.lastRefusal = why;
      if (why === "off" && state.osc52.refused === 1) {
        notify("The remote side tried to set the clipboard (OSC 52); allow it in Settings", "warn");
      } else if (why === "too large") {
        notify(`Clipboard write from the remote side refused: over ${OSC52_MAX_CHARS} characters`, "warn");
      }
    };
    const provider = {
      readText: () => "", // never reached: the guard swallows queries
      // Not awaited by the parser: a pending permission must not stall the output.
      writeText: (selection, text) => {
        if (selection !== "" && !/[cs]/.test(selection)) return; // only the clipboard (c, s or default)
        if (!text) return refuse("empty");
        if (text.length > OSC52_MAX_CHARS) return refuse("too large");
        if (!navigator.clipboard?.writeText) return refuse("no clipboard API");
        navigator.clipboard.writeText(text).then(
          () => {
            state.osc52.writes += 1;
            notify(`The remote side set the clipboard (${text.length} characters)`, "ok");
          },
          () => refuse("denied by the browser"),
        );
      },
    };
    term.loadAddon(new window.ClipboardAddon.ClipboardAddon(undefined, provider));
    term.parser.registerOscHandler(52, (data) => {
      const semi = data.indexOf(";");
      if (semi < 0) return true; // malformed: nothing to do
      const payload = data.slice(semi + 1);
      if (payload === "?") {
        state.osc52.reads += 1;
        return true;
      }
      if (!prefs().osc52) refuse("off");
      else if (payload.length > OSC52_MAX_BASE64) refuse("too large");
      else return false; // the addon's handler decodes and writes it
      return true;
    });
  }
  return state;
}
