// nimbus-websocket JavaScript facade: the Python client (Pyodide) with JavaScript idioms.
//
// One facade, two loaders:
//   * browsers:  loadNimbus({indexURL, wheelURL, onProgress})       (this file)
//   * Node.js:   node_runtime/shim/index.mjs loadNimbus({distDir})  (boots Pyodide
//                from the local dist folder, `ws` as the WebSocket, then createNimbus)
// Both end in createNimbus(pyodide, {WebSocket, defaults}), which wraps the
// Python half, nimbus_websocket.web_runtime.bridge.
//
//   const nimbus = await loadNimbus({indexURL: "/pyodide/", onProgress: p => ...});
//   const conn = await nimbus.connect({url: "ws://127.0.0.1:8765/ws/ssh", auth: token});
//   const ch = await conn.openSession({target: {host, port}, user: {username, auth},
//                                      term: {cols: 80, rows: 24}});
//   ch.on("data", (bytes, done) => term.write(bytes, done));   // xterm.js flow control
//   term.onData(s => ch.send(s));
//   ch.resize(cols, rows); await ch.signal("INT"); await ch.close();
//   if (conn.share) {                                          // the server announced caps.share
//     const { link, grant } = await ch.share({ mode: "read", ttl: 3600 });  // link: this page ?share=TOKEN
//     ch.on("viewers", (list) => ...); ch.unshare(grant);
//   }
//   // a viewer: nimbus.connect({url, share: TOKEN}); conn.viewMode === "read" | "write";
//   // its one channel's "resize" ({cols, rows}) is the shared terminal's size.
//   if (conn.files) {                                          // the server announced caps.files
//     await conn.upload(file, file.name, {ref: ch, onProgress, signal});   // a File/Blob, in slices
//     const blob = await conn.download("notes.txt", {ref: ch, onProgress, signal});
//   }
//
// Flow control -- what a data listener must know.  The server may only send
// what the client granted (credit), and the client grants again only for
// output that was *consumed*.  A chunk counts as consumed when every `data`
// (or `stderr`) listener it was given to is done with it:
//   * (bytes) => {...}               done when the listener returns;
//   * async (bytes) => {...}         done when its promise settles;
//   * (bytes, done) => {...}         done when it calls done() -- declare the
//                                    second parameter (Function.length >= 2).
// With xterm.js: ch.on("data", (bytes, done) => term.write(bytes, done)) --
// xterm calls `done` once it has parsed the chunk, so a terminal that cannot
// keep up holds the server back within one credit window (256 KiB - 2 MiB)
// instead of buffering without bound.  Output that arrives before the first
// data/stderr listener is kept (unconsumed, so bounded by the window) and
// delivered, in order, once one is registered.  After a listener exists,
// output of a stream nobody listens to (typically stderr) is discarded.
//
// Resume after a page reload: the restored channels come back *during*
// connect() as "channel" events -- register that listener in connect's
// `on: {channel}` option, or read conn.resumedChannels afterwards.  README.md
// next to this file lists the whole API.
//
// Bytes: output is a fresh Uint8Array per chunk (yours to keep); input may
// be a Uint8Array (any typed array, ArrayBuffer, Node Buffer) or a string
// (UTF-8).  Events carry plain objects; errors are NimbusError instances
// with {name, code, message, wsCode, appCode} (and hostKey for a host-key open_err).

export const PACKAGE = "nimbus-websocket";
/** The package's import name (the wheel's top-level folder). */
const IMPORT_NAME = "nimbus_websocket";
const BRIDGE = `${IMPORT_NAME}.web_runtime.bridge`;

const CONNECTION_EVENTS = ["statechange", "diagnostic", "policy", "error", "close", "channel"];
const CHANNEL_EVENTS = ["data", "stderr", "exit", "error", "close", "resumed", "viewers", "resize"];
/** Bytes of a File/Blob read (and sent) at a time by upload(): one data frame's worth. */
export const UPLOAD_CHUNK = 256 * 1024;
// download(): received chunks are folded into a Blob part every this many bytes.
const BLOB_PART_BYTES = 4 * 1024 * 1024;

/** A failed call or a terminal error: `code` is stable ("AUTH_FAILED", "RESUME_FAILED", ...). */
export class NimbusError extends Error {
  constructor(info = {}) {
    super(info.message ?? String(info.code ?? "error"));
    this.name = info.name ?? "NimbusError";
    this.code = info.code ?? "INTERNAL_ERROR";
    this.wsCode = info.wsCode ?? null;
    this.appCode = info.appCode ?? null;
    // {keyType, fingerprint, known, host}: the SSH host key a HOST_KEY_UNKNOWN /
    // HOST_KEY_CHANGED open error refused (core.errors.HostKey), else null.
    this.hostKey = info.hostKey ?? null;
  }

  toJSON() {
    const { name, code, message, wsCode, appCode, hostKey } = this;
    return { name, code, message, wsCode, appCode, ...(hostKey ? { hostKey } : {}) };
  }
}

