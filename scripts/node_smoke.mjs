// Node smoke check of the offline Pyodide folder (build/pyodide-dist):
//   node scripts/node_smoke.mjs [distDir]
// 1. boots Pyodide from the folder (no network), loads the project by name
//    from the rewritten lock file and imports nimbus_websocket;
// 2. boots a second interpreter and installs the same wheel with micropip
//    from a file:// URL (the way a Node shim would load a freshly built wheel);
// 3. checks that a WebSocket class is reachable from Python (global on
//    Node >= 22 or with --experimental-websocket, else the `ws` package).
// Prints timings; exits non-zero on any failure.
import { existsSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const dist = path.resolve(process.argv[2] ?? path.join(root, "build", "pyodide-dist"));

function fail(msg) {
  console.error(`[node-smoke] FAIL: ${msg}`);
  process.exit(1);
}

if (!existsSync(path.join(dist, "pyodide-lock.json"))) {
  fail(`${dist} has no pyodide-lock.json; run \`make setup\` first`);
}
const wheels = readdirSync(dist).filter((f) => /^nimbus_websocket-.*\.whl$/.test(f));
if (wheels.length !== 1) fail(`expected one nimbus_websocket wheel in ${dist}, found ${wheels}`);
const wheelPath = path.join(dist, wheels[0]);

let wsSource = "global WebSocket";
if (typeof globalThis.WebSocket === "undefined") {
  wsSource = "WebSocket from the ws package";
  const require = createRequire(path.join(root, "package.json"));
  globalThis.WebSocket = require("ws").WebSocket;
}

const { loadPyodide } = await import(pathToFileURL(path.join(dist, "pyodide.mjs")).href);

async function boot() {
  const t0 = performance.now();
  const pyodide = await loadPyodide({ indexURL: dist + path.sep, stdout: () => {}, stderr: () => {} });
  return { pyodide, ms: performance.now() - t0 };
}

async function loadPackageStrict(pyodide, names) {
  const errors = [];
  await pyodide.loadPackage(names, { messageCallback: () => {}, errorCallback: (m) => errors.push(m) });
  if (errors.length) fail(`loadPackage(${JSON.stringify(names)}): ${errors.join("; ")}`);
}

// 1. by name from the lock file
const a = await boot();
let t = performance.now();
await loadPackageStrict(a.pyodide, "nimbus-websocket");
const v1 = a.pyodide.runPython(`
import sys, nimbus_websocket, nimbus_websocket.core
assert "site-packages" in nimbus_websocket.__file__, nimbus_websocket.__file__
f"{nimbus_websocket.__version__} (Python {sys.version.split()[0]})"
`);
const loadMs = performance.now() - t;
const wsType = a.pyodide.runPython(`import js; str(js.WebSocket.name)`);

// 2. micropip from a file:// URL
const b = await boot();
t = performance.now();
await loadPackageStrict(b.pyodide, "micropip");
b.pyodide.globals.set("wheel_url", pathToFileURL(wheelPath).href);
const v2 = await b.pyodide.runPythonAsync(`
import micropip
await micropip.install(wheel_url, deps=False)
import nimbus_websocket
nimbus_websocket.__version__
`);
const micropipMs = performance.now() - t;

console.log(`[node-smoke] Node ${process.version}, dist ${path.relative(root, dist) || dist}`);
console.log(`[node-smoke] boot ${a.ms.toFixed(0)} ms; loadPackage("nimbus-websocket") + import ${loadMs.toFixed(0)} ms -> ${v1}`);
console.log(`[node-smoke] boot ${b.ms.toFixed(0)} ms; micropip.install(${wheels[0]}) ${micropipMs.toFixed(0)} ms -> ${v2}`);
console.log(`[node-smoke] js.WebSocket = ${wsType} (${wsSource})`);
console.log("[node-smoke] OK");
