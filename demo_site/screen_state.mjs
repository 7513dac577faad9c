// The terminals' screens across a page reload (issue 15.1, 15.5): saved when
// the page hides or unloads, written back before the resumed streams continue,
// so a reload shows every tab's screen exactly as it was -- prompt,
// scrollback, a running vim or top -- without anything being typed.
// docs/page.md explains the design.
//
// One sessionStorage document (key STORAGE_KEY, one per browser tab) holds the
// page's terminal tabs in order: {v: 2, active: <channel id>, tabs: [{id, name,
// title, screen}]}, where `screen` is one terminal's record (or null):
//   * `screen`: what xterm's own SerializeAddon writes -- the normal buffer with
//     at most SCROLLBACK_STEPS[0] lines of scrollback, the alternate buffer (vim,
//     top, less), the cursor and the terminal modes (application cursor keys,
//     bracketed paste, mouse tracking...);
//   * `pending`: output already handed to xterm but not parsed yet (term.write is
//     asynchronous; the serialized buffer holds only what xterm has parsed);
//   * `offset`: the channel's output position (bytes since it opened: the count
//     the runtime's resume state stores as `rx`) that screen + pending represent.
//
// Exactly once.  The runtime hands output to the page as it receives it, and
// the page calls `persist()` right before saving, in the same task: the resume
// state's position and `offset` are one number, so the server retransmits from
// the byte after the saved screen (no duplicate, no gap).  On restore the two
// are compared again (the channel's `resumedFrom`): bytes the server resends
// that the saved screen already shows are skipped; if the server resumes past
// the screen (a state saved without this page's help), the gap is reported,
// never hidden.
//
// Bound: the document is at most recordLimit(n) * n UTF-16 code units of JSON
// for n tabs -- 1 MiB with one tab, MAX_TOTAL_CHARS (2 MiB) with two or more
// (sessionStorage allows ~5 MB per origin, and the runtime's resume state and
// the wrapped token live there too).  Each record gets an equal share: the
// scrollback shrinks (1000, 200, then 0 lines) until it fits, and pending
// output that still does not fit loses its oldest bytes -- counted in
// `dropped` and reported after the reload.  Pending output is at most one
// credit window (2 MiB) per channel and is only large in the middle of a
// flood.  The page's memory for this is a list of the chunks xterm has not
// parsed yet -- references to the chunks xterm itself holds, so also bounded
// by the credit window.

export const STORAGE_KEY = "nimbus-demo.screen";
/** Largest stored record of one terminal, in UTF-16 code units (what sessionStorage counts). */
export const MAX_CHARS = 1 << 20;
/** Largest stored document (every tab's record together). */
export const MAX_TOTAL_CHARS = 2 << 20;
/** Longest tab name or title kept (characters). */
export const MAX_TITLE = 256;
/** Scrollback lines tried, largest first, until the record fits its share. */
export const SCROLLBACK_STEPS = Object.freeze([1000, 200, 0]);
const VERSION = 1; // one record
const DOC_VERSION = 2; // the document of all tabs

/** The whole document's bound for `n` tabs: 1 MiB each, at most MAX_TOTAL_CHARS. */
export function documentLimit(n) {
  return Math.min(MAX_TOTAL_CHARS, Math.max(1, n) * MAX_CHARS);
}

function storageOrNull() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null; // storage disabled
  }
}

