// Compile the modules of a pure wheel that the browser runtime imports to
// bytecode, with Pyodide's own interpreter:
//   node scripts/pyodide_compile.mjs <distDir> <wheel> <outDir> [lockFile]
// Used by scripts/build_pyodide_dist.py (the host CPython cannot write
// bytecode for Pyodide's Python version).  Boots Pyodide from the offline
// dist folder (no network; `lockFile`, default <distDir>/pyodide-lock.json,
// only has to exist: nothing is loaded from it, and a dist folder being
// assembled has no lock file yet), copies the wheel into Pyodide's file
// system, unpacks its package files (everything outside *.dist-info/ and
// *.data/) into Pyodide's site-packages, imports ROOT_MODULE
// (nimbus_websocket.web_runtime.bridge, what the JS facade imports) and
// compiles exactly the modules that import loaded: every `nimbus_websocket*`
// entry of sys.modules whose __file__ is a .py inside the unpacked package
// (packages' __init__.py included).  Host-only modules (server, CLI,
// conformance kit, websockets_impl) are not imported and get no bytecode.
// py_compile settings:
//   * invalidation mode UNCHECKED_HASH: no source mtime check after the wheel
//     is unpacked (a wheel's mtimes are not the unpacked files' mtimes);
//   * dfile = the module's final path in Pyodide's site-packages, so
//     tracebacks and co_filename name the installed file;
//   * cfile name from importlib.util.cache_from_source (the interpreter's tag).
// Writes each .pyc to <outDir>/<its path inside the wheel> and prints one JSON
// line on stdout: {pyodide, python, cacheTag, magic, siteDir, root,
// modules: {dotted name: source path inside the wheel}, files: [pyc paths]}.
// Any failure (also: a nimbus_websocket module loaded from outside the
// unpacked wheel): message on stderr, exit status 1.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

function fail(msg) {
  process.stderr.write(`[pyodide-compile] ERROR: ${msg}\n`);
  process.exit(1);
}

const [distArg, wheelArg, outArg, lockArg] = process.argv.slice(2);
if (!distArg || !wheelArg || !outArg) fail("usage: node pyodide_compile.mjs <distDir> <wheel> <outDir> [lockFile]");
const dist = path.resolve(distArg);
const wheel = path.resolve(wheelArg);
const out = path.resolve(outArg);
const lockFile = path.resolve(lockArg ?? path.join(dist, "pyodide-lock.json"));

const ROOT_MODULE = "nimbus_websocket.web_runtime.bridge";
const PACKAGE = ROOT_MODULE.split(".")[0];

const COMPILE = `
import importlib
import importlib.util
import json
import os
import py_compile
import site
import sys
import zipfile

site_dir = site.getsitepackages()[0]
work = "/tmp/nimbus-pyodide-compile"
if any(n == package or n.startswith(package + ".") for n in sys.modules):
    raise RuntimeError(f"{package} is already imported before the wheel is unpacked")
if os.path.exists(f"{site_dir}/{package}"):
    raise RuntimeError(f"{site_dir}/{package} already exists in a fresh Pyodide")
with zipfile.ZipFile(wheel_in_fs) as zf:
    in_wheel = set()
    for name in zf.namelist():
        top = name.split("/", 1)[0]
        if name.endswith("/") or top.endswith((".dist-info", ".data")):
            continue
        zf.extract(name, site_dir)
        in_wheel.add(name)
importlib.invalidate_caches()
importlib.import_module(root_module)

modules = {}
for mod_name, module in sorted(sys.modules.items()):
    if mod_name != package and not mod_name.startswith(package + "."):
        continue
    file = getattr(module, "__file__", None)
    if file is None:
        continue
    rel = os.path.relpath(file, site_dir)
    if rel not in in_wheel or not rel.endswith(".py"):
        raise RuntimeError(f"{mod_name} was loaded from {file}, not from a .py of the wheel")
    modules[mod_name] = rel
if not modules:
    raise RuntimeError(f"importing {root_module} loaded no {package} module from the wheel")

done = []
for rel in sorted(set(modules.values())):
    final = f"{site_dir}/{rel}"
    cached = os.path.relpath(importlib.util.cache_from_source(final), site_dir)
    py_compile.compile(
        final,
        cfile=f"{work}/out/{cached}",
        dfile=final,
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    done.append(cached)
json.dumps({
    "python": sys.version.split()[0],
    "cacheTag": sys.implementation.cache_tag,
    "magic": importlib.util.MAGIC_NUMBER.hex(),
    "siteDir": site_dir,
    "root": root_module,
    "work": f"{work}/out",
    "modules": modules,
    "files": done,
})
`;

try {
  const { loadPyodide, version } = await import(pathToFileURL(path.join(dist, "pyodide.mjs")).href);
  // Pyodide's own output goes to stderr: stdout carries only the JSON result.
  const toStderr = (line) => process.stderr.write(`${line}\n`);
  const pyodide = await loadPyodide({
    indexURL: dist + path.sep,
    lockFileURL: lockFile,
    stdout: toStderr,
    stderr: toStderr,
  });
  const wheelInFs = `/tmp/${path.basename(wheel)}`;
  pyodide.FS.writeFile(wheelInFs, readFileSync(wheel));
  pyodide.globals.set("wheel_in_fs", wheelInFs);
  pyodide.globals.set("root_module", ROOT_MODULE);
  pyodide.globals.set("package", PACKAGE);
  const result = JSON.parse(pyodide.runPython(COMPILE));
  for (const rel of result.files) {
    const dst = path.join(out, ...rel.split("/"));
    mkdirSync(path.dirname(dst), { recursive: true });
    writeFileSync(dst, pyodide.FS.readFile(`${result.work}/${rel}`));
  }
  delete result.work;
  process.stdout.write(`${JSON.stringify({ pyodide: version ?? pyodide.version, ...result })}\n`);
} catch (err) {
  fail(`compiling ${wheel} with Pyodide from ${dist} failed: ${err?.stack ?? err}`);
}
