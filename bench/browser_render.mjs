// The page half of bench/browser_render.py: a PTY's output rendered by xterm.js,
// (a) plain JS: a WebSocket from the bare bridge (no protocol, no flow control),
//     every message straight into term.write();
// (b) the Pyodide client from this server, the demo page's way:
//     ch.on("data", (bytes, done) => term.write(bytes, done))  (credit follows xterm).
// Runs alternate (a), (b), (a), (b)...; each on a fresh 80x24 terminal.  Timed from
// the first byte to xterm's write callback of the last one.  The page's memory is
// sampled every 50 ms: JS heap (performance.memory, precise with
// --enable-precise-memory-info) and Pyodide's wasm memory.

import { loadNimbus } from "/js/nimbus.mjs";

const log = (msg) => fetch("/log", { method: "POST", body: String(msg) });
const post = (kind, value) => fetch("/result", { method: "POST", body: JSON.stringify({ kind, ...value }) });
const now = () => performance.now();

const TARGET = { host: "127.0.0.1", port: 22 };
const USER = { username: "bench" };

function newTerm() {
  const el = document.createElement("div");
  document.getElementById("terms").appendChild(el);
  const term = new globalThis.Terminal({ cols: 80, rows: 24, scrollback: 1000 });
  term.open(el);
  return { term, dispose: () => (term.dispose(), el.remove()) };
}

const heap = () => performance.memory?.usedJSHeapSize ?? 0;

// Peak JS heap above the value at the start, and the wasm memory, while `fn` runs.
async function sampled(nimbus, fn) {
  const wasm = () => nimbus.pyodide._module?.HEAP8?.buffer?.byteLength ?? 0;
  const h0 = heap();
  const w0 = wasm();
  let peak = h0;
  let wpeak = w0;
  const timer = setInterval(() => {
    peak = Math.max(peak, heap());
    wpeak = Math.max(wpeak, wasm());
  }, 50);
  try {
    const r = await fn();
    peak = Math.max(peak, heap());
    return { ...r, heapStart: h0, heapPeak: peak, heapGrowth: peak - h0, wasmStart: w0, wasmPeak: wpeak };
  } finally {
    clearInterval(timer);
  }
}

function plainRender(url, expected) {
  return new Promise((resolve, reject) => {
    const { term, dispose } = newTerm();
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    let got = 0;
    let chunks = 0;
    let first = 0;
    let pendingWrites = 0;
    let lastMsg = 0;
    let inflight = 0; // bytes handed to term.write, not yet parsed
    let peakInflight = 0;
    ws.onopen = () => ws.send("go");
    ws.onmessage = (ev) => {
      if (!first) first = now();
      chunks++;
      got += ev.data.byteLength;
      lastMsg = now();
      pendingWrites++;
      const n = ev.data.byteLength;
      inflight += n;
      if (inflight > peakInflight) peakInflight = inflight;
      term.write(new Uint8Array(ev.data), () => {
        pendingWrites--;
        inflight -= n;
        if (got >= expected && pendingWrites === 0) {
          const end = now();
          ws.close();
          dispose();
          resolve({ bytes: got, ms: end - first, receiveMs: lastMsg - first, peakInflight, chunks });
        }
      });
    };
    ws.onerror = () => reject(new Error("plain render failed"));
  });
}

async function nimbusRender(nimbus, url, extra = {}) {
  const conn = await nimbus.connect({ url, resume: { storage: "memory" }, lifecycle: false, ...extra });
  const ch = await conn.openSession({ target: TARGET, user: USER, term: { cols: 80, rows: 24 } });
  const { term, dispose } = newTerm();
  let got = 0;
  let chunks = 0;
  let first = 0;
  let last = 0;
  let lastMsg = 0;
  let pendingWrites = 0;
  let allWritten = null;
  let inflight = 0;
  let peakInflight = 0;
  ch.on("data", (bytes, done) => {
    if (!first) first = now();
    const n = bytes.length;
    chunks++;
    got += n;
    lastMsg = now();
    pendingWrites++;
    inflight += n;
    if (inflight > peakInflight) peakInflight = inflight;
    term.write(bytes, () => {
      last = now();
      pendingWrites--;
      inflight -= n;
      done();
      if (pendingWrites === 0) allWritten?.();
    });
  });
  await ch.waitClosed();
  if (pendingWrites) await new Promise((r) => (allWritten = r));
  await conn.close();
  dispose();
  return { bytes: got, ms: last - first, receiveMs: lastMsg - first, peakInflight, chunks };
}

async function main() {
  const cfg = await (await fetch("/config")).json();
  await log(`plan: ${JSON.stringify({ runs: cfg.runs, bytes: cfg.expected })}`);
  const nimbus = await loadNimbus({ indexURL: "/dist/" });
  await post("boot", { ...nimbus.timings });
  // Warm-up, not counted: xterm's parser and renderer JIT on 2 MB of the same kind of text.
  {
    const { term, dispose } = newTerm();
    const line = new TextEncoder().encode("x".repeat(99) + "\r\n");
    await new Promise((resolve) => {
      for (let i = 0; i < 20000; i++) term.write(line, i === 19999 ? resolve : undefined);
    });
    dispose();
  }
  for (let run = 0; run < cfg.runs; run++) {
    const a = await sampled(nimbus, () => plainRender(`${cfg.plain}/stream`, cfg.expected));
    await post("render", { who: "plain", run, ...a });
    const b = await sampled(nimbus, () => nimbusRender(nimbus, cfg.reference, cfg.connect ?? {}));
    await post("render", { who: "nimbus", run, ...b });
    let c = null;
    if (cfg.tried) {
      c = await sampled(nimbus, () => nimbusRender(nimbus, cfg.reference, cfg.tried));
      await post("render", { who: "nimbus-tried", run, ...c });
    }
    await log(`run ${run}: plain ${(a.bytes / a.ms / 1e3).toFixed(1)} MB/s (unparsed ${(a.peakInflight / 1e6).toFixed(2)} MB), ` +
      `nimbus ${(b.bytes / b.ms / 1e3).toFixed(1)} MB/s (unparsed ${(b.peakInflight / 1e6).toFixed(2)} MB, wasm ${(b.wasmPeak / 1e6).toFixed(0)} MB)` +
      (c ? `, tried ${JSON.stringify(cfg.tried)}: ${(c.bytes / c.ms / 1e3).toFixed(1)} MB/s (unparsed ${(c.peakInflight / 1e6).toFixed(2)} MB)` : ""));
  }
  await post("done", {});
}

main().catch(async (e) => {
  await post("error", { message: String(e && e.stack ? e.stack : e) });
});
