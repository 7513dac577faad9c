// The page half of bench/browser.py (loaded by browser_bench.html in a headless
// Chromium that bench/browser.py launched; no Playwright attached).  Reads its
// plan from /config, runs it, and POSTs every result to /result.
//
//   (a) plain JavaScript WebSocket receiving a stream (a bare websockets sender)
//   (b) the Pyodide client (JS facade -> Python -> core) receiving a stream
//       through the protocol from the reference server (sh: head -c N /dev/zero,
//       pipes) and from a synthetic credit-respecting nimbus sender
//   echo round trips for both; Pyodide boot + wheel install.

import { loadNimbus } from "/js/nimbus.mjs";

const log = (msg) => fetch("/log", { method: "POST", body: String(msg) });
const post = (kind, value) => fetch("/result", { method: "POST", body: JSON.stringify({ kind, ...value }) });
const now = () => performance.now();

// ------------------------------------------------------------ (a) plain JS

function plainStream(url, total) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    let got = 0;
    let first = 0;
    let start = 0;
    ws.onopen = () => {
      start = now();
      ws.send("go");
    };
    ws.onmessage = (ev) => {
      if (!first) first = now();
      got += ev.data.byteLength;
      if (got >= total) {
        const end = now();
        ws.close();
        resolve({ bytes: got, ms: end - first, msFromStart: end - start });
      }
    };
    ws.onerror = () => reject(new Error(`plain stream ${url} failed`));
  });
}

function plainEcho(url, rounds) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    const rtts = [];
    const byte = new Uint8Array([0x61]);
    let t = 0;
    ws.onopen = () => {
      t = now();
      ws.send(byte);
    };
    ws.onmessage = () => {
      rtts.push(now() - t);
      if (rtts.length >= rounds) {
        ws.close();
        resolve(rtts);
        return;
      }
      t = now();
      ws.send(byte);
    };
    ws.onerror = () => reject(new Error("plain echo failed"));
  });
}

// A ceiling: the same plain stream into a bare Python handler (ev.data.to_bytes() and a
// counter) -- what any Python on the receive path costs before the protocol does anything.
function bareStream(pyodide, url, total) {
  const handler = pyodide.runPython(`
from pyodide.ffi import create_proxy
_bare = {"n": 0}
def _bare_on_message(data):
    _bare["n"] += len(data.to_bytes())
    return _bare["n"]
create_proxy(_bare_on_message)
`);
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    let first = 0;
    ws.onopen = () => ws.send("go");
    ws.onmessage = (ev) => {
      if (!first) first = now();
      if (handler(ev.data) >= total) {
        const end = now();
        ws.close();
        handler.destroy();
        resolve({ bytes: total, ms: end - first });
      }
    };
    ws.onerror = () => reject(new Error("bare stream failed"));
  });
}

// --------------------------------------------------------- (b) Pyodide

const TARGET = { host: "127.0.0.1", port: 22 };
const USER = { username: "bench" };

async function nimbusStream(nimbus, url, total) {
  const conn = await nimbus.connect({ url, resume: { storage: "memory" }, lifecycle: false });
  let got = 0;
  let first = 0;
  let last = 0;
  const start = now();
  const ch = await conn.openSession({ target: TARGET, user: USER });
  ch.on("data", (bytes) => {
    if (!first) first = now();
    got += bytes.length;
    last = now();
  });
  const exit = await ch.waitClosed();
  await conn.close();
  return { bytes: got, ms: last - first, msFromStart: last - start, exit };
}

async function nimbusEcho(nimbus, url, rounds) {
  const conn = await nimbus.connect({ url, resume: { storage: "memory" }, lifecycle: false });
  const ch = await conn.openSession({ target: TARGET, user: USER });
  let wake = null;
  ch.on("data", () => wake?.());
  const byte = new Uint8Array([0x61]);
  const rtts = [];
  for (let i = 0; i < rounds; i++) {
    const t = now();
    const arrived = new Promise((resolve) => (wake = resolve));
    await ch.send(byte);
    await arrived;
    rtts.push(now() - t);
  }
  await ch.close();
  await conn.close();
  return rtts;
}

// ------------------------------------- echo through xterm.js: key -> byte on screen

// One terminal per side (80x24, DOM renderer), as the demo page has.  A round trip
// starts at the key (term.input(): what xterm's key handler calls, onData fires
// synchronously) and ends in xterm's write callback for the echoed byte (parsed
// into the buffer; the screen repaints on the next frame).
function newTerm() {
  const el = document.createElement("div");
  document.getElementById("terms").appendChild(el);
  const term = new globalThis.Terminal({ cols: 80, rows: 24, scrollback: 1000 });
  term.open(el);
  return term;
}

function roundTrip(side) {
  return new Promise((resolve) => {
    side.wake = resolve;
    const t = now();
    side.term.input("a", true);
    side.t = t;
  }).then((end) => end - side.t);
}

// Plain JS: xterm onData -> WebSocket.send; onmessage -> term.write(bytes, callback).
function plainXterm(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    const term = newTerm();
    const enc = new TextEncoder();
    const side = { term, wake: null, t: 0, close: () => (ws.close(), term.dispose()) };
    const written = () => {
      const end = now();
      const w = side.wake;
      side.wake = null;
      w?.(end);
    };
    term.onData((s) => ws.send(enc.encode(s)));
    ws.onmessage = (ev) => term.write(new Uint8Array(ev.data), written);
    ws.onopen = () => resolve(side);
    ws.onerror = () => reject(new Error("plain xterm echo failed"));
  });
}

