// The page's wheel (build/site, scripts/build_site.py page_wheel) installed the way the page
// installs it -- installNimbus(pyodide, {wheelData}) in web_runtime/js/nimbus.mjs: imported
// from the archive (zipimport), its modules loaded from their bytecode, nothing unpacked,
// and the sources still there for tracebacks.
//
//   node --test tests/shim/      (tests/shim/test_node_shim.py runs this under pytest)

import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { before, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";

import { installNimbus } from "../../web_runtime/js/nimbus.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const DIST = path.join(ROOT, "build", "pyodide-dist");
const SITE = path.join(ROOT, "build", "site");

let pyodide;

before(async () => {
  assert.ok(existsSync(path.join(SITE, "site.json")), `${SITE} missing: make setup`);
  const meta = JSON.parse(readFileSync(path.join(SITE, "site.json"), "utf8"));
  const wheelData = new Uint8Array(readFileSync(path.join(SITE, meta.wheel)));
  const { loadPyodide } = await import(pathToFileURL(path.join(DIST, "pyodide.mjs")).href);
  pyodide = await loadPyodide({ indexURL: DIST + "/" });
  await installNimbus(pyodide, { wheelData });
});

function py(code) {
  return pyodide.runPython(code);
}

test("the page's wheel is imported from the archive, from its bytecode", () => {
  const [loader, origin] = py(
    "import nimbus_websocket.core.messages as m\n" + "[type(m.__loader__).__name__, m.__spec__.origin]",
  ).toJs();
  assert.equal(loader, "zipimporter");
  assert.match(origin, /^\/lib\/nimbus-websocket\.whl\/nimbus_websocket\/core\/messages\.pyc$/);
  // Nothing was unpacked, and unpacking's own imports were not needed.
  assert.equal(py("import os, sysconfig; os.path.exists(os.path.join(sysconfig.get_path('purelib'), 'nimbus_websocket'))"), false);
  assert.equal(py("import sys; sys.path.count('/lib/nimbus-websocket.whl')"), 1);
});

test("tracebacks still show the source lines of the archive's modules", () => {
  const line = py(
    "import linecache, nimbus_websocket.core.messages as m\n" +
      "code = m._bad.__code__\n" +
      "linecache.getline(code.co_filename, code.co_firstlineno, vars(m))",
  );
  assert.match(line, /^def _bad\(/);
  const tb = py(
    "import traceback, nimbus_websocket.core.messages as m\n" +
      "try:\n    m._int({'x': 'no'}, 'x', 0, 1)\nexcept Exception:\n    out = traceback.format_exc()\nout",
  );
  assert.match(tb, /messages\.py", line \d+, in _int\n\s+\S/);
});

test("a second install does not put the archive on sys.path twice", async () => {
  const meta = JSON.parse(readFileSync(path.join(SITE, "site.json"), "utf8"));
  await installNimbus(pyodide, { wheelData: new Uint8Array(readFileSync(path.join(SITE, meta.wheel))) });
  assert.equal(py("import sys; sys.path.count('/lib/nimbus-websocket.whl')"), 1);
});

test("a wheel with its bytecode under __pycache__/ (the dist's) is unpacked as before", async () => {
  const { loadPyodide } = await import(pathToFileURL(path.join(DIST, "pyodide.mjs")).href);
  const other = await loadPyodide({ indexURL: DIST + "/" });
  const lock = JSON.parse(readFileSync(path.join(DIST, "pyodide-lock.json"), "utf8"));
  const wheelData = new Uint8Array(readFileSync(path.join(DIST, lock.packages["nimbus-websocket"].file_name)));
  await installNimbus(other, { wheelData });
  const [loader, cached] = other
    .runPython("import nimbus_websocket.core.messages as m\n[type(m.__loader__).__name__, m.__spec__.cached]")
    .toJs();
  assert.equal(loader, "SourceFileLoader");
  assert.match(cached, /site-packages\/nimbus_websocket\/core\/__pycache__\/messages\.cpython-\d+\.pyc$/);
  assert.equal(other.runPython("import sys; '/lib/nimbus-websocket.whl' in sys.path"), false);
  assert.equal(other.runPython("'zipfile' in globals() or 'ok' in globals()"), false); // __main__ untouched
});
