// ch.send() through the Node shim: a keystroke goes out synchronously (send_now) when
// the input buffer has room; input that has to wait keeps its place -- later sends
// queue behind it instead of overtaking it (web_runtime/js/nimbus.mjs Channel.send).
//
//   node --test tests/shim/      (tests/shim/test_node_shim.py runs this under pytest)

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { loadNimbus } from "../../node_runtime/shim/index.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const NIMBUS_WS = process.env.NIMBUS_WS ?? path.join(ROOT, ".venv", "bin", "nimbus-ws");
const TARGET = { host: "127.0.0.1", port: 22 };
const USER = { username: "tester" };

let proc;
let url;
let nimbus;

async function until(pred, ms, what) {
  const end = performance.now() + ms;
  while (!pred()) {
    if (performance.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

before(async () => {
  proc = spawn(NIMBUS_WS, ["serve", "--port", "0", "--pty-command", "exec /bin/sh"], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nimbus-ws serve did not start:\n${log}`)), 20_000);
    proc.stderr.on("data", (d) => {
      log += d;
      const m = log.match(/nimbus-ws serving (ws:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.on("exit", (code) => reject(new Error(`nimbus-ws serve exited (${code}):\n${log}`)));
  });
  nimbus = await loadNimbus();
});

after(async () => {
  if (proc && proc.exitCode === null) {
    proc.kill("SIGTERM");
    await once(proc, "exit");
  }
});

test("input larger than the input buffer keeps its place: later sends do not overtake it", async () => {
  const limit = 64 * 1024;
  const conn = await nimbus.connect({ url, inputBufferLimit: limit, resume: { storage: "memory" } });
  const ch = await conn.openSession({ target: TARGET, user: USER }); // sh on pipes
  const out = [];
  let got = 0;
  ch.on("data", (bytes) => {
    out.push(Buffer.from(bytes));
    got += bytes.length;
  });
  await ch.send("echo ready; exec cat\n");
  await until(() => Buffer.concat(out).toString("latin1") === "ready\n", 10_000, "the shell to exec cat");
  out.length = 0;
  got = 0;
  // A keystroke with room in the buffer: sent at once.
  await ch.send("k");
  await until(() => got === 1, 10_000, "the echo of one key");
  // 5 windows of input: waits in Python; the keys typed meanwhile queue behind it.
  const big = new Uint8Array(5 * limit).fill(0x78);
  const sends = [ch.send(big), ch.send("A"), ch.send(new Uint8Array([0x42])), ch.send("C")];
  await Promise.all(sends);
  await until(() => got === 1 + big.length + 3, 20_000, "the whole echo");
  const text = Buffer.concat(out).toString("latin1");
  assert.equal(text, "k" + "x".repeat(big.length) + "ABC");
  // Once nothing waits, keystrokes take the synchronous path again.
  assert.equal(ch._sending, 0);
  await ch.send("z");
  await until(() => got === big.length + 5, 10_000, "the last key");
  await ch.close();
  await conn.close();
});
