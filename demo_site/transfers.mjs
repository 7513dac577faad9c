// File transfer on the page (issue 19): upload with a button or by dropping
// files onto the terminal, download with a "Download…" form, and a small
// panel with one row per transfer -- name, progress bar, bytes done/total,
// speed, time left, Cancel.  Each transfer is a file channel of the page's
// one connection (the runtime's conn.upload / conn.download); uploads and
// relative download paths are taken from the working directory of the shell
// on screen (the transfer passes that tab's channel as `ref`).
//
// No protocol rule here: whether the server transfers files at all is its
// announcement (caps.files, which app.mjs passes to setAvailable), how many
// channels a session may hold is the runtime's to say -- a transfer it
// refuses with CHANNEL_LIMIT waits for another transfer of this page to end,
// and is then tried again.  Reasons a server gives for refusing a transfer
// are shown as they come (textContent: they are the server's words).

/** The test and debugging view (window.nimbusDemo.transfers). */
export const state = {
  available: false,
  started: 0,
  finished: 0,
  failed: 0,
  cancelled: 0,
  /** Every row still in the panel: {id, kind, name, path, status, done, total, error}. */
  list: () => rows.map(({ id, kind, name, path, status, done, total, error }) => ({ id, kind, name, path, status, done, total, error })),
};

/** Finished rows kept in the panel (the oldest go first). */
const KEEP_FINISHED = 8;

const rows = [];
let nextId = 0;
let env = null; // what install() was given

const $ = (id) => document.getElementById(id);

export function fmtBytes(n) {
  if (n == null) return "–";
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KiB`;
  if (n < 1073741824) return `${(n / 1048576).toFixed(1)} MiB`;
  return `${(n / 1073741824).toFixed(2)} GiB`;
}

export function fmtRate(bytesPerSecond) {
  return bytesPerSecond > 0 ? `${fmtBytes(Math.round(bytesPerSecond))}/s` : "";
}

export function fmtEta(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s left`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s left`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min left`;
}

/** The last component of a server path (what a download is saved as). */
export function baseName(path) {
  const parts = String(path).split("/").filter(Boolean);
  return parts.length ? parts[parts.length - 1] : "download";
}

/**
 * A transfer's error in plain words: the server's own reason for a refused
 * or failed transfer, a sentence for the rest (`describe` is the adapter's
 * describeError, for connection errors).
 */
export function plainError(err, kind, describe) {
  const what = kind === "upload" ? "Upload" : "Download";
  switch (err?.code) {
    case "ABORTED":
      return "Cancelled";
    case "UNSUPPORTED":
      return `${what} failed: this server does not transfer files`;
    case "READ_FAILED":
      return `${what} failed: ${err.message}`;
    case "CHANNEL_LIMIT":
      return `${what} failed: no free channel on this connection — close a terminal tab and try again`;
    default:
      break;
  }
  if (err?.name === "FileTransferError" || err?.code === "FILE_FAILED" || err?.code === "POLICY_DENIED") {
    return `${what} failed: ${err.message || "the server refused it"}`;
  }
  const d = describe ? describe(err) : { text: String(err?.message ?? err) };
  return `${what} failed: ${d.detail || d.text}`;
}

/**
 * Run the transfer UI.  `context()` gives `{conn, ref, target, user}` for a
 * new transfer (the connection, the tab on screen's channel, the file
 * channel's target and user), or null when there is no session; `upload`,
 * `download` and `describe` are the adapter's; `notify(text, level)` writes
 * the status bar; `focus()` gives the keyboard back to the terminal.
 * Returns `{setAvailable(bool)}`.
 */
export function install({ context, upload, download, describe, notify = () => {}, focus = () => {} }) {
  env = { context, upload, download, describe, notify, focus };
  const input = $("upload-input");
  $("btn-upload").addEventListener("click", () => {
    input.value = "";
    input.click();
  });
  input.addEventListener("change", () => {
    const files = [...(input.files ?? [])];
    input.value = "";
    for (const f of files) startUpload(f);
    focus();
  });
  $("btn-download").addEventListener("click", () => showDownloadForm());
  installDownloadForm();
  installDrop($("terminal"));
  return { setAvailable };
}

function setAvailable(on) {
  on = Boolean(on);
  if (on === state.available) return;
  state.available = on;
  $("btn-upload").hidden = !on;
  $("btn-download").hidden = !on;
  if (!on) $("download").hidden = true;
}