// The Pyodide client the way the demo page uses it (demo_site/nimbus_adapter.mjs):
// ch.on("data", (bytes, done) => term.write(bytes, done)), term.onData(s => ch.send(s)).
async function nimbusXterm(nimbus, url) {
  const conn = await nimbus.connect({ url, resume: { storage: "memory" }, lifecycle: false });
  const ch = await conn.openSession({ target: TARGET, user: USER, term: { cols: 80, rows: 24 } });
  const term = newTerm();
  const side = { term, wake: null, t: 0 };
  ch.on("data", (bytes, done) =>
    term.write(bytes, () => {
      const end = now();
      done();
      const w = side.wake;
      side.wake = null;
      w?.(end);
    }),
  );
  term.onData((s) => ch.send(s));
  side.close = async () => {
    await ch.close();
    await conn.close();
    term.dispose();
  };
  return side;
}

// Both sides open at once, measured in alternating blocks (plain, nimbus, plain...),
// so the machine's load hits both alike.
async function xtermEcho(nimbus, plainUrl, nimbusUrl, rounds, block = 25) {
  const plain = await plainXterm(plainUrl);
  const nim = await nimbusXterm(nimbus, nimbusUrl);
  const out = { plain: [], nimbus: [] };
  // warm-up (JIT, first paint) not counted
  for (let i = 0; i < 20; i++) {
    await roundTrip(plain);
    await roundTrip(nim);
  }
  while (out.plain.length < rounds) {
    const n = Math.min(block, rounds - out.plain.length);
    for (let i = 0; i < n; i++) out.plain.push(await roundTrip(plain));
    for (let i = 0; i < n; i++) out.nimbus.push(await roundTrip(nim));
  }
  await plain.close();
  await nim.close();
  return out;
}

// ------------------------------------------------------------------ main

async function main() {
  const cfg = await (await fetch("/config")).json();
  await log(`plan: ${JSON.stringify({ sizes: cfg.sizes, mb: cfg.total / 1e6, runs: cfg.runs })}`);

  // Boot first, on a fresh page (nothing cached but what the HTTP server sends).
  const t0 = now();
  const nimbus = await loadNimbus({ indexURL: "/dist/" });
  const fetched = performance
    .getEntriesByType("resource")
    .filter((e) => e.name.includes("/dist/"))
    .map((e) => ({ file: e.name.split("/").pop(), startMs: e.startTime - t0, ms: e.duration, bytes: e.encodedBodySize }));
  await post("boot", { ...nimbus.timings, wallMs: now() - t0, fetched });
  await log(`boot ${nimbus.timings.bootMs.toFixed(0)} ms + install ${nimbus.timings.installMs.toFixed(0)} ms`);

  for (let run = 0; run < cfg.runs; run++) {
    for (const size of cfg.sizes) {
      const a = await plainStream(`${cfg.plain}/stream?size=${size}&total=${cfg.total}`, cfg.total);
      await post("stream", { who: "plain", size, run, ...a });
      const b = await nimbusStream(nimbus, cfg.reference[size], cfg.total);
      await post("stream", { who: "nimbus-reference", size, run, ...b });
      const c = await nimbusStream(nimbus, `${cfg.plain}/nimbus?size=${size}&total=${cfg.total}`, cfg.total);
      await post("stream", { who: "nimbus-synthetic", size, run, ...c });
      await log(`run ${run} size ${size}: plain ${(a.bytes / a.ms / 1e3).toFixed(0)} MB/s, ` +
        `reference ${(b.bytes / b.ms / 1e3).toFixed(0)} MB/s, synthetic ${(c.bytes / c.ms / 1e3).toFixed(0)} MB/s`);
    }
  }
  for (const size of cfg.sizes) {
    const r = await bareStream(nimbus.pyodide, `${cfg.plain}/stream?size=${size}&total=${cfg.total}`, cfg.total);
    await post("stream", { who: "bare-python", size, run: 0, ...r });
  }
  if (cfg.echo > 0) {
    await post("echo", { who: "plain-ws", rtts: await plainEcho(`${cfg.plain}/echo`, cfg.echo) });
    await post("echo", { who: "nimbus-ws", rtts: await nimbusEcho(nimbus, cfg.echoServer, cfg.echo) });
    const x = await xtermEcho(nimbus, cfg.plainEcho ?? `${cfg.plain}/echo`, cfg.echoServer, cfg.echo);
    await post("echo", { who: "plain", xterm: true, rtts: x.plain });
    await post("echo", { who: "nimbus", xterm: true, rtts: x.nimbus });
  }
  if (cfg.profile) {
    // Where the Pyodide client spends its time (64 KiB frames, synthetic sender).
    const size = cfg.profileSize ?? cfg.sizes[cfg.sizes.length - 1];
    const prof = await profile(nimbus, `${cfg.plain}/nimbus?size=${size}&total=${cfg.total}`, cfg.total, cfg.profileSort);
    await post("profile", prof);
  }
  await post("done", {});
}

// Wall time split of the receive path: JS listener vs everything else.
async function profile(nimbus, url, total, sort = "tottime") {
  const py = nimbus.pyodide;
  py.runPython(`
import cProfile, pstats, io
_nimbus_prof = cProfile.Profile()
_NIMBUS_SORT = "${sort}"
_NIMBUS_N = 22
`);
  py.runPython("_nimbus_prof.enable()");
  const r = await nimbusStream(nimbus, url, total);
  const text = py.runPython(`
_nimbus_prof.disable()
_s = io.StringIO()
pstats.Stats(_nimbus_prof, stream=_s).sort_stats(_NIMBUS_SORT).print_stats(_NIMBUS_N)
_s.getvalue()
`);
  return { ...r, text };
}

main().catch(async (e) => {
  await post("error", { message: String(e && e.stack ? e.stack : e) });
});