function unwrap(json) {
  const res = JSON.parse(json);
  if (!res.ok) throw new NimbusError(res.error);
  return res.value;
}

function asInput(data) {
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) {
    // A plain Uint8Array view: Pyodide cannot read Node's Buffer subclass.
    return data.constructor === Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  throw new TypeError("send() takes a string, a typed array or an ArrayBuffer");
}

function abortError(signal) {
  const why = signal?.reason;
  const message = why instanceof Error && why.name !== "AbortError" ? why.message : "the transfer was cancelled";
  return new NimbusError({ name: "AbortError", code: "ABORTED", message });
}

// progress(done, total, rate, eta) from Python -> onProgress({done, total, rate, eta}).
function progressFn(onProgress, report) {
  if (typeof onProgress !== "function") return undefined;
  return (done, total, rate, eta) => {
    try {
      onProgress({ done, total: total ?? null, rate: rate ?? 0, eta: eta ?? null });
    } catch (e) {
      report(e, "transfer onProgress");
    }
  };
}

// Run one transfer of `py` (a TransferHandle) with `signal` wired to cancel().
async function runTransfer(py, signal, call) {
  const onAbort = () => py.cancel();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    if (signal?.aborted) py.cancel();
    return unwrap(await call());
  } catch (e) {
    if (e instanceof NimbusError && e.code === "ABORTED") throw abortError(signal);
    throw e;
  } finally {
    signal?.removeEventListener("abort", onAbort);
    try {
      py.destroy();
    } catch {
      // already destroyed
    }
  }
}

function defaultReport(err, where) {
  console.error(`nimbus: ${where} listener failed:`, err);
}

class Emitter {
  constructor(names, owner, report) {
    this._ls = Object.create(null);
    for (const n of names) this._ls[n] = [];
    this._owner = owner;
    this._report = report;
  }

  on(name, cb) {
    const ls = this._ls[name];
    if (!ls) throw new TypeError(`unknown ${this._owner} event "${name}" (one of ${Object.keys(this._ls).join(", ")})`);
    if (typeof cb !== "function") throw new TypeError("listener must be a function");
    ls.push(cb);
    return () => this.off(name, cb);
  }

  off(name, cb) {
    const ls = this._ls[name];
    const i = ls ? ls.indexOf(cb) : -1;
    if (i >= 0) ls.splice(i, 1);
  }

  count(name) {
    return this._ls[name].length;
  }

  listeners(name) {
    return this._ls[name].slice();
  }

  emit(name, ...args) {
    for (const cb of this.listeners(name)) {
      try {
        const r = cb(...args);
        if (r && typeof r.then === "function") r.then(undefined, (e) => this._report(e, `${this._owner} ${name}`));
      } catch (e) {
        this._report(e, `${this._owner} ${name}`);
      }
    }
  }
}

// ------------------------------------------------------------------ Channel

/** One terminal channel (from conn.openSession(), or restored by a resume: conn.on("channel")). */
export class Channel {
  constructor(conn, py) {
    this._conn = conn;
    this._py = py;
    this._events = new Emitter(CHANNEL_EVENTS, "channel", conn._report);
    this._buf = []; // output waiting for the first data/stderr listener: {name, bytes, token}
    this._flushQueued = false;
    this._token = 0;
    this._dead = false;
    /** Channel id (unique on the connection). */
    this.id = 0;
    /** True when the channel came back through a resume when the connection started. */
    this.resumed = false;
    /**
     * For a channel restored by a resume: the output position (bytes since the
     * channel opened) it resumed from -- its first chunk after the resume
     * starts at this offset.  null for a channel opened by this page.
     */
    this.resumedFrom = null;
    /** Exit status of the remote process, once it exited (null: not yet, or killed by a signal). */
    this.exitStatus = null;
    /** Signal that killed the remote process ("TERM", ...), if any. */
    this.exitSignal = null;
    /** Why the channel ended abnormally (a NimbusError), if it did. */
    this.error = null;
    this._closedInfo = null;
    this._viewers = null; // from the last "viewers" event
    this._termSize = null; // from the last "resize" event
    /** Resolves with {id, reason, exitStatus, exitSignal, error} once the channel is closed. */
    this.closed = new Promise((resolve) => (this._resolveClosed = resolve));
    // deliver(stream, Uint8Array) or deliver(stream, ArrayBuffer, offset, length): a view, no copy
    this._deliverFn = (code, data, offset, length) =>
      this._deliver(code, offset === undefined ? data : new Uint8Array(data, offset, length));
    this._dispatchFn = (name, json) => this._dispatch(name, json);
    this._release = py.release; // cached method proxies (hot paths)
    this._send = py.send;
    this._sendNow = py.send_now;
    this._sending = 0; // send() calls waiting in Python: later input queues behind them
    this._sendTail = Promise.resolve();
    py.attach(this._deliverFn, this._dispatchFn);
  }