// ------------------------------------------------------------- drag & drop

function installDrop(target) {
  if (!target) return;
  const hasFiles = (ev) => [...(ev.dataTransfer?.types ?? [])].includes("Files");
  let depth = 0;
  const clear = () => {
    depth = 0;
    delete target.dataset.drop;
  };
  target.addEventListener(
    "dragenter",
    (ev) => {
      if (!state.available || !hasFiles(ev)) return;
      ev.preventDefault();
      depth += 1;
      target.dataset.drop = "";
    },
    true,
  );
  target.addEventListener(
    "dragover",
    (ev) => {
      if (!state.available || !hasFiles(ev)) return;
      ev.preventDefault();
      ev.dataTransfer.dropEffect = "copy";
      target.dataset.drop = "";
    },
    true,
  );
  target.addEventListener(
    "dragleave",
    () => {
      depth = Math.max(0, depth - 1);
      if (!depth) delete target.dataset.drop;
    },
    true,
  );
  target.addEventListener(
    "drop",
    (ev) => {
      clear();
      if (!state.available || !hasFiles(ev)) return;
      ev.preventDefault();
      ev.stopPropagation();
      for (const f of [...(ev.dataTransfer.files ?? [])]) startUpload(f);
      env.focus();
    },
    true,
  );
}

// ---------------------------------------------------------- download form

function installDownloadForm() {
  const form = $("download-form");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const path = form.elements.path.value.trim();
    if (!path) return void form.elements.path.focus();
    $("download").hidden = true;
    startDownload(path);
    env.focus();
  });
  const cancel = () => {
    $("download").hidden = true;
    env.focus();
  };
  $("download-cancel").addEventListener("click", cancel);
  form.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") cancel();
  });
}

function showDownloadForm() {
  const form = $("download-form");
  $("download").hidden = false;
  form.elements.path.select();
  form.elements.path.focus();
}

// --------------------------------------------------------------- transfers

/** Upload `file` (a File) as its name into the shell's working directory. */
export function startUpload(file) {
  return start({ kind: "upload", name: file.name || "upload", path: file.name || "upload", file, total: file.size });
}

/** Download `path` (relative: from the shell's working directory) and save it. */
export function startDownload(path) {
  return start({ kind: "download", name: baseName(path), path, total: null });
}

function start(spec) {
  const row = { id: ++nextId, status: "starting", done: 0, total: spec.total, rate: 0, eta: null, error: null, ...spec };
  row.el = renderRow(row);
  rows.push(row);
  $("transfer-list").append(row.el);
  $("transfers").hidden = false;
  state.started += 1;
  row.promise = run(row);
  return row.promise;
}

async function run(row) {
  const ctx = env.context();
  if (!ctx?.conn) return finish(row, "failed", `${row.kind === "upload" ? "Upload" : "Download"} failed: there is no session`);
  row.controller = new AbortController();
  row.status = "running";
  row.started = performance.now();
  update(row);
  const opts = {
    ref: ctx.ref ?? undefined,
    target: ctx.target,
    user: ctx.user,
    signal: row.controller.signal,
    onProgress: (p) => progress(row, p),
  };
  try {
    if (row.kind === "upload") {
      await env.upload(ctx.conn, row.file, row.path, opts);
      row.done = row.total;
      finish(row, "done", `Uploaded ${row.name}`);
    } else {
      const blob = await env.download(ctx.conn, row.path, { ...opts, onSize: (n) => ((row.total = n), update(row)) });
      row.done = row.total = blob.size;
      save(blob, row.name);
      finish(row, "done", `Downloaded ${row.name}`);
    }
  } catch (e) {
    if (e?.code === "CHANNEL_LIMIT" && row.status !== "cancelled" && rows.some((r) => r !== row && r.status === "running")) {
      row.status = "queued"; // another transfer of this page ends first: tried again then
      row.controller = null;
      return update(row);
    }
    if (e?.code === "ABORTED") return finish(row, "cancelled", "Cancelled");
    finish(row, "failed", plainError(e, row.kind, env.describe));
  }
}

function progress(row, p) {
  row.done = p.done;
  if (p.total != null) row.total = p.total;
  row.rate = p.rate;
  row.eta = p.eta;
  update(row);
}

