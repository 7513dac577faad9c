// The Node.js shim (node_runtime/shim/index.mjs) against the real reference server.
//
//   node --test tests/shim/          (tests/shim/test_node_shim.py runs this under pytest)
//
// The server is started here as a child process: `.venv/bin/nimbus-ws serve
// --port 0 --pty-command "exec /bin/sh"` ($NIMBUS_WS overrides the binary);
// its URL is parsed from the line it prints on stderr.  Pyodide boots from the
// offline dist folder ($NIMBUS_PYODIDE_DIST or build/pyodide-dist).  Every wait
// is a condition with a deadline; nothing sleeps to synchronise.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { WebSocketServer } from "ws";

import { loadNimbus, NimbusError, nodeWebSocketClass } from "../../node_runtime/shim/index.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const NIMBUS_WS = process.env.NIMBUS_WS ?? path.join(ROOT, ".venv", "bin", "nimbus-ws");
const TARGET = { host: "127.0.0.1", port: 22 };
const USER = { username: "tester" };
const decode = (chunks) => Buffer.concat(chunks.map((c) => Buffer.from(c))).toString("latin1");

function startServer(args) {
  const proc = spawn(NIMBUS_WS, ["serve", "--port", "0", ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  const url = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nimbus-ws serve did not start:\n${log}`)), 20_000);
    proc.stderr.on("data", (d) => {
      log += d;
      const m = log.match(/nimbus-ws serving (ws:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`nimbus-ws serve exited (${code}):\n${log}`));
    });
  });
  return { proc, url, log: () => log };
}

async function until(pred, ms, what) {
  const end = performance.now() + ms;
  while (!pred()) {
    if (performance.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

let server;
let url;
let nimbus;
const listenerErrors = [];

before(async () => {
  server = startServer(["--pty-command", "exec /bin/sh"]);
  url = await server.url;
  nimbus = await loadNimbus({ onListenerError: (err, where) => listenerErrors.push([where, String(err)]) });
});

after(async () => {
  if (server && server.proc.exitCode === null) {
    server.proc.kill("SIGTERM");
    await once(server.proc, "exit");
  }
});

test("boots Pyodide offline from the dist folder and installs the wheel", () => {
  assert.match(nimbus.version, /^\d+\.\d+/);
  assert.ok(nimbus.timings.totalMs > 0 && nimbus.timings.bootMs > 0);
  assert.equal(typeof nimbus.connect, "function");
});

test("opens a channel, runs a command, reads its output and exit code", async () => {
  const states = [];
  const diags = [];
  const conn = await nimbus.connect({
    url,
    on: { statechange: (e) => states.push(e.new), diagnostic: (d) => diags.push(d.code) },
  });
  assert.equal(conn.state, "ready");
  assert.equal(conn.protocol, "nimbus.ssh.v1");
  assert.deepEqual(conn.pauseReasons, []);
  const ch = await conn.openSession({ target: TARGET, user: USER }); // no term: sh on pipes
  const out = [];
  const err = [];
  ch.on("data", (bytes) => {
    assert.ok(bytes instanceof Uint8Array);
    out.push(bytes);
  });
  ch.on("stderr", (bytes) => err.push(bytes));
  const exits = [];
  ch.on("exit", (e) => exits.push(e));
  await ch.send("printf 'a\\000b\\377'; echo to-stderr >&2; seq 1 50000; exit 3\n");
  assert.equal(await ch.waitClosed(), 3);
  const expected = "a\x00b\xff" + Array.from({ length: 50000 }, (_, i) => `${i + 1}\n`).join("");
  assert.equal(decode(out), expected);
  assert.equal(decode(err), "to-stderr\n");
  assert.deepEqual(exits, [{ id: ch.id, code: 3, sig: null }]);
  assert.equal(ch.state, "closed");
  await conn.close();
  assert.equal(conn.state, "closed");
  assert.deepEqual(states, ["connecting", "authenticating", "ready", "closed"]);
  for (const code of ["transport_selected", "websocketstream_unavailable", "hello_sent", "hello_ok"]) {
    assert.ok(diags.includes(code), `${code} in ${diags}`);
  }
});

test("PTY channel: resize, signal, Buffer and string input", async () => {
  const conn = await nimbus.connect({ url });
  const ch = await conn.openSession({ target: TARGET, user: USER, term: { cols: 80, rows: 24 } });
  const screen = [];
  ch.on("data", (b) => screen.push(b));
  ch.resize(120, 40);
  await ch.send(Buffer.from("stty size\n")); // a Node Buffer: converted to a plain Uint8Array view
  await until(() => decode(screen).includes("40 120"), 10_000, "stty size");
  // the job prints a marker once it runs in the foreground, so INT cannot be lost
  await ch.send("sh -c 'echo job-sta\"\"rted; exec sleep 30'\n");
  await until(() => decode(screen).includes("job-started"), 10_000, "the job to start");
  await ch.signal("INT");
  await ch.send("exit 9\n");
  assert.equal(await ch.waitClosed(), 9);
  await conn.close();
});

test("ch.close() ends a running channel; conn.close() ends the rest", async () => {
  const conn = await nimbus.connect({ url });
  const a = await conn.openSession({ target: TARGET, user: USER });
  const b = await conn.openSession({ target: TARGET, user: USER });
  assert.notEqual(a.id, b.id);
  assert.equal(conn.channels.length, 2);
  await a.close("done with it");
  assert.equal(a.state, "closed");
  assert.equal((await a.closed).id, a.id);
  assert.equal(conn.channels.length, 1);
  await assert.rejects(a.send("x"), (e) => e.code === "CLOSED");
  const closing = b.closed;
  await conn.close();
  const info = await closing;
  assert.equal(info.id, b.id);
  assert.equal(conn.channels.length, 0);
  assert.equal(await conn.closed, null); // a clean close: no error
});

test("consumption is signalled by done(): credit waits for it", async () => {
  const conn = await nimbus.connect({ url });
  const grants = [];
  conn.on("policy", (p) => p.kind === "credit_grant" && grants.push(p));
  const ch = await conn.openSession({ target: TARGET, user: USER });
  const held = [];
  let total = 0;
  ch.on("data", (bytes, done) => {
    total += bytes.length;
    held.push(done);
  });
  await ch.send("head -c 2000000 /dev/zero; exit 0\n");
  await until(() => total === 256 * 1024, 10_000, "one window");
  assert.equal(grants.filter((g) => g.channel === ch.id).length, 1); // nothing consumed: no new grant
  const pump = setInterval(() => held.splice(0).forEach((done) => done()), 1);
  try {
    assert.equal(await ch.waitClosed(), 0);
  } finally {
    clearInterval(pump);
  }
  assert.equal(total, 2_000_000);
  await conn.close();
});

test("async listeners: consumed when the promise settles; throwing listeners are reported", async () => {
  const conn = await nimbus.connect({ url });
  const ch = await conn.openSession({ target: TARGET, user: USER });
  let total = 0;
  ch.on("data", async (bytes) => {
    await Promise.resolve();
    total += bytes.length;
  });
  ch.on("data", () => {
    throw new Error("boom"); // must neither kill Node nor stall the channel
  });
  await ch.send("head -c 700000 /dev/zero; exit 0\n");
  assert.equal(await ch.waitClosed(), 0);
  assert.equal(total, 700_000);
  assert.ok(listenerErrors.some(([where, e]) => where === "channel data" && e.includes("boom")));
  await conn.close();
});

test("errors are NimbusError: refused connection, bad options, open_err", async () => {
  await assert.rejects(nimbus.connect({ url: "ws://127.0.0.1:9/ws/ssh", retry: { maxRetries: 0 } }), (e) => {
    assert.ok(e instanceof NimbusError);
    assert.equal(e.code, "CONNECT_FAILED");
    return true;
  });
  await assert.rejects(nimbus.connect({ url, noSuchOption: 1 }), (e) => e.code === "BAD_ARGUMENT");
  const conn = await nimbus.connect({ url });
  await assert.rejects(conn.openSession({ target: TARGET }), (e) => e.code === "BAD_ARGUMENT");
  await conn.close();
  await assert.rejects(conn.openSession({ target: TARGET, user: USER }), (e) => e.name === "CloseError");
});

test("nodeWebSocketClass: arraybuffer, and listener exceptions do not kill the process", async () => {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await once(wss, "listening");
  wss.on("connection", (s) => s.send(Buffer.from([1, 2, 3])));
  const reported = [];
  const NodeWS = nodeWebSocketClass(undefined, (err, where) => reported.push([where, err.message]));
  const ws = new NodeWS(`ws://127.0.0.1:${wss.address().port}/`);
  const got = [];
  ws.onmessage = (ev) => {
    got.push(ev.data);
    throw new Error("listener bug");
  };
  await until(() => got.length === 1, 5_000, "a message");
  assert.equal(ws.binaryType, "arraybuffer");
  assert.ok(got[0] instanceof ArrayBuffer);
  assert.deepEqual([...new Uint8Array(got[0])], [1, 2, 3]);
  assert.deepEqual(reported, [["WebSocket message", "listener bug"]]);
  ws.onmessage = null;
  ws.close();
  await new Promise((resolve) => wss.close(resolve));
});
