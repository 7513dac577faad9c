// Share links on the page (issue 18): the owner's "Share…" dialog and the
// viewers panel, and the few things a viewer's page needs (its banner, the
// shared terminal's size across a reload).
//
// Owner.  When the server makes share links (caps.share: app.mjs passes
// conn.share to setAvailable), the status bar has "Share…": a small dialog
// asks read-only or read-write (read-write is warned: whoever opens the link
// can type into your shell) and how long the link lives (1 h by default), then
// shows the link with a Copy button.  The link is this page's address with
// ?share=TOKEN (the runtime builds it: ch.share()).  The status bar counts the
// viewers of the terminal on screen ("👁 2"); a click opens the list -- one
// entry per link with its viewers (address, mode, since when) and Revoke.
//
// Viewer.  A page opened with ?share=TOKEN connects with the token (app.mjs)
// and shows one terminal at the owner's size (letterboxed: never fitted to
// the window), under a banner "Watching read-only — shared by the owner".
//
// No protocol rule here: whether the server shares at all is its announcement,
// what a viewer may do is the server's to enforce (a read-only viewer's page
// just does not send input), how many links a terminal may have is the
// runtime's to say (ch.share rejects, and the dialog shows why).  Peers and
// reasons are the server's words: shown with textContent only.

/** The test and debugging view (window.nimbusDemo.share). */
export const state = {
  available: false,
  created: 0,
  revoked: 0,
  copied: 0,
  lastLink: null, // {grant, mode, expires, link} of the last link made
  /** The viewer count shown for the terminal on screen. */
  get count() {
    return currentViewers().length;
  },
  /** The links of the terminal on screen: [{grant, mode, expires, viewers: [{peer, mode, since}]}]. */
  list: () => groups(),
};

/** Link lifetimes the dialog offers, in seconds (the server allows at most 24 h). */
export const TTL_CHOICES = Object.freeze([
  [900, "15 minutes"],
  [3600, "1 hour"],
  [8 * 3600, "8 hours"],
  [24 * 3600, "24 hours"],
]);
export const DEFAULT_TTL = 3600;

/** sessionStorage: the shared terminal's size a viewer last showed (for a reload). */
const VIEW_SIZE_KEY = "nimbus-demo.view-size";

const MODE_WORDS = Object.freeze({ read: "read-only", write: "read-write" });

/** "read-only" / "read-write" for a share mode. */
export const modeWords = (mode) => MODE_WORDS[mode] ?? String(mode ?? "");

/** The viewer page's banner. */
export const bannerText = (mode) => `Watching ${modeWords(mode)} — shared by the owner`;

const $ = (id) => document.getElementById(id);

let env = null; // what install() was given
// Per channel (the tab's `ch`): the links made on this page, grant -> {grant, mode, expires, link}.
const links = new WeakMap();

// The links this tab made, kept in sessionStorage by channel id so that a reload lists
// them again (with their Copy and Revoke): the server tells a resumed page its viewers,
// not its links, and a link nobody opened yet would be out of reach until it expired.
// The same storage already holds this tab's resume token, which is worth more than a
// link.  A channel that came back through a resume is the same terminal of the same
// session (its links live on); a channel that did not is a new one that may reuse an
// id: what was kept for that id is dropped.
const LINKS_KEY = "nimbus-demo.share-links";
let kept = null; // {channel id: [{grant, mode, expires, link}]}

function keptLinks() {
  if (kept === null) {
    try {
      const v = JSON.parse(sessionStorage.getItem(LINKS_KEY) || "{}");
      kept = v && typeof v === "object" && !Array.isArray(v) ? v : {};
    } catch {
      kept = {};
    }
  }
  return kept;
}

function saveLinks(ch) {
  const all = keptLinks();
  const made = links.get(ch);
  if (made && made.size) all[ch.id] = [...made.values()];
  else delete all[ch.id];
  writeKept(all);
}

function writeKept(all) {
  try {
    if (Object.keys(all).length) sessionStorage.setItem(LINKS_KEY, JSON.stringify(all));
    else sessionStorage.removeItem(LINKS_KEY);
  } catch {
    // storage full or off: the links stay listed until the page goes
  }
}

/** The links made for `ch` (restored after a reload for a resumed channel); created on demand. */
function linksOf(ch, create = false) {
  let made = links.get(ch);
  if (!made) {
    const all = keptLinks();
    const before = all[ch.id];
    if (ch.resumed && Array.isArray(before)) {
      made = new Map(before.filter((l) => l && typeof l.grant === "string").map((l) => [l.grant, l]));
      links.set(ch, made);
    } else if (before !== undefined) {
      delete all[ch.id]; // another terminal than the one these links were for
      writeKept(all);
    }
  }
  if (!made && create) {
    made = new Map();
    links.set(ch, made);
  }
  return made ?? null;
}

