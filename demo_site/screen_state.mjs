// The terminal's screen across a page reload (issue 15.1): saved when the page
// hides or unloads, written back before the resumed stream continues, so a
// reload shows the screen exactly as it was -- prompt, scrollback, a running
// vim or top -- without anything being typed.  docs/page.md explains the design.
//
// What one saved record holds (sessionStorage, key STORAGE_KEY, one per tab):
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
// Bound: one record is at most MAX_CHARS UTF-16 code units of JSON (1 MiB;
// sessionStorage allows ~5 MB per origin): the scrollback shrinks (1000, 200,
// then 0 lines) until it fits, and pending output that still does not fit
// loses its oldest bytes -- counted in `dropped` and reported after the reload.
// Pending output is at most one credit window (2 MiB) and is only large in the
// middle of a flood.  The page's memory for this is a list of the chunks xterm
// has not parsed yet -- references to the chunks xterm itself holds, so also
// bounded by the credit window.

export const STORAGE_KEY = "nimbus-demo.screen";
/** Largest stored record, in UTF-16 code units (what sessionStorage counts). */
export const MAX_CHARS = 1 << 20;
/** Scrollback lines tried, largest first, until the record fits MAX_CHARS. */
export const SCROLLBACK_STEPS = Object.freeze([1000, 200, 0]);
const VERSION = 1;

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

function parseRecord(json) {
  let r;
  try {
    r = JSON.parse(json);
  } catch {
    return null;
  }
  if (!r || r.v !== VERSION || typeof r.screen !== "string" || typeof r.pending !== "string") return null;
  if (![r.id, r.offset, r.cols, r.rows, r.dropped].every(isCount) || !r.cols || !r.rows) return null;
  return r;
}

/**
 * Follows the output of the attached channel into xterm and saves / restores
 * the screen with the stream position it represents.  `SerializeAddon` is the
 * addon's class (window.SerializeAddon.SerializeAddon); without it, or without
 * sessionStorage, nothing is saved and a reload shows an empty screen as before.
 */
export class ScreenKeeper {
  constructor(term, { SerializeAddon, storage = storageOrNull(), key = STORAGE_KEY, maxChars = MAX_CHARS } = {}) {
    this.term = term;
    this.storage = storage;
    this.key = key;
    this.maxChars = maxChars;
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

  /** Whether saving is possible here (the addon loaded, sessionStorage usable). */
  get enabled() {
    return this.serializer !== null && this.storage !== null;
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
    if (!resumed) this.forget();
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
   * Save the screen of channel `ch` with its position (call right after the
   * runtime persisted its resume state, in the same task).  Returns the
   * record's size in characters, or 0 when nothing was saved.
   */
  save(ch) {
    if (!this.enabled) return 0;
    if (!ch || ch !== this._channel || ch.state === "closed") {
      this.forget();
      return 0;
    }
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
      const room = this.maxChars - size;
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
    if (json === null) {
      this.forget();
      return 0;
    }
    try {
      this.storage.setItem(this.key, json);
    } catch {
      this.forget(); // over the origin's quota: better nothing than a stale screen
      return 0;
    }
    Object.assign(this.status, { savedChars: json.length, savedLines: head.lines, offset: head.offset, dropped: head.dropped });
    return json.length;
  }

  /**
   * Before attaching a channel restored by a resume: write its saved screen
   * back (at the size it had), and arrange for follow() to skip what the
   * server resends of it.  Resolves with {restored, gap, skip}: `gap` bytes of
   * output are missing from the screen (0 when it is exact).
   */
  async restore(ch) {
    const rec = this._load();
    this.forget();
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

  /** Drop the saved record (a new session, or one that ended). */
  forget() {
    try {
      this.storage?.removeItem(this.key);
    } catch {
      /* storage disabled */
    }
  }

  _load() {
    try {
      const json = this.storage?.getItem(this.key);
      return json ? parseRecord(json) : null;
    } catch {
      return null;
    }
  }
}