  /** "opening", "open", "exited", "closing" or "closed". */
  get state() {
    return this._dead ? "closed" : this._py.state;
  }

  /**
   * Output bytes received on this channel since it opened (stdout and stderr
   * are one sequence; kept across reconnects and page reloads): the stream
   * position just past the last chunk handed to the listeners, and the
   * position the resume state stores.  Fixed once the channel is closed.
   */
  get received() {
    if (!this._dead) this._received = this._py.received;
    return this._received ?? 0;
  }

  /**
   * Who watches this channel through share links, as the server last said:
   * [{grant, mode: "read"|"write", peer, since (ms since the epoch)}].
   */
  get viewers() {
    if (this._viewers) return this._viewers.slice();
    return this._dead ? [] : JSON.parse(this._py.info).viewers ?? [];
  }

  /**
   * On a viewer's connection (conn.viewMode set): the shared terminal's size
   * {cols, rows} as the server last said (the "resize" event), else null.
   */
  get termSize() {
    if (this._termSize) return { ...this._termSize };
    if (this._dead) return null;
    const size = JSON.parse(this._py.info).termSize;
    return size ? { cols: size.cols, rows: size.rows } : null;
  }

  /**
   * A share link to this terminal (the connection's `share` must be true):
   * `mode` "read" (watch) or "write" (also type into it), valid `ttl` seconds
   * (default 3600).  Resolves with {grant, token, mode, expires (ms since the
   * epoch), link, url}: `link` is the page a viewer opens -- `page` (default:
   * this page's own location, without its ?token=/?share= and fragment) with
   * ?share=TOKEN, null where there is no location (Node) and no `page`;
   * `url` the endpoint's own ?share= URL (`nimbus-ws connect --share URL`).
   * Anyone holding the token may watch until it expires or is revoked
   * (unshare).  Rejects with a NimbusError (POLICY_DENIED, CHANNEL_LIMIT, UNSUPPORTED).
   */
  async share({ mode = "read", ttl = 3600, page } = {}) {
    if (this._dead) throw this.error ?? new NimbusError({ name: "ChannelError", code: "CLOSED", message: `channel ${this.id} is closed` });
    const value = unwrap(await this._py.share(String(mode), ttl == null ? undefined : Number(ttl)));
    return { ...value, link: shareLink(page, value.token) };
  }

  /** Revoke the share link `grant` (no grant: every link of this channel); its viewers are disconnected. */
  unshare(grant) {
    if (!this._dead) unwrap(this._py.unshare(grant == null ? undefined : String(grant)));
  }

  /**
   * Listen: "data" / "stderr" (bytes: Uint8Array, done?: () => void -- see the
   * flow-control note at the top), "exit" ({id, code, sig}), "error"
   * (NimbusError), "close" ({id, reason, exitStatus, exitSignal, error}),
   * "resumed" (this channel, after a reconnect brought it back), "viewers"
   * (the list `viewers` gives, whenever it changes), "resize" ({cols, rows}:
   * on a viewer's connection, the shared terminal's new size).
   * Returns a function that unsubscribes.
   */
  on(name, cb) {
    const off = this._events.on(name, cb);
    if ((name === "data" || name === "stderr") && this._buf.length) this._scheduleFlush();
    return off;
  }

  off(name, cb) {
    this._events.off(name, cb);
  }

  /** Send input (Uint8Array, typed array, ArrayBuffer, Buffer or string); resolves once queued. */
  async send(data) {
    if (this._dead) throw this.error ?? new NimbusError({ name: "ChannelError", code: "CLOSED", message: `channel ${this.id} is closed` });
    const input = asInput(data);
    if (this._sending === 0) {
      // A keystroke: straight to the socket when the input buffer has room (no Python task).
      const r = this._sendNow(input);
      if (r === true) return;
      if (typeof r === "string") unwrap(r);
    }
    // Input that has to wait: one Python send at a time, in call order.
    this._sending++;
    const prev = this._sendTail;
    const mine = prev.then(() => this._send(input));
    this._sendTail = mine.then(
      () => undefined,
      () => undefined,
    );
    try {
      unwrap(await mine);
    } finally {
      this._sending--;
    }
  }

  /** Resize the remote terminal (coalesced to ~20 per second). */
  resize(cols, rows) {
    if (!this._dead) this._py.resize(cols | 0, rows | 0);
  }

  /** Deliver a signal ("INT", "TERM", "HUP", ...) to the remote process. */
  async signal(sig) {
    if (!this._dead) unwrap(await this._py.signal(String(sig)));
  }

  /** Close the channel; resolves once the server confirmed. */
  async close(reason) {
    if (this._dead) return;
    unwrap(await this._py.close(reason == null ? undefined : String(reason)));
    await this.closed;
  }

  /** Resolves with the exit status once closed; rejects with the error if the channel ended abnormally. */
  async waitClosed() {
    const info = await this.closed;
    if (this.error) throw this.error;
    return info.exitStatus;
  }