function activeChannel() {
  return env?.channel() ?? null;
}

function currentViewers() {
  const ch = activeChannel();
  if (!ch) return [];
  try {
    return ch.viewers ?? [];
  } catch {
    return [];
  }
}

/** The links of the channel on screen with their viewers, links made here first. */
function groups() {
  const ch = activeChannel();
  if (!ch) return [];
  const made = linksOf(ch) ?? new Map();
  const out = new Map();
  for (const l of made.values()) out.set(l.grant, { grant: l.grant, mode: l.mode, expires: l.expires, link: l.link, viewers: [] });
  for (const v of currentViewers()) {
    // A viewer of a link made before a reload (or by another page of this session).
    if (!out.has(v.grant)) out.set(v.grant, { grant: v.grant, mode: v.mode, expires: null, link: null, viewers: [] });
    out.get(v.grant).viewers.push({ peer: v.peer, mode: v.mode, since: v.since });
  }
  return [...out.values()];
}

const fmtClock = (ms) => (ms == null ? "" : new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }));

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}

/**
 * Wire the owner's controls.  `channel()`: the channel of the terminal on
 * screen (null when none is ready); `notify(text, level)`: the status bar;
 * `focus()`: back to the terminal.  Returns {setAvailable(bool), refresh()}:
 * call refresh() when the tab on screen changed or its viewers did.
 */
export function install({ channel, notify, focus, copy = copyText }) {
  env = { channel, notify, focus, copy };
  const form = $("share-form");
  const f = form.elements;
  for (const [secs, label] of TTL_CHOICES) {
    const o = el("option", "", label);
    o.value = String(secs);
    o.selected = secs === DEFAULT_TTL;
    f.ttl.append(o);
  }
  const syncMode = () => {
    $("share-warn").hidden = f.mode.value !== "write";
  };
  form.addEventListener("change", syncMode);

  $("btn-share").addEventListener("click", () => openDialog());
  $("share-cancel").addEventListener("click", closeDialog);
  form.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") closeDialog();
  });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    create(f.mode.value, Number(f.ttl.value) || DEFAULT_TTL);
  });
  $("share-copy").addEventListener("click", () => copyLink($("share-link").value));
  $("st-viewers").addEventListener("click", () => {
    $("viewers").hidden = !$("viewers").hidden;
    refresh();
  });

  function openDialog() {
    const ch = activeChannel();
    if (!ch) return void notify("Nothing to share: no terminal is open", "warn");
    f.mode.value = "read";
    f.ttl.value = String(DEFAULT_TTL);
    syncMode();
    $("share-result").hidden = true;
    $("share-copy").hidden = true;
    $("share-create").hidden = false;
    $("share-create").disabled = false;
    $("share-note").hidden = true;
    for (const input of form.querySelectorAll("fieldset input, select")) input.disabled = false;
    $("share").hidden = false;
    form.querySelector("input[name=mode]:checked").focus();
  }

  function closeDialog() {
    $("share").hidden = true;
    focus();
  }

  async function create(mode, ttl) {
    const ch = activeChannel();
    if (!ch) return;
    $("share-create").disabled = true;
    $("share-note").hidden = true;
    let made;
    try {
      made = await ch.share({ mode, ttl, page: pageForViewers() });
    } catch (e) {
      $("share-create").disabled = false;
      $("share-note").hidden = false;
      $("share-note").textContent = `No link: ${e?.message ?? e}`;
      return;
    }
    const entry = { grant: made.grant, mode: made.mode, expires: made.expires, link: made.link };
    linksOf(ch, true).set(made.grant, entry);
    saveLinks(ch);
    state.created += 1;
    state.lastLink = { ...entry };
    $("share-link").value = made.link ?? "";
    $("share-expiry").textContent = `${modeWords(made.mode)} · expires at ${fmtClock(made.expires)}`;
    $("share-result").hidden = false;
    $("share-copy").hidden = false;
    $("share-create").hidden = true;
    for (const input of form.querySelectorAll("fieldset input, select")) input.disabled = true;
    $("share-link").focus();
    $("share-link").select();
    refresh();
  }

  async function copyLink(text) {
    if (!text) return;
    try {
      await copy(text);
      state.copied += 1;
      notify("Share link copied", "ok");
    } catch {
      notify("Could not copy the link: select it and copy it by hand", "warn");
    }
  }

  function revoke(grant) {
    const ch = activeChannel();
    if (!ch) return;
    try {
      ch.unshare(grant);
    } catch (e) {
      return void notify(`Could not revoke the link: ${e?.message ?? e}`, "error");
    }
    linksOf(ch)?.delete(grant);
    saveLinks(ch);
    state.revoked += 1;
    notify("Share link revoked: its viewers were disconnected", "ok");
    refresh();
  }

  function setAvailable(on) {
    state.available = Boolean(on);
    $("btn-share").hidden = !state.available;
    if (!state.available) {
      $("share").hidden = true;
      $("viewers").hidden = true;
    }
    refresh();
  }

  function refresh() {
    const ch = activeChannel();
    const made = ch ? linksOf(ch) : null;
    if (made) {
      const now = Date.now();
      const n = made.size;
      for (const [g, l] of made) if (l.expires != null && l.expires <= now) made.delete(g);
      if (made.size !== n) saveLinks(ch);
    }
    const n = currentViewers().length;
    const badge = $("st-viewers");
    badge.textContent = `👁 ${n}`;
    badge.title = n === 1 ? "1 viewer of this terminal (share links)" : `${n} viewers of this terminal (share links)`;
    const list = groups();
    badge.hidden = !state.available || (n === 0 && list.length === 0);
    if ($("viewers").hidden || badge.hidden) {
      if (badge.hidden) $("viewers").hidden = true;
      return;
    }
    $("viewer-list").replaceChildren(...list.map((g) => grantRow(g, revoke, copyLink)));
  }

  return { setAvailable, refresh };
}

