// The one place where the demo page meets the nimbus runtime facade
// (web_runtime/js/nimbus.mjs, served as nimbus/nimbus.mjs).  app.mjs only
// talks to the functions below; if the facade's API moves, this file moves.

import { hostKeyMessage } from "./messages.mjs";

const FACADE_URL = new URL("./nimbus/nimbus.mjs", import.meta.url).href;

let facade = null; // the imported module
let runtime = null; // what loadNimbus() returned

/**
 * Import the facade and boot Pyodide + the wheel.
 * onProgress({text, fraction|null, loaded, total}); `bootBytes` (from site.json)
 * is what the boot downloads with fetch(), decoded (the bytes a compressed
 * response yields, which is what the page can count), for a byte-accurate bar.
 */
export async function loadRuntime({ indexURL, wheelURL, bootBytes, onProgress }) {
  try {
    facade = await import(FACADE_URL);
  } catch (e) {
    throw new Error(`the nimbus runtime (nimbus/nimbus.mjs) could not be loaded: ${e.message}`);
  }
  let phase = "Loading the Python runtime";
  let loaded = 0;
  const report = () =>
    onProgress?.({
      text: loaded ? `${phase} · ${fmtMB(loaded)}${bootBytes ? ` / ${fmtMB(bootBytes)}` : ""}` : `${phase}…`,
      fraction: bootBytes && loaded ? Math.min(0.98, loaded / bootBytes) : null,
      loaded,
      total: bootBytes ?? null,
    });
  const untrack = trackDownloads((n) => {
    loaded = n;
    report();
  });
  try {
    runtime = await facade.loadNimbus({
      indexURL,
      wheelURL,
      onProgress: (ev) => {
        if (ev?.phase === "package") phase = "Installing nimbus-websocket";
        else if (ev?.phase === "ready") phase = "Starting";
        report();
      },
    });
  } finally {
    untrack();
  }
  return runtime;
}

// Count the bytes of every fetch() while Pyodide boots (the wasm, the
// stdlib, the lock file, the wheel): Pyodide itself reports only phases.
// The responses are passed through unchanged.
function trackDownloads(onBytes) {
  const orig = globalThis.fetch;
  if (typeof ReadableStream !== "function") return () => {};
  let total = 0;
  globalThis.fetch = async (...args) => {
    const res = await orig(...args);
    if (!res.ok || !res.body) return res;
    // The caller gets the real Response (its URL intact: Chromium caches the compiled
    // wasm of a response it can tie to the HTTP cache, which saves the compile on a
    // reload); a clone is read alongside to count the decoded bytes.
    const reader = res.clone().body.getReader();
    (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        total += value.byteLength;
        onBytes(total);
      }
    })().catch(() => {});
    return res;
  };
  return () => {
    globalThis.fetch = orig;
  };
}

const fmtMB = (n) => `${(n / 1048576).toFixed(1)} MB`;

/**
 * Connect; resolves when ready.  `token` empty -> auth scheme "none".  `share`:
 * a share link's token -- connect as its viewer (the runtime sends it as the
 * bearer token), with a resume state of its own, apart from this tab's own sessions.
 */
export async function connect({ url, token, share, listeners }) {
  const common = { url, clientInfo: { app: "nimbus-demo" }, on: listeners };
  if (share) return runtime.connect({ ...common, share, resume: { key: `nimbus-websocket:resume:view:${url}` } });
  return runtime.connect({ ...common, auth: token ? { scheme: "bearer", token } : { scheme: "none" } });
}

/** Subscribe; returns an unsubscribe function. */
export function on(target, event, cb) {
  return target.on(event, cb);
}

/** Open a terminal channel (the facade keeps its output until a data listener exists). */
export function openSession(conn, { target, user, cols, rows }) {
  return conn.openSession({
    target,
    user,
    term: { cols, rows, env: { TERM: "xterm-256color", COLORTERM: "truecolor" } },
  });
}