  // -------------------------------------------------------------- internals

  _deliver(code, bytes) {
    const name = code === 2 ? "stderr" : "data";
    const listened = this._events.count("data") + this._events.count("stderr") > 0;
    if (this._buf.length || !listened) {
      const token = ++this._token;
      this._buf.push({ name, bytes, token });
      return token;
    }
    return this._run(name, bytes, undefined);
  }

  // Hand a chunk to the listeners of `name`.  Returns undefined when they all
  // finished synchronously, else a token that is released once they did.
  // `token` is given for a buffered chunk (already pending in Python).
  _run(name, bytes, token) {
    const listeners = this._events._ls[name];
    if (listeners.length === 1 && listeners[0].length < 2) {
      // The common case (one plain listener): no closures unless it returns a promise.
      let r;
      try {
        r = listeners[0](bytes);
      } catch (e) {
        this._conn._report(e, `channel ${name}`);
      }
      if (!(r && typeof r.then === "function")) {
        this._releaseToken(token);
        return undefined;
      }
      const tok = token === undefined ? ++this._token : token;
      const release = () => this._releaseToken(tok);
      r.then(release, (e) => {
        this._conn._report(e, `channel ${name}`);
        release();
      });
      return tok;
    }
    let pending = 1; // guard: nothing completes before the loop is over
    let tok = token;
    const finish = () => {
      if (--pending === 0) this._releaseToken(tok);
    };
    for (const cb of listeners.slice()) {
      let once = false;
      const done = () => {
        if (!once) {
          once = true;
          finish();
        }
      };
      try {
        if (cb.length >= 2) {
          pending++;
          cb(bytes, done);
        } else {
          const r = cb(bytes);
          if (r && typeof r.then === "function") {
            pending++;
            r.then(done, (e) => {
              this._conn._report(e, `channel ${name}`);
              done();
            });
          }
        }
      } catch (e) {
        this._conn._report(e, `channel ${name}`);
        if (cb.length >= 2) done();
      }
    }
    if (--pending === 0) {
      this._releaseToken(token);
      return undefined;
    }
    if (tok === undefined) tok = ++this._token;
    return tok;
  }

  _releaseToken(token) {
    if (token !== undefined && !this._dead) this._release(token);
  }

  _scheduleFlush() {
    if (this._flushQueued) return;
    this._flushQueued = true;
    queueMicrotask(() => {
      this._flushQueued = false;
      while (this._buf.length && this._events.count("data") + this._events.count("stderr") > 0) {
        const { name, bytes, token } = this._buf.shift();
        this._run(name, bytes, token);
      }
    });
  }

  _dispatch(name, json) {
    const p = json === undefined ? null : JSON.parse(json);
    switch (name) {
      case "exit":
        this.exitStatus = p.code;
        this.exitSignal = p.sig;
        this._events.emit("exit", p);
        break;
      case "error":
        this.error = new NimbusError(p);
        this._events.emit("error", this.error);
        break;
      case "close":
        this._onClose(p);
        break;
      case "resumed":
        this._events.emit("resumed", this);
        break;
      case "viewers":
        this._viewers = Array.isArray(p) ? p : [];
        this._events.emit("viewers", this._viewers.slice());
        break;
      case "resize":
        if (p) {
          this._termSize = { cols: p.cols, rows: p.rows };
          this._events.emit("resize", { ...this._termSize });
        }
        break;
      default:
        break;
    }
  }

  _onClose(p) {
    if (this._closedInfo) return;
    if (p.exitStatus !== null) this.exitStatus = p.exitStatus;
    if (p.exitSignal !== null) this.exitSignal = p.exitSignal;
    if (p.error && !this.error) this.error = new NimbusError(p.error);
    const info = { id: this.id, reason: p.reason, exitStatus: this.exitStatus, exitSignal: this.exitSignal, error: this.error };
    this._closedInfo = info;
    this._buf = [];
    this._conn._channels.delete(this);
    this._events.emit("close", info);
    this._resolveClosed(info);
    // Python is still on the stack: destroy the proxies afterwards.
    queueMicrotask(() => this._destroy());
  }

  _destroy() {
    if (this._dead) return;
    try {
      this._received = this._py.received;
    } catch {
      // the proxy is gone already: keep the last value read
    }
    this._dead = true;
    for (const p of [this._release, this._send, this._sendNow, this._py]) {
      try {
        p.destroy();
      } catch {
        // already destroyed
      }
    }
  }
}

// --------------------------------------------------------------- Connection

