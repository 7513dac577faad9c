// nimbus-websocket for Node.js: the Python client (Pyodide) with the browser's JS facade.
//
//   import { loadNimbus, connect } from "<repo>/node_runtime/shim/index.mjs";
//   const nimbus = await loadNimbus();              // boots Pyodide from build/pyodide-dist
//   const conn = await nimbus.connect({url: "ws://127.0.0.1:8765/ws/ssh"});
//   const ch = await conn.openSession({target: {host: "127.0.0.1", port: 22},
//                                      user: {username: "me"}});
//   ch.on("data", (bytes) => process.stdout.write(bytes));
//   await ch.send("echo hi; exit 3\n");
//   console.log(await ch.waitClosed());             // 3
//   await conn.close();
//
// This is the second loader of the one facade (web_runtime/js/nimbus.mjs):
//   * Pyodide boots from the local, offline dist folder (no CDN): `distDir`,
//     else $NIMBUS_PYODIDE_DIST, else <repo>/build/pyodide-dist (`make setup`);
//   * the wheel is installed by name from that folder's lock file, or from
//     `wheel` (a path);
//   * the WebSocket is the `ws` package, wrapped (nodeWebSocketClass): binary
//     messages as ArrayBuffer (Python cannot read a Node Buffer), and every
//     listener body guarded -- an exception escaping a `ws` listener, or an
//     "error" event nobody listens to, kills the Node process;
//   * connect defaults for Node: resume storage "memory" (no sessionStorage),
//     no page lifecycle.
// Everything else (events, Uint8Array in/out, flow control via `done`) is the
// browser facade's; see the notes at the top of nimbus.mjs.

import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import WebSocketImpl from "ws";
import { Channel, Connection, createNimbus, installNimbus, NimbusError, PACKAGE } from "../../web_runtime/js/nimbus.mjs";

export { Channel, Connection, NimbusError, PACKAGE };

const here = path.dirname(fileURLToPath(import.meta.url));
/** <repo>/build/pyodide-dist: where `make setup` assembles the offline Pyodide folder. */
export const DEFAULT_DIST_DIR = path.resolve(here, "..", "..", "build", "pyodide-dist");

/** Connect defaults under Node (no sessionStorage, no page). */
export const NODE_DEFAULTS = Object.freeze({ resume: { storage: "memory" }, lifecycle: false });

function reportListenerError(err, where) {
  console.error(`nimbus: ${where} listener failed:`, err);
}

/**
 * A WebSocket class over `ws` that is safe to hand to Python: binaryType
 * "arraybuffer", a permanent "error" listener (an unhandled "error" event
 * throws), and on{open,message,close,error} handlers whose exceptions are
 * reported instead of crashing the process.
 */
export function nodeWebSocketClass(Base = WebSocketImpl, report = reportListenerError) {
  class NodeWebSocket extends Base {
    constructor(url, protocols, options) {
      super(url, protocols, options);
      this.binaryType = "arraybuffer";
      this.on("error", () => {}); // the close event follows; nothing to do here
    }
  }
  for (const kind of ["open", "message", "close", "error"]) {
    const handler = Symbol(`on${kind}`);
    const wrapped = Symbol(`on${kind}:wrapped`);
    Object.defineProperty(NodeWebSocket.prototype, `on${kind}`, {
      configurable: true,
      enumerable: true,
      get() {
        return this[handler] ?? null;
      },
      set(fn) {
        if (this[wrapped]) this.removeEventListener(kind, this[wrapped]);
        this[handler] = typeof fn === "function" ? fn : null;
        this[wrapped] = null;
        if (this[handler]) {
          const target = this[handler];
          this[wrapped] = (ev) => {
            try {
              target.call(this, ev);
            } catch (e) {
              report(e, `WebSocket ${kind}`);
            }
          };
          this.addEventListener(kind, this[wrapped]);
        }
      },
    });
  }
  return NodeWebSocket;
}

/**
 * Boot Pyodide from the offline dist folder, install the wheel, return the
 * facade (same API as the browser's loadNimbus; nimbus.timings has bootMs,
 * installMs, totalMs).  Options: distDir, wheel (path of a .whl; default: by
 * name from the dist's lock file), onProgress, WebSocket (class; default
 * nodeWebSocketClass()), defaults (connect options), onListenerError,
 * stdout/stderr (Pyodide's; default: silent stdout, stderr to console.error).
 */
export async function loadNimbus(options = {}) {
  const { distDir, wheel, onProgress, WebSocket, defaults, onListenerError, stdout, stderr } = options;
  const dist = path.resolve(distDir ?? process.env.NIMBUS_PYODIDE_DIST ?? DEFAULT_DIST_DIR);
  if (!existsSync(path.join(dist, "pyodide.mjs")) || !existsSync(path.join(dist, "pyodide-lock.json"))) {
    throw new Error(`${dist} is not a Pyodide dist folder (run \`make setup\` to build build/pyodide-dist)`);
  }
  const t0 = performance.now();
  onProgress?.({ phase: "runtime", message: `loading Pyodide from ${dist}` });
  const { loadPyodide } = await import(pathToFileURL(path.join(dist, "pyodide.mjs")).href);
  const pyodide = await loadPyodide({
    indexURL: dist + path.sep,
    stdout: stdout ?? (() => {}),
    stderr: stderr ?? ((line) => console.error(line)),
  });
  const t1 = performance.now();
  onProgress?.({ phase: "package", message: `installing ${wheel ?? PACKAGE}` });
  await installNimbus(pyodide, { wheelURL: wheel ? path.resolve(wheel) : undefined, onProgress });
  const nimbus = createNimbus(pyodide, {
    WebSocket: WebSocket ?? nodeWebSocketClass(WebSocketImpl, onListenerError ?? reportListenerError),
    defaults: { ...NODE_DEFAULTS, ...(defaults ?? {}) },
    onListenerError,
  });
  const t2 = performance.now();
  nimbus.timings = { bootMs: t1 - t0, installMs: t2 - t1, totalMs: t2 - t0 };
  onProgress?.({ phase: "ready", timings: nimbus.timings });
  return nimbus;
}

let shared = null;

/** connect() on a process-wide facade, loaded on first use with the default options. */
export async function connect(options) {
  shared ??= loadNimbus();
  return (await shared).connect(options);
}
