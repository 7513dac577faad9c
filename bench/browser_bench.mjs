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
  await post("echo", { who: "plain", rtts: await plainEcho(`${cfg.plain}/echo`, cfg.echo) });
  await post("echo", { who: "nimbus", rtts: await nimbusEcho(nimbus, cfg.echoServer, cfg.echo) });
  if (cfg.profile) {
    // Where the Pyodide client spends its time (64 KiB frames, synthetic sender).
    const size = cfg.sizes[cfg.sizes.length - 1];
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