/** A nimbus.ssh.v1 connection (from nimbus.connect()). */
export class Connection {
  constructor(nimbus, url) {
    this._nimbus = nimbus;
    this._report = nimbus._report;
    /** The server URL. */
    this.url = url;
    this._py = null;
    this._events = new Emitter(CONNECTION_EVENTS, "connection", this._report);
    this._channels = new Set();
    this._resumed = [];
    this._final = null;
    /** The terminal error (NimbusError), once the connection ended abnormally. */
    this.error = null;
    /** Resolves with the terminal error (or null after a clean close) once the connection is closed. */
    this.closed = new Promise((resolve) => (this._resolveClosed = resolve));
    this._dispatchFn = (name, payload) => this._dispatch(name, payload);
  }

  /** "idle", "connecting", "authenticating", "ready", "reconnecting" or "closed". */
  get state() {
    return this._final ? "closed" : this._py ? this._py.state : "idle";
  }

  /** Snapshot {state, rttMs, bufferedAmount, pauseReasons, protocol, profile, transport, resumed, files}. */
  get info() {
    if (this._final) return { ...this._final, state: "closed" };
    return this._py ? JSON.parse(this._py.info) : { state: "idle" };
  }

  /** Round-trip time of the last ping/pong in ms (null before the first). */
  get rttMs() {
    return this.info.rttMs ?? null;
  }

  /** The socket's bufferedAmount (bytes queued, not yet on the network). */
  get bufferedAmount() {
    return this.info.bufferedAmount ?? 0;
  }

  /** Why credit is withheld right now: some of "transport", "visibility", "offline". */
  get pauseReasons() {
    return this.info.pauseReasons ?? [];
  }

  /** The negotiated WebSocket subprotocol. */
  get protocol() {
    return this.info.protocol ?? "";
  }

  /** The wire profile ("nimbus.v1", ...). */
  get profile() {
    return this.info.profile ?? "";
  }

  /** Channels restored by a resume when this connection started (e.g. after a page reload). */
  get resumedChannels() {
    return this._resumed.slice();
  }

  /** Channels not yet closed. */
  get channels() {
    return [...this._channels];
  }

  /**
   * Listen: "statechange" ({old, new, state, reason}), "diagnostic" ({timestamp,
   * phase, code, bufferedAmount, rttMs, ...}), "policy" ({kind, channel,
   * reason, value}), "error" (NimbusError), "close" (NimbusError or null),
   * "channel" (a Channel restored by a resume). Returns an unsubscribe function.
   */
  on(name, cb) {
    const off = this._events.on(name, cb);
    if (this._py && !this._final) this._py.want(name);
    return off;
  }

  off(name, cb) {
    this._events.off(name, cb);
  }

  /** Open a terminal channel: {target: {host, port}, user: {username, auth}, term?: {cols, rows, env}}. */
  async openSession(spec = {}) {
    this._alive();
    const py = this._py.new_channel();
    const ch = new Channel(this, py);
    this._channels.add(ch);
    let value;
    try {
      value = unwrap(await this._py.open_session(py, JSON.stringify(spec)));
    } catch (e) {
      this._channels.delete(ch);
      ch._destroy();
      throw e;
    }
    ch.id = value.id;
    return ch;
  }

  /** Whether the server transfers files (it announced `caps.files`): upload() and download() work. */
  get files() {
    return this.info.files === true;
  }

  /** Whether the server makes share links of this connection's terminals (`caps.share`): ch.share() works. */
  get share() {
    return this.info.share === true;
  }

  /** "read" or "write" when this connection watches a shared terminal (it connected with a share token), else null. */
  get viewMode() {
    return this.info.viewMode ?? null;
  }

  /**
   * Upload `file` (a File or Blob) to `path` on the server; resolves with the
   * bytes written once the server has the whole file in place.  The file is
   * read in slices of UPLOAD_CHUNK bytes (one read ahead), never whole.
   * Options: `ref` (a terminal channel, or its id: a relative `path` is taken
   * from that shell's working directory), `mode` (permission bits, e.g.
   * 0o600), `target`/`user` (default: those of `ref`'s channel, without
   * credentials), `onProgress({done, total, rate, eta})` (bytes, bytes/s,
   * seconds), `signal` (an AbortSignal: the channel closes, the server
   * deletes what it wrote, the promise rejects with an AbortError).
   * Rejects with a NimbusError: `FileTransferError` (`message` is the
   * server's reason), `FileReadError` (the file could not be read), ...
   */
  async upload(file, path, { ref, mode, target, user, onProgress, signal } = {}) {
    this._alive();
    if (!file || typeof file.slice !== "function" || typeof file.size !== "number") {
      throw new NimbusError({ name: "TypeError", code: "BAD_ARGUMENT", message: "upload() takes a File or a Blob" });
    }
    if (signal?.aborted) throw abortError(signal);
    const size = file.size;
    let pos = 0;
    let ahead = null;
    let readError = null;
    const readAt = (at) =>
      file
        .slice(at, Math.min(size, at + UPLOAD_CHUNK))
        .arrayBuffer()
        .then(
          (buf) => new Uint8Array(buf),
          (e) => {
            readError ??= e;
            return undefined; // ends the source early: the transfer fails, nothing is left behind
          },
        );
    // Python calls read() for each chunk; the next slice is already being read.
    const read = () => {
      if (pos >= size && !ahead) return undefined;
      const current = ahead ?? readAt(pos);
      pos = Math.min(size, pos + UPLOAD_CHUNK);
      ahead = pos < size ? readAt(pos) : null;
      return current;
    };
    const spec = { path: String(path), ...transferPeer(ref, target, user) };
    if (mode != null) spec.mode = mode | 0;
    const py = this._py.new_transfer();
    try {
      return await runTransfer(py, signal, () => py.upload(read, size, JSON.stringify(spec), progressFn(onProgress, this._report)));
    } catch (e) {
      if (readError && e?.code !== "ABORTED") {
        throw new NimbusError({ name: "FileReadError", code: "READ_FAILED", message: `the file could not be read: ${readError.message ?? readError}` });
      }
      throw e;
    }
  }

