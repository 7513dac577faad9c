// The recordings page (recordings.html, served at <base>/recordings/ by
// `nimbus-ws serve --record DIR`): the list of asciicast files the server
// wrote and asciinema-player (npm, served by this server) to play one.
//
// The list (index.json) and the files need the operator's credentials, as
// /metrics does (node_runtime/server/recordings_http.py): the bearer token
// comes from ?token= -- removed from the address bar at once -- or is asked
// in a form, and goes in an Authorization header, never in a URL.  For a
// reload it is kept like the terminal page keeps its own: encrypted under a
// non-extractable key (token_store.mjs), under a key of this page.  A server
// without tokens lets its own user in without one (the anonymous rule).
//
// Test hooks: window.nimbusRecordings.

import * as tokens from "./token_store.mjs";

const $ = (id) => document.getElementById(id);
const TOKEN_ITEM = "nimbus-recordings.token";

const urlToken = takeUrlToken(); // first thing: out of the address bar and this history entry

// index.json and files/ sit next to the page at <base>/recordings/ (also when opened as recordings.html).
const BASE = new URL(location.pathname.endsWith("/") ? "./" : "./recordings/", location.href);

const state = (window.nimbusRecordings = {
  phase: "loading", // loading | token | list | error
  list: [], // [{name, size, mtime}]
  playing: null, // the name being played
  player: null, // the asciinema-player instance
  ended: false, // the player reached the end of the recording
  error: null,
  tokenStorage: "none",
  /** The player's screen as text (one line per terminal row). */
  screenText() {
    const pre = document.querySelector("#player .ap-term-text");
    if (!pre) return "";
    const rows = [...pre.querySelectorAll(".ap-line")];
    const lines = rows.length ? rows.map((r) => r.textContent ?? "") : (pre.textContent ?? "").split("\n");
    const out = lines.map((l) => l.replace(/\s+$/, ""));
    while (out.length && !out[out.length - 1]) out.pop();
    return out.join("\n");
  },
});

let token = urlToken ?? "";

function takeUrlToken() {
  const url = new URL(location.href);
  if (!url.searchParams.has("token")) return null;
  const value = url.searchParams.get("token");
  url.searchParams.delete("token");
  history.replaceState(history.state, "", url.href);
  return value;
}

function message(text, level = "") {
  $("msg").textContent = text;
  $("msg").dataset.level = level;
}

const headers = () => (token ? { Authorization: `Bearer ${token}` } : {});

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}

const fmtDate = (seconds) => new Date(seconds * 1000).toLocaleString();

function askToken(note) {
  state.phase = "token";
  $("token-note").textContent = note;
  $("token-form").hidden = false;
  $("list").hidden = true;
  $("empty").hidden = true;
  $("token").focus();
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const typed = $("token").value;
  if (!typed) return void $("token").focus();
  token = typed;
  $("token").value = "";
  $("token-form").hidden = true;
  load().catch(failed);
});

$("btn-refresh").addEventListener("click", () => load().catch(failed));

$("speed").addEventListener("change", () => {
  if (state.playing) play(state.playing);
});

function failed(e) {
  state.phase = "error";
  state.error = String(e?.message ?? e);
  message(`Could not load the recordings: ${state.error}`, "error");
}

async function load() {
  state.phase = "loading";
  message("Loading…");
  const r = await fetch(new URL("index.json", BASE), { headers: headers(), cache: "no-store", credentials: "omit" });
  if (r.status === 401) {
    message("");
    const had = Boolean(token);
    token = "";
    tokens.forgetToken({ item: TOKEN_ITEM });
    return askToken(had ? "The token was not accepted." : "The server needs its operator token to show recordings.");
  }
  if (r.status === 404) throw new Error("this server does not record sessions (nimbus-ws serve --record DIR)");
  if (!r.ok) throw new Error(`HTTP ${r.status}`);
  const body = await r.json();
  state.tokenStorage = await tokens.saveToken(token, BASE.href, { item: TOKEN_ITEM });
  state.list = Array.isArray(body.recordings) ? body.recordings : [];
  state.phase = "list";
  message(state.list.length === 1 ? "1 recording" : `${state.list.length} recordings`);
  render();
}

function render() {
  const tbody = $("list").querySelector("tbody");
  tbody.replaceChildren(
    ...state.list.map((rec) => {
      const tr = document.createElement("tr");
      tr.dataset.name = rec.name;
      tr.setAttribute("aria-current", String(rec.name === state.playing));
      const cell = (text, cls = "") => {
        const td = document.createElement("td");
        td.className = cls;
        td.textContent = text; // names are the server's: textContent only
        return td;
      };
      const name = cell(rec.name, "name");
      name.title = rec.name;
      const act = document.createElement("td");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "play";
      b.textContent = "Play";
      b.addEventListener("click", () => play(rec.name));
      act.append(b);
      tr.append(name, cell(fmtBytes(rec.size)), cell(fmtDate(rec.mtime)), act);
      return tr;
    }),
  );
  $("list").hidden = state.list.length === 0;
  $("empty").hidden = state.list.length !== 0;
}

function play(name) {
  const Player = window.AsciinemaPlayer;
  if (!Player) return void message("The player (vendor/asciinema-player) could not be loaded", "error");
  state.player?.dispose?.();
  state.playing = name;
  state.ended = false;
  $("player-pane").hidden = false;
  $("playing").textContent = name;
  const el = $("player");
  el.replaceChildren();
  const url = new URL(`files/${encodeURIComponent(name)}`, BASE).href;
  const player = Player.create({ url, fetchOpts: { headers: headers(), cache: "no-store", credentials: "omit" } }, el, {
    autoPlay: true,
    preload: true,
    speed: Number($("speed").value) || 1,
    idleTimeLimit: 2,
    fit: "width",
    terminalFontFamily: "JetBrains Mono, Fira Code, DejaVu Sans Mono, Menlo, Consolas, monospace",
  });
  player.addEventListener("ended", () => {
    state.ended = true;
  });
  state.player = player;
  render();
}

async function boot() {
  if (!token) {
    const saved = await tokens.loadToken(BASE.href, { item: TOKEN_ITEM });
    if (saved) token = saved;
  }
  await load();
}

boot().catch(failed);