function concat(chunks, total) {
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

function toBase64(bytes) {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

function fromBase64(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

const isCount = (n) => Number.isSafeInteger(n) && n >= 0;

function checkRecord(r) {
  if (!r || r.v !== VERSION || typeof r.screen !== "string" || typeof r.pending !== "string") return null;
  if (![r.id, r.offset, r.cols, r.rows, r.dropped].every(isCount) || !r.cols || !r.rows) return null;
  return r;
}

/**
 * Follows the output of one terminal's channel into xterm and makes / restores
 * the record of its screen with the stream position it represents.
 * `SerializeAddon` is the addon's class (window.SerializeAddon.SerializeAddon);
 * without it nothing is saved and a reload shows an empty screen as before.
 * Storage is the document's business (saveScreens / takeScreens below).
 */
export class ScreenKeeper {
  constructor(term, { SerializeAddon } = {}) {
    this.term = term;
    this.serializer = null;
    if (typeof SerializeAddon === "function") {
      this.serializer = new SerializeAddon();
      term.loadAddon(this.serializer);
    }
    this._channel = null;
    this._base = 0; // position of the first byte this page got for the channel
    this._delivered = 0; // bytes handed to fresh() since follow()
    this._skip = 0; // bytes still to drop: the restored screen shows them already
    this._gen = 0; // bumps on follow(): write callbacks of an older channel are ignored
    this._pending = []; // chunks given to term.write whose callback has not run, in order
    this._head = 0;
    this._pendingBytes = 0;
    this._restored = null; // {channel, skip} from restore(), taken by follow()
    /** What happened (the page's test hooks show it). */
    this.status = { restored: false, gap: 0, skipped: 0, dropped: 0, savedChars: 0, savedLines: null, offset: null };
  }

  /** Whether a record can be made (the addon loaded). */
  get enabled() {
    return this.serializer !== null;
  }

  /** Output position the screen (with pending output) represents for the attached channel. */
  get offset() {
    return this._base + this._delivered;
  }

  /** Bytes handed to xterm and not parsed yet. */
  get pendingBytes() {
    return this._pendingBytes;
  }

  /**
   * The channel now on screen.  A restored channel continues from its
   * `resumedFrom`; a new one starts at 0 (and any saved record is stale).
   */
  follow(ch, { resumed = false } = {}) {
    this._gen++;
    this._pending = [];
    this._head = 0;
    this._pendingBytes = 0;
    this._channel = ch;
    this._delivered = 0;
    this._base = resumed ? ch.resumedFrom ?? 0 : 0;
    const restored = this._restored;
    this._restored = null;
    this._skip = restored && restored.channel === ch ? restored.skip : 0;
  }

  /**
   * A chunk of the channel's output, before it goes to xterm: counts its
   * position and returns what is new -- null, or a tail, only for bytes a
   * restored screen already shows (the server resent them).
   */
  fresh(bytes) {
    this._delivered += bytes.length;
    if (this._skip === 0) return bytes;
    const n = Math.min(this._skip, bytes.length);
    this._skip -= n;
    this.status.skipped += n;
    return n === bytes.length ? null : bytes.subarray(n);
  }

  /** `bytes` go to term.write now: call the returned function from its write callback. */
  writing(bytes) {
    const gen = this._gen;
    this._pending.push(bytes);
    this._pendingBytes += bytes.length;
    return () => {
      if (gen !== this._gen) return;
      const b = this._pending[this._head];
      this._pending[this._head++] = undefined;
      this._pendingBytes -= b.length;
      if (this._head >= 1024 && this._head * 2 >= this._pending.length) {
        this._pending = this._pending.slice(this._head);
        this._head = 0;
      }
    };
  }

  /**
   * The record of channel `ch`'s screen with its position, as JSON of at most
   * `maxChars` characters, or null (no addon, another channel, or not even
   * the visible screen fits).  Call right after the runtime persisted its
   * resume state, in the same task.
   */
  record(ch, maxChars = MAX_CHARS) {
    if (!this.enabled || !ch || ch !== this._channel || ch.state === "closed") return null;
    const chunks = this._pending.slice(this._head);
    let pending = concat(chunks, this._pendingBytes);
    const head = {
      v: VERSION,
      id: ch.id,
      offset: this.offset,
      cols: this.term.cols,
      rows: this.term.rows,
      lines: 0,
      dropped: 0,
      savedAt: Date.now(),
      screen: "",
      pending: "",
    };
    let json = null;
    for (const lines of SCROLLBACK_STEPS) {
      head.lines = lines;
      head.screen = this.serializer.serialize({ scrollback: lines });
      const size = JSON.stringify(head).length; // the screen's escapes counted as JSON writes them
      const room = maxChars - size;
      const need = 4 * Math.ceil(pending.length / 3);
      if (need <= room || lines === SCROLLBACK_STEPS[SCROLLBACK_STEPS.length - 1]) {
        if (room < 0) break; // not even the visible screen fits
        if (need > room) {
          const keep = Math.floor(room / 4) * 3;
          head.dropped = pending.length - keep;
          pending = pending.subarray(head.dropped);
        }
        head.pending = toBase64(pending);
        json = JSON.stringify(head);
        break;
      }
    }
    if (json === null) return null;
    Object.assign(this.status, { savedChars: json.length, savedLines: head.lines, offset: head.offset, dropped: head.dropped });
    return json;
  }

  /**
   * Before attaching a channel restored by a resume: write its saved record
   * `rec` (from takeScreens) back, at the size it had, and arrange for
   * follow() to skip what the server resends of it.  Resolves with
   * {restored, gap, skip}: `gap` bytes of output are missing from the screen
   * (0 when it is exact).
   */
  async restore(ch, saved) {
    const rec = saved ? checkRecord(saved) : null;
    if (!rec || !ch || rec.id !== ch.id || ch.resumedFrom == null) return { restored: false, gap: 0, skip: 0 };
    const from = ch.resumedFrom;
    const skip = Math.max(0, rec.offset - from);
    const gap = Math.max(0, from - rec.offset) + rec.dropped;
    const term = this.term;
    term.reset();
    if (term.cols !== rec.cols || term.rows !== rec.rows) term.resize(rec.cols, rec.rows);
    await new Promise((resolve) => term.write(rec.screen, resolve));
    if (rec.pending) await new Promise((resolve) => term.write(fromBase64(rec.pending), resolve));
    this._restored = { channel: ch, skip };
    Object.assign(this.status, { restored: true, gap, skipped: 0, dropped: rec.dropped });
    return { restored: true, gap, skip };
  }
}

const cut = (text) => (typeof text === "string" ? text.slice(0, MAX_TITLE) : "");

/**
 * Save every tab -- `tabs`: [{ch, keeper, name, title}] in order, `active`:
 * the channel id on screen -- as one document, in one setItem.  Each record
 * gets an equal share of documentLimit(n).  If the storage refuses it (over
 * the origin's quota), the order and titles are saved without the screens.
 * Returns {chars, records} (chars 0: nothing saved).
 */
export function saveScreens(tabs, { active = null, storage = storageOrNull() } = {}) {
  if (!storage) return { chars: 0, records: 0 };
  const live = tabs.filter((t) => t.ch && t.ch.state !== "closed");
  if (!live.length) {
    forgetScreens(storage);
    return { chars: 0, records: 0 };
  }
  const entry = (t, screen) => `{"id":${t.ch.id},"name":${JSON.stringify(cut(t.name))},"title":${JSON.stringify(cut(t.title))},"screen":${screen}}`;
  const doc = (parts) => `{"v":${DOC_VERSION},"active":${JSON.stringify(active ?? null)},"tabs":[${parts.join(",")}]}`;
  const skeleton = doc(live.map((t) => entry(t, "null")));
  const share = Math.floor((documentLimit(live.length) - skeleton.length) / live.length) + 4; // "null" is replaced
  let records = 0;
  const parts = live.map((t) => {
    const json = share > 0 ? t.keeper?.record(t.ch, share) : null;
    if (json) records++;
    return entry(t, json ?? "null");
  });
  for (const json of [doc(parts), skeleton]) {
    try {
      storage.setItem(STORAGE_KEY, json);
      return { chars: json.length, records: json === skeleton ? 0 : records };
    } catch {
      /* over the quota: try the order and titles alone */
    }
  }
  forgetScreens(storage); // better nothing than a stale screen
  return { chars: 0, records: 0 };
}

/**
 * The saved document, removed from storage (a record is used once):
 * {active, tabs: [{id, name, title, screen}]}, or null.
 */
export function takeScreens(storage = storageOrNull()) {
  let json = null;
  try {
    json = storage?.getItem(STORAGE_KEY) ?? null;
  } catch {
    return null;
  }
  forgetScreens(storage);
  if (!json) return null;
  let d;
  try {
    d = JSON.parse(json);
  } catch {
    return null;
  }
  if (!d || d.v !== DOC_VERSION || !Array.isArray(d.tabs)) return null;
  const tabs = d.tabs
    .filter((t) => t && isCount(t.id))
    .map((t) => ({ id: t.id, name: cut(t.name), title: cut(t.title), screen: t.screen && typeof t.screen === "object" ? t.screen : null }));
  return { active: isCount(d.active) ? d.active : null, tabs };
}

/** Drop the saved document (a new session, or sessions that ended). */
export function forgetScreens(storage = storageOrNull()) {
  try {
    storage?.removeItem(STORAGE_KEY);
  } catch {
    /* storage disabled */
  }
}