  /**
   * Download the server's file at `path`; resolves with a Blob of it.  The
   * chunks are gathered into Blob parts as they arrive (credit follows).
   * Options: `ref`, `target`, `user` (as for upload), `onSize(bytes)` once
   * the server opened the file, `onProgress({done, total, rate, eta})`,
   * `signal` (AbortSignal), `type` (the Blob's type, default
   * application/octet-stream).
   */
  async download(path, { ref, target, user, onProgress, onSize, signal, type = "application/octet-stream" } = {}) {
    this._alive();
    if (signal?.aborted) throw abortError(signal);
    const parts = [];
    let batch = [];
    let batchBytes = 0;
    const fold = () => {
      if (!batch.length) return;
      parts.push(new Blob(batch)); // a copy: the received messages' buffers are let go
      batch = [];
      batchBytes = 0;
    };
    // sink(Uint8Array) or sink(ArrayBuffer, offset, length): a view of the received message.
    const sink = (data, offset, length) => {
      const bytes = offset === undefined ? data : new Uint8Array(data, offset, length);
      batch.push(bytes);
      batchBytes += bytes.byteLength;
      if (batchBytes >= BLOB_PART_BYTES) fold();
    };
    const sized =
      typeof onSize === "function"
        ? (n) => {
            try {
              onSize(n);
            } catch (e) {
              this._report(e, "transfer onSize");
            }
          }
        : undefined;
    const spec = { path: String(path), ...transferPeer(ref, target, user) };
    const py = this._py.new_transfer();
    await runTransfer(py, signal, () => py.download(JSON.stringify(spec), sink, progressFn(onProgress, this._report), sized));
    fold();
    return new Blob(parts, { type });
  }

  /** Send a heartbeat now (the RTT updates when the pong arrives). */
  ping() {
    if (!this._final && this._py) this._py.ping();
  }

  /** Write the resume state now (done automatically on pagehide). */
  persist() {
    if (!this._final && this._py) this._py.persist();
  }

  /** Check the connection with a ping; if nothing answers in time it is dropped and resumed. */
  verify(why = "application") {
    if (!this._final && this._py) this._py.verify(String(why));
  }

  /** Withhold credit for `reason` ("visibility", "offline") or stop (done automatically from page events). */
  setPause(reason, paused) {
    if (!this._final && this._py) this._py.set_pause(String(reason), !!paused);
  }

  /** Close: 1000 (default) ends the server session and clears the resume state; any other code keeps it. */
  async close(code = 1000, reason = "") {
    if (this._final || !this._py) return;
    unwrap(await this._py.close(code, String(reason)));
    await this.closed;
  }

  // -------------------------------------------------------------- internals

  _alive() {
    if (this._final || !this._py) {
      throw this.error ?? new NimbusError({ name: "CloseError", code: "CLOSED", message: "connection is closed", wsCode: 1000 });
    }
  }

  _dispatch(name, payload) {
    if (name === "channel") {
      const ch = new Channel(this, payload);
      const info = JSON.parse(payload.info);
      ch.id = info.id;
      ch.resumed = true;
      ch.resumedFrom = info.resumedFrom ?? null;
      this._channels.add(ch);
      this._resumed.push(ch);
      this._events.emit("channel", ch);
      return;
    }
    const p = payload === undefined ? null : JSON.parse(payload);
    switch (name) {
      case "error":
        this.error = new NimbusError(p);
        this._events.emit("error", this.error);
        break;
      case "close":
        this._onClose(p);
        break;
      default:
        this._events.emit(name, p);
    }
  }

  _onClose(p) {
    if (this._final) return;
    if (p && !this.error) this.error = new NimbusError(p);
    this._final = this._py ? JSON.parse(this._py.info) : { state: "closed" };
    this._events.emit("close", this.error);
    this._resolveClosed(this.error);
    const py = this._py;
    queueMicrotask(() => {
      try {
        py?.destroy();
      } catch {
        // already destroyed
      }
    });
  }
}