// The async Clipboard API where there is one (secure contexts), else the
// browser's copy command on a hidden text field.
async function copyText(text) {
  if (navigator.clipboard?.writeText) {
    try {
      return await navigator.clipboard.writeText(text);
    } catch {
      /* not allowed here: the copy command below */
    }
  }
  const area = el("textarea", "offscreen");
  area.value = text;
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } finally {
    area.remove();
  }
  if (!ok) throw new Error("the browser refused");
}

function grantRow(g, revoke, copyLink) {
  const li = el("li", "grant");
  li.dataset.grant = g.grant;
  const head = el("div", "grant-head");
  head.append(el("span", "grant-mode", `${modeWords(g.mode)} link`));
  if (g.expires != null) head.append(el("span", "dim", `expires ${fmtClock(g.expires)}`));
  head.append(el("span", "dim", g.viewers.length === 1 ? "1 viewer" : `${g.viewers.length} viewers`));
  head.append(el("span", "spacer"));
  if (g.link) {
    const c = el("button", "grant-copy", "Copy link");
    c.type = "button";
    c.addEventListener("click", () => copyLink(g.link));
    head.append(c);
  }
  const r = el("button", "grant-revoke", "Revoke");
  r.type = "button";
  r.title = "Disconnect this link's viewers; the link stops working";
  r.addEventListener("click", () => revoke(g.grant));
  head.append(r);
  li.append(head);
  if (g.viewers.length) {
    const ul = el("ul", "viewer-rows");
    for (const v of g.viewers) {
      const row = el("li", "viewer");
      row.dataset.grant = g.grant;
      row.append(el("span", "viewer-peer", v.peer || "?"), el("span", "viewer-mode", modeWords(v.mode)), el("span", "dim viewer-since", `since ${fmtClock(v.since)}`));
      ul.append(row);
    }
    li.append(ul);
  }
  return li;
}

/**
 * The page a viewer opens: this page's address without what only the owner's
 * page needs (SSH target and user, connect=0); the runtime drops ?token= and
 * adds ?share=.
 */
function pageForViewers() {
  const url = new URL(location.href);
  for (const k of ["target", "user", "connect", "token", "share"]) url.searchParams.delete(k);
  url.hash = "";
  return url.href;
}

// ---------------------------------------------------------------- viewer

/** Remember the shared terminal's size `{cols, rows}` for a reload of this tab. */
export function saveViewSize(size) {
  try {
    if (size) sessionStorage.setItem(VIEW_SIZE_KEY, JSON.stringify({ cols: size.cols, rows: size.rows }));
    else sessionStorage.removeItem(VIEW_SIZE_KEY);
  } catch {
    /* storage disabled */
  }
}

/** The size saveViewSize kept, or null. */
export function loadViewSize() {
  try {
    const s = JSON.parse(sessionStorage.getItem(VIEW_SIZE_KEY) || "null");
    if (s && Number.isSafeInteger(s.cols) && Number.isSafeInteger(s.rows) && s.cols > 0 && s.rows > 0) return s;
  } catch {
    /* nothing usable */
  }
  return null;
}