function cancel(row) {
  if (row.status === "queued" || row.status === "starting") return finish(row, "cancelled", "Cancelled");
  if (row.status === "running") row.controller?.abort();
}

function finish(row, status, text) {
  if (["done", "failed", "cancelled"].includes(row.status)) return;
  row.status = status;
  row.error = status === "failed" ? text : null;
  row.message = text;
  row.file = null; // the File is not needed any more
  state[status === "done" ? "finished" : status] += 1;
  update(row);
  if (status === "failed") env.notify(text, "error");
  else if (status === "done") env.notify(text, "ok");
  prune();
  // A channel is free again: a transfer waiting for one goes now.
  const waiting = rows.find((r) => r.status === "queued");
  if (waiting) {
    waiting.status = "starting";
    waiting.promise = run(waiting);
  }
}

function dismiss(row) {
  const at = rows.indexOf(row);
  if (at >= 0) rows.splice(at, 1);
  row.el.remove();
  if (!rows.length) $("transfers").hidden = true;
  env.focus();
}

function prune() {
  const finished = rows.filter((r) => ["done", "failed", "cancelled"].includes(r.status));
  for (const r of finished.slice(0, Math.max(0, finished.length - KEEP_FINISHED))) dismiss(r);
}

/** Save `blob` as `name` through an <a download> and an object URL. */
function save(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  // The browser has taken the URL once the click's download started; give it time.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// -------------------------------------------------------------------- rows

function renderRow(row) {
  const li = document.createElement("li");
  li.className = "xfer";
  li.dataset.id = String(row.id);
  li.dataset.kind = row.kind;
  const verb = row.kind === "upload" ? "Upload" : "Download";
  const dir = document.createElement("span");
  dir.className = "xfer-dir";
  dir.setAttribute("aria-hidden", "true");
  dir.textContent = row.kind === "upload" ? "↑" : "↓";
  const name = document.createElement("span");
  name.className = "xfer-name";
  name.textContent = row.name;
  name.title = row.path;
  const bar = document.createElement("progress");
  bar.className = "xfer-bar";
  bar.max = 1;
  bar.setAttribute("aria-label", `${verb} of ${row.name}`);
  const bytes = document.createElement("span");
  bytes.className = "xfer-bytes";
  const rate = document.createElement("span");
  rate.className = "xfer-rate";
  const eta = document.createElement("span");
  eta.className = "xfer-eta";
  const msg = document.createElement("span");
  msg.className = "xfer-msg";
  msg.setAttribute("role", "status");
  const btn = document.createElement("button");
  btn.type = "button";
  btn.className = "xfer-cancel";
  btn.addEventListener("mousedown", (ev) => ev.preventDefault());
  btn.addEventListener("click", () => (["done", "failed", "cancelled"].includes(row.status) ? dismiss(row) : cancel(row)));
  li.append(dir, name, bar, bytes, rate, eta, msg, btn);
  row.parts = { bar, bytes, rate, eta, msg, btn, verb };
  return li;
}

function update(row) {
  const { bar, bytes, rate, eta, msg, btn, verb } = row.parts;
  row.el.dataset.status = row.status;
  const over = ["done", "failed", "cancelled"].includes(row.status);
  if (row.total) bar.value = Math.min(1, row.done / row.total);
  else if (row.total === 0 || row.status === "done") bar.value = 1;
  else bar.removeAttribute("value"); // size not known yet: indeterminate
  bytes.textContent = row.total == null ? fmtBytes(row.done) : `${fmtBytes(row.done)} / ${fmtBytes(row.total)}`;
  rate.textContent = row.status === "running" ? fmtRate(row.rate) : "";
  eta.textContent = row.status === "running" ? fmtEta(row.eta) : "";
  msg.textContent = row.status === "queued" ? "waiting for a free channel…" : over ? row.message ?? "" : "";
  msg.dataset.level = row.status === "failed" ? "error" : row.status === "done" ? "ok" : "";
  btn.textContent = over ? "✕" : "Cancel";
  btn.title = over ? "Remove from the list" : `Cancel the ${verb.toLowerCase()}`;
  btn.setAttribute("aria-label", over ? `Dismiss ${verb.toLowerCase()} of ${row.name}` : `Cancel ${verb.toLowerCase()} of ${row.name}`);
}