// The page a viewer opens for share token `token`: `page` (default: this page's
// location) without a ?token=, ?share= or fragment, with ?share=TOKEN.  null
// where there is neither (Node).
function shareLink(page, token) {
  const base = page ?? globalThis.location?.href;
  if (!base) return null;
  const url = new URL(String(base), globalThis.location?.href);
  url.hash = "";
  url.searchParams.delete("token");
  url.searchParams.delete("share");
  url.searchParams.set("share", token);
  return url.href;
}

// {ref, target, user} of a transfer's spec (ref: a Channel or its id).
function transferPeer(ref, target, user) {
  const out = {};
  if (ref != null) out.ref = typeof ref === "object" ? ref.id : Number(ref);
  if (target != null) out.target = target;
  if (user != null) out.user = user;
  return out;
}

// -------------------------------------------------------------------- nimbus

function mergeOptions(defaults, options) {
  const out = { ...defaults, ...options };
  for (const k of ["resume", "retry"]) {
    if (defaults[k] || options[k]) out[k] = { ...(defaults[k] ?? {}), ...(options[k] ?? {}) };
  }
  return out;
}

/**
 * Wrap a Pyodide instance that has the nimbus-websocket wheel installed.
 * `WebSocket`: the JavaScript class to use (default: the global one);
 * `defaults`: connect options applied to every connect();
 * `onListenerError(err, where)`: where listener exceptions go (default console.error).
 */
export function createNimbus(pyodide, { WebSocket, defaults = {}, onListenerError } = {}) {
  // socket.py's onmessage adapter, written here so that no eval is needed: the page works
  // under a Content-Security-Policy without 'unsafe-eval' (docs/security.md).
  pyodide.registerJsModule("_nimbus_js", { dataOnly: (f) => (ev) => f(ev.data) });
  const bridge = pyodide.pyimport(BRIDGE);
  const version = pyodide.runPython("import nimbus_websocket; nimbus_websocket.__version__");
  const closeCodes = pyodide.pyimport("nimbus_websocket.core.errors");
  const nimbus = {
    version,
    pyodide,
    timings: null,
    NimbusError,
    _report: onListenerError ?? defaultReport,

    /** `{name, text}` of a WebSocket/nimbus close code, e.g. 4003 -> {name: "AUTH_FAILED", text: "authentication failed"}. */
    describeCloseCode(code) {
      return { name: closeCodes.close_code_name(code), text: closeCodes.describe_close_code(code) };
    },

    /**
     * Connect and resolve when ready.  Options (all optional but url):
     * url, auth (token string | {scheme, token} | () => token/object/Promise),
     * share (a share link's token: connect as its viewer -- sent as the bearer
     * token, instead of auth),
     * profile, resume {storage: "session"|"memory"|"none", ttlMs, key},
     * retry {baseMs, jitter, maxRetries, factor, maxDelayMs}, highWaterMark,
     * lowWaterMark, clientInfo, heartbeatIntervalMs, heartbeatMisses,
     * handshakeTimeoutMs, window, maxWindow, inputBufferLimit, ack,
     * pingOnReady, closeTimeoutMs, lifecycle (follow page
     * visibility/online/pagehide, default true), verifyTimeoutMs,
     * suspectAfterMs, WebSocket (class), on {event: listener}.
     * Rejects with a NimbusError (code "CONNECT_FAILED", "AUTH_FAILED", ...).
     */
    async connect(options = {}) {
      const { on, auth: given, share, WebSocket: ws, ...rest } = mergeOptions(defaults, options);
      if (!rest.url) throw new NimbusError({ name: "TypeError", code: "BAD_ARGUMENT", message: "connect() needs a url" });
      if (share != null && options.auth != null) {
        throw new NimbusError({ name: "TypeError", code: "BAD_ARGUMENT", message: "connect() takes `share` or `auth`, not both" });
      }
      // A viewer: the share link's token is its bearer token (PROTOCOL.md, share links).
      const auth = share != null ? { scheme: "bearer", token: String(share) } : given;
      const conn = new Connection(nimbus, rest.url);
      for (const [name, cb] of Object.entries(on ?? {})) conn.on(name, cb);
      const json = { ...rest };
      let authFn;
      if (typeof auth === "function") authFn = auth;
      else if (auth != null) json.auth = auth;
      const wanted = CONNECTION_EVENTS.filter((n) => conn._events.count(n) > 0);
      conn._py = bridge.ConnectionHandle(conn._dispatchFn, wanted);
      const result = await conn._py.connect(JSON.stringify(json), authFn, ws ?? WebSocket);
      unwrap(result);
      return conn;
    },
  };
  return nimbus;
}

/**
 * Install the wheel into `pyodide` (by URL, or by name from the dist's lock
 * file) and check the import.  `wheelData` (the wheel's bytes, already
 * fetched and checked) is written once to /lib/ and, when it carries its
 * bytecode where zipimport looks for it (`pkg/mod.pyc`: the page's wheel,
 * scripts/build_site.py page_wheel), imported from the archive (first on
 * sys.path), which skips unpacking it file by file and the modules unpacking
 * imports (~50 ms of a cold page load); any other wheel (bytecode under
 * __pycache__/, which zipimport ignores) is unpacked into site-packages.
 */