/** Channels the runtime brought back from sessionStorage on connect (page reload). */
export function resumedChannels(conn) {
  return conn.resumedChannels.filter((ch) => ch.state !== "closed");
}

/**
 * Route a channel's output (stdout and stderr: one screen, like a terminal)
 * to `write(bytes, done)`.  The runtime counts a chunk as consumed -- and
 * only then grants the server more credit -- when `done` is called, which
 * xterm does from term.write's callback once it has parsed the chunk: a slow
 * renderer slows the server down instead of growing memory.
 */
export function pipeOutput(ch, write) {
  const sink = (bytes, done) => write(bytes, done);
  const offs = [ch.on("data", sink), ch.on("stderr", sink)];
  return () => offs.forEach((off) => off());
}

export const send = (ch, data) => ch.send(data);
export const resize = (ch, cols, rows) => ch.resize(cols, rows);
export const closeChannel = (ch) => ch.close();
export const closeConnection = (conn) => conn.close();
/** Write the resume state now (the runtime also does on pagehide; the page calls it
 * right before saving its screen, so both record the same stream position). */
export const persist = (conn) => conn?.persist();
/** Measure RTT now (the runtime's own heartbeat only pings every 20 s). */
export const ping = (conn) => conn?.ping();

/** Size of Pyodide's WebAssembly memory (the Python heap), or null. */
export function wasmMemoryBytes() {
  try {
    return runtime?.pyodide?._module?.HEAP8?.buffer?.byteLength ?? null;
  } catch {
    return null;
  }
}

/** Live numbers for the status bar (one snapshot of the connection). */
export function stats(conn) {
  const info = conn ? conn.info : { state: "closed" };
  return {
    state: info.state ?? "closed",
    rttMs: info.rttMs ?? null,
    bufferedAmount: info.bufferedAmount ?? 0,
    pauseReasons: info.pauseReasons ?? [],
    files: info.files === true, // the server transfers files (caps.files)
    share: info.share === true, // the server makes share links (caps.share)
    viewMode: info.viewMode ?? null, // "read" | "write": this connection watches a shared terminal
  };
}

/**
 * Upload `file` (a File) to `path` on the server; `ref`: the terminal channel
 * whose working directory a relative path starts in.  Options as the facade's
 * conn.upload: {ref, target, user, onProgress, signal}.  Resolves with the bytes written.
 */
export function upload(conn, file, path, opts) {
  return conn.upload(file, path, opts);
}

/** Download `path` from the server; resolves with a Blob.  Options as conn.download's. */
export function download(conn, path, opts) {
  return conn.download(path, opts);
}

/** The new state of a statechange event. */
export const stateOf = (ev) => ev?.new ?? ev?.state ?? "";

/**
 * `{code, name, text, detail}` of a NimbusError (code: the close code, if any).
 * A refused SSH host key (an open error with `hostKey`) is worded here, by
 * messages.mjs, with the offered key: `text` the sentence, `detail` the
 * sentence and its code; `hostKey` is passed on.
 */
export function describeError(err) {
  if (err == null) return { code: null, name: "", text: "connection closed", detail: "" };
  const sentence = err.hostKey ? hostKeyMessage(err.code, err.hostKey) : null;
  if (sentence) return { code: null, name: err.code, text: sentence, detail: `${sentence} [${err.code}]`, hostKey: err.hostKey };
  const code = err.appCode ?? err.wsCode ?? null;
  // The meaning of a close code comes from the core (core.errors), via the facade.
  const described = code != null && runtime?.describeCloseCode ? runtime.describeCloseCode(code) : null;
  const name = (typeof err.code === "string" ? err.code : "") || (described?.name ?? "");
  const text = code != null ? described?.text ?? `close code ${code}` : err.message ?? String(err);
  const detail = err.message && err.message !== text ? err.message : "";
  return { code, name, text, detail };
}
