// The key bar of touch screens (issue 15.6): Esc, Tab, Ctrl, Alt, arrows and
// the characters phone keyboards hide (| ~ / -).  Ctrl and Alt are sticky:
// a tap arms one for the next key -- of the bar or of the phone's keyboard --
// and a second tap disarms it.  The keys go into xterm.js as typed input
// (term.input), so they take the page's one input path to the channel.
// Shown on touch screens (preference keybar: auto), or always (on) or never (off).

/** The test and debugging view (window.nimbusDemo.page.keybar). */
export const state = { visible: false, ctrl: false, alt: false, keys: 0 };

const ARROWS = { ArrowUp: "A", ArrowDown: "B", ArrowRight: "C", ArrowLeft: "D" };
// Ctrl with a character that is not in @A-Z[\]^_ (as xterm and VT terminals send it).
const CTRL_EXTRA = { " ": "\x00", "2": "\x00", "3": "\x1b", "4": "\x1c", "5": "\x1d", "6": "\x1e", "7": "\x1f", "8": "\x7f", "/": "\x1f", "-": "\x1f", "?": "\x7f", "|": "\x1c", "~": "\x1e" };

/** `ch` with Ctrl held: its control character, or `ch` itself if it has none. */
export function ctrlChar(ch) {
  if (Object.hasOwn(CTRL_EXTRA, ch)) return CTRL_EXTRA[ch];
  const c = ch.toUpperCase().charCodeAt(0);
  return ch.length === 1 && c >= 0x40 && c <= 0x5f ? String.fromCharCode(c & 0x1f) : ch;
}

/** What the key `key` sends with these modifiers (`appCursor`: DECCKM is set). */
export function sequence(key, { ctrl = false, alt = false, appCursor = false } = {}) {
  if (Object.hasOwn(ARROWS, key)) {
    const mod = 1 + (alt ? 2 : 0) + (ctrl ? 4 : 0);
    if (mod > 1) return `\x1b[1;${mod}${ARROWS[key]}`;
    return (appCursor ? "\x1bO" : "\x1b[") + ARROWS[key];
  }
  let seq = key === "Escape" ? "\x1b" : key === "Tab" ? "\t" : ctrl ? ctrlChar(key) : key;
  if (alt) seq = `\x1b${seq}`;
  return seq;
}

let render = () => {};

function release() {
  if (!state.ctrl && !state.alt) return;
  state.ctrl = false;
  state.alt = false;
  render();
}

/**
 * Typed input `data` with the armed modifiers applied to its first character
 * (then released).  The page calls this on everything xterm.js reports as typed.
 */
export function modify(data) {
  // An escape sequence (a terminal report, a mouse event, a hardware arrow key)
  // goes through as it is and leaves the modifier armed.
  if ((!state.ctrl && !state.alt) || !data || data.startsWith("\x1b")) return data;
  const first = String.fromCodePoint(data.codePointAt(0));
  let out = (state.ctrl ? ctrlChar(first) : first) + data.slice(first.length);
  if (state.alt) out = `\x1b${out}`;
  release();
  return out;
}

export function isTouch() {
  return Boolean(globalThis.matchMedia?.("(pointer: coarse)").matches) || (navigator.maxTouchPoints ?? 0) > 0;
}

/**
 * Run the key bar (#keybar) for `term`.  `prefs()` gives the preferences in
 * force (keybar: auto | on | off); call the returned `update()` after they change.
 */
export function install(term, { prefs = () => ({}) } = {}) {
  const bar = document.getElementById("keybar");
  if (!bar) return () => {};
  const mods = { ctrl: bar.querySelector('[data-mod="ctrl"]'), alt: bar.querySelector('[data-mod="alt"]') };
  render = () => {
    for (const [name, el] of Object.entries(mods)) el?.setAttribute("aria-pressed", String(state[name]));
  };
  render();

  const press = (btn) => {
    if (btn.dataset.mod) {
      state[btn.dataset.mod] = !state[btn.dataset.mod];
      render();
      return;
    }
    const seq = sequence(btn.dataset.key, { ctrl: state.ctrl, alt: state.alt, appCursor: term.modes.applicationCursorKeysMode });
    release();
    state.keys += 1;
    term.input(seq, true);
  };
  // Act on pointerdown and keep the focus (and the phone's keyboard) in the
  // terminal: no focus move on mousedown, no synthetic click after a touch.
  bar.addEventListener("pointerdown", (ev) => {
    const btn = ev.target.closest("button");
    if (!btn) return;
    ev.preventDefault();
    press(btn);
  });
  bar.addEventListener("mousedown", (ev) => ev.preventDefault());
  bar.addEventListener("touchstart", (ev) => ev.preventDefault(), { passive: false });
  bar.addEventListener("click", (ev) => {
    const btn = ev.target.closest("button");
    if (btn && ev.detail === 0) press(btn); // a keyboard's Enter/Space on a focused key
  });

  const update = () => {
    const mode = prefs().keybar ?? "auto";
    const show = mode === "on" || (mode === "auto" && isTouch());
    state.visible = show;
    bar.hidden = !show;
    if (!show) release();
  };
  globalThis.matchMedia?.("(pointer: coarse)").addEventListener?.("change", update);
  update();
  return update;
}