export async function installNimbus(pyodide, { wheelURL, packageName = PACKAGE, onProgress, wheelData } = {}) {
  if (wheelData) {
    const path = `/lib/${PACKAGE}.whl`;
    pyodide.FS.writeFile(path, wheelData);
    const scope = pyodide.globals.get("dict")(); // not __main__'s globals
    const mounted = pyodide.runPython(
      `import sys, zipfile\np = ${JSON.stringify(path)}\n` +
        `with zipfile.ZipFile(p) as z:\n    ok = ${JSON.stringify(IMPORT_NAME + "/__init__.pyc")} in z.NameToInfo\n` +
        `if ok and p not in sys.path:\n    sys.path.insert(0, p)\nok`,
      { globals: scope },
    );
    scope.destroy();
    if (!mounted) {
      pyodide.FS.unlink(path);
      const site = pyodide.runPython("import sysconfig; sysconfig.get_path('purelib')");
      pyodide.unpackArchive(wheelData, "wheel", { extractDir: site });
      pyodide.runPython("import importlib; importlib.invalidate_caches()");
    }
  } else {
    const errors = [];
    // loadPackage resolves even when a fetch failed: collect the errors.
    await pyodide.loadPackage(wheelURL ?? packageName, {
      messageCallback: (m) => onProgress?.({ phase: "package", message: m }),
      errorCallback: (m) => errors.push(m),
    });
    if (errors.length) throw new Error(`installing ${wheelURL ?? packageName} failed: ${errors.join("; ")}`);
  }
  pyodide.pyimport(BRIDGE);
}

function hexToBase64(hex) {
  let bin = "";
  for (let i = 0; i < hex.length; i += 2) bin += String.fromCharCode(parseInt(hex.slice(i, i + 2), 16));
  return btoa(bin);
}

// Fetch the wheel while Pyodide boots (it is not needed before): by URL, or
// the lock file's entry for `packageName` under `base`, checked against the
// lock file's sha256 (subresource integrity).  null on any failure: the
// caller falls back to loadPackage, which reports the error properly.
async function prefetchWheel(base, wheelURL, packageName = PACKAGE) {
  try {
    let url = wheelURL;
    let integrity;
    if (!url) {
      if (!base) return null;
      const lock = await (await fetch(base + "pyodide-lock.json")).json();
      const entry = lock?.packages?.[packageName];
      if (!entry?.file_name) return null;
      url = new URL(entry.file_name, new URL(base, location.href)).href;
      if (entry.sha256) integrity = "sha256-" + hexToBase64(entry.sha256);
    }
    const r = await fetch(url, integrity ? { integrity } : {});
    return r.ok ? new Uint8Array(await r.arrayBuffer()) : null;
  } catch {
    return null;
  }
}

function withSlash(url) {
  const s = String(url);
  return s.endsWith("/") ? s : s + "/";
}

/**
 * Browser loader: boot Pyodide from `indexURL` (the offline dist folder, no
 * CDN), install the wheel (`wheelURL`, or "nimbus-websocket" from the dist's
 * lock file), return the facade.  `onProgress({phase, message?, timings?})`
 * reports "runtime", "package", "ready".  An already loaded `pyodide` (or a
 * `loadPyodide` function) may be passed instead of `indexURL`.
 * `nimbus.timings` = {bootMs, installMs, totalMs}.
 */
export async function loadNimbus(options = {}) {
  const { indexURL, wheelURL, onProgress, packageName, pyodide: given, loadPyodide: loader, ...rest } = options;
  const now = () => performance.now();
  const t0 = now();
  let pyodide = given;
  let wheel = null;
  if (!pyodide) {
    if (!indexURL && !loader) throw new TypeError("loadNimbus() needs indexURL (the Pyodide dist folder URL)");
    onProgress?.({ phase: "runtime", message: "loading Pyodide" });
    const base = indexURL ? withSlash(indexURL) : undefined;
    wheel = globalThis.location ? prefetchWheel(base, wheelURL, packageName) : null;
    const load = loader ?? (await import(/* webpackIgnore: true */ base + "pyodide.mjs")).loadPyodide;
    pyodide = await load(base ? { indexURL: base } : {});
  }
  const t1 = now();
  onProgress?.({ phase: "package", message: `installing ${wheelURL ?? packageName ?? PACKAGE}` });
  await installNimbus(pyodide, { wheelURL, packageName, onProgress, wheelData: await wheel });
  const nimbus = createNimbus(pyodide, rest);
  const t2 = now();
  nimbus.timings = { bootMs: t1 - t0, installMs: t2 - t1, totalMs: t2 - t0 };
  onProgress?.({ phase: "ready", timings: nimbus.timings });
  return nimbus;
}
