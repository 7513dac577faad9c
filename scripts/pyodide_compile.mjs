// Compile, with Pyodide's own interpreter, (1) the modules of a pure wheel
// that the browser runtime imports and (2) the standard-library modules a
// Pyodide boot plus that import loads:
//   node scripts/pyodide_compile.mjs <distDir> <wheel> <outDir> <lockFile> <stdlibZip>
// Used by scripts/build_pyodide_dist.py (the host CPython cannot write
// bytecode for Pyodide's Python version).  Boots Pyodide from the offline
// dist folder (no network; `lockFile` is any valid Pyodide lock file -- a dist
// folder being assembled has none yet -- only used to resolve nothing) with
// stdLibURL = `stdlibZip`, which must be the ORIGINAL, source-only
// python_stdlib.zip of the npm package (so every stdlib module is found as a
// .py and the hot set is not biased by an earlier build).  Then it installs
// the wheel the way web_runtime/js/nimbus.mjs installNimbus() does --
// loadPackage(<wheel path>), import ROOT_MODULE
// (nimbus_websocket.web_runtime.bridge) -- and also walks installNimbus's
// other path (sysconfig purelib + unpackArchive of the wheel, here into a
// scratch folder), and records, using nothing but `sys`, which modules are
// loaded.  Only afterwards does it import its own tools (zipfile,
// py_compile, ...), so they do not count.
//   * Project: every `nimbus_websocket*` entry of sys.modules whose __file__
//     is a .py of the wheel installed in site-packages (packages'
//     __init__.py included) gets `__pycache__/<mod>.<tag>.pyc`, compiled with
//     py_compile, dfile = the installed path, invalidation mode
//     UNCHECKED_HASH (no source mtime check after the wheel is unpacked).
//     Host-only modules (server, CLI, conformance kit, websockets_impl) are
//     not imported and get no bytecode.
//   * Stdlib: every module whose __file__ is `/lib/python314.zip/<name>.py`
//     (frozen modules excepted: they never read the zip) gets the legacy-location `<name>.pyc` (next to the .py inside the zip,
//     where zipimport looks for it before the .py): the source read from the
//     zip, compiled like zipimport compiles it (co_filename
//     `/lib/python314.zip/<name>.py`, so tracebacks and linecache still find
//     the .py), written as an unchecked-hash pyc (magic, flags 0b01, the
//     source hash, marshalled code).  Building the new zip is left to the
//     caller.
// Writes each project .pyc to <outDir>/wheel/<its path inside the wheel> and
// each stdlib .pyc to <outDir>/stdlib/<its path inside the zip>, and prints
// one JSON line on stdout: {pyodide, python, cacheTag, magic, siteDir, root,
// modules: {dotted name: source path inside the wheel}, files: [pyc paths],
// stdlib: {zip, sha256, modules: {dotted name: source path inside the zip},
// files: [pyc paths]}}.
// Any failure (also: a nimbus_websocket module loaded from outside the
// wheel, a stdlib zip that already holds .pyc): message on stderr, exit 1.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

function fail(msg) {
  process.stderr.write(`[pyodide-compile] ERROR: ${msg}\n`);
  process.exit(1);
}

const [distArg, wheelArg, outArg, lockArg, stdlibArg] = process.argv.slice(2);
if (!distArg || !wheelArg || !outArg || !lockArg || !stdlibArg) {
  fail("usage: node pyodide_compile.mjs <distDir> <wheel> <outDir> <lockFile> <stdlibZip>");
}
const dist = path.resolve(distArg);
const wheel = path.resolve(wheelArg);
const out = path.resolve(outArg);
const lockFile = path.resolve(lockArg);
const stdlibZip = path.resolve(stdlibArg);

const ROOT_MODULE = "nimbus_websocket.web_runtime.bridge";
const PACKAGE = ROOT_MODULE.split(".")[0];
// Where installNimbus's unpackArchive path is walked (not site-packages: the
// wheel is already installed there by loadPackage).
const SCRATCH = "/tmp/nimbus-pyodide-unpack";

// Before the install: nothing of the project may be present yet.  Uses only
// modules every boot has loaded already.
const PRECHECK = `
import os
import site
import sys

if any(n == package or n.startswith(package + ".") for n in sys.modules):
    raise RuntimeError(f"{package} is already imported before the wheel is installed")
if os.path.exists(f"{site.getsitepackages()[0]}/{package}"):
    raise RuntimeError(f"{package} already exists in a fresh Pyodide's site-packages")
`;

// Right after the install and the import: what is loaded, with nothing but
// sys (already loaded), so that the tools of COMPILE are not counted.
const SNAPSHOT = `
import sys

nimbus_loaded = sorted(
    (n, getattr(m, "__file__", None), getattr(getattr(m, "__spec__", None), "origin", None))
    for n, m in list(sys.modules.items())
)
`;

const COMPILE = `
import hashlib
import importlib.util
import json
import marshal
import os
import py_compile
import site
import sys
import zipfile

site_dir = site.getsitepackages()[0]
work = "/tmp/nimbus-pyodide-compile"
zips = [p for p in sys.path if p.endswith(".zip")]
if len(zips) != 1 or not os.path.isfile(zips[0]):
    raise RuntimeError(f"expected one stdlib zip on sys.path, found {zips}")
stdlib_zip = zips[0]
stdlib_prefix = stdlib_zip + "/"

with zipfile.ZipFile(wheel_in_fs) as zf:
    in_wheel = {
        n for n in zf.namelist()
        if not n.endswith("/") and not n.split("/", 1)[0].endswith((".dist-info", ".data"))
    }

modules = {}
stdlib_modules = {}
for mod_name, file, origin in nimbus_loaded:
    if file is None or origin == "frozen":
        # Frozen modules (os, codecs, importlib._bootstrap, ...) come from
        # bytecode in the binary; their __file__ only names the zip.
        continue
    if mod_name == package or mod_name.startswith(package + "."):
        rel = os.path.relpath(file, site_dir)
        if rel not in in_wheel or not rel.endswith(".py"):
            raise RuntimeError(f"{mod_name} was loaded from {file}, not from a .py of the wheel")
        modules[mod_name] = rel
    elif file.startswith(stdlib_prefix):
        rel = file[len(stdlib_prefix):]
        if not rel.endswith(".py"):
            raise RuntimeError(
                f"{mod_name} was loaded from {file}: the stdlib zip given is not source-only"
            )
        stdlib_modules[mod_name] = rel
if not modules:
    raise RuntimeError(f"importing {root_module} loaded no {package} module from the wheel")
if not stdlib_modules:
    raise RuntimeError(f"no module was loaded from {stdlib_zip}")

done = []
for rel in sorted(set(modules.values())):
    final = f"{site_dir}/{rel}"
    cached = os.path.relpath(importlib.util.cache_from_source(final), site_dir)
    py_compile.compile(
        final,
        cfile=f"{work}/wheel/{cached}",
        dfile=final,
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    done.append(cached)

with open(stdlib_zip, "rb") as fh:
    stdlib_sha256 = hashlib.sha256(fh.read()).hexdigest()
stdlib_done = []
with zipfile.ZipFile(stdlib_zip) as zf:
    already = [n for n in zf.namelist() if n.endswith(".pyc")]
    if already:
        raise RuntimeError(f"{stdlib_zip} already holds bytecode ({already[:3]}...): pass the original zip")
    for rel in sorted(set(stdlib_modules.values())):
        source = zf.read(rel)
        # As zipimport compiles a .py found in the zip (same file name, flags).
        code = compile(source, stdlib_prefix + rel, "exec", dont_inherit=True)
        pyc = rel[: -len(".py")] + ".pyc"
        dst = f"{work}/stdlib/{pyc}"
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "wb") as fh:
            fh.write(importlib.util.MAGIC_NUMBER)
            fh.write((0b01).to_bytes(4, "little"))  # hash-based, unchecked
            fh.write(importlib.util.source_hash(source))
            fh.write(marshal.dumps(code))
        stdlib_done.append(pyc)

json.dumps({
    "python": sys.version.split()[0],
    "cacheTag": sys.implementation.cache_tag,
    "magic": importlib.util.MAGIC_NUMBER.hex(),
    "siteDir": site_dir,
    "root": root_module,
    "work": work,
    "modules": modules,
    "files": done,
    "stdlib": {
        "zip": stdlib_zip,
        "sha256": stdlib_sha256,
        "modules": stdlib_modules,
        "files": stdlib_done,
    },
})
`;

try {
  const { loadPyodide, version } = await import(pathToFileURL(path.join(dist, "pyodide.mjs")).href);
  // Pyodide's own output goes to stderr: stdout carries only the JSON result.
  const toStderr = (line) => process.stderr.write(`${line}\n`);
  const pyodide = await loadPyodide({
    indexURL: dist + path.sep,
    lockFileURL: lockFile,
    stdLibURL: stdlibZip,
    stdout: toStderr,
    stderr: toStderr,
  });
  const wheelBytes = new Uint8Array(readFileSync(wheel));
  const wheelInFs = `/tmp/${path.basename(wheel)}`;
  pyodide.FS.writeFile(wheelInFs, wheelBytes);
  pyodide.globals.set("wheel_in_fs", wheelInFs);
  pyodide.globals.set("root_module", ROOT_MODULE);
  pyodide.globals.set("package", PACKAGE);
  pyodide.runPython(PRECHECK);
  // installNimbus() (web_runtime/js/nimbus.mjs), loadPackage path ...
  const errors = [];
  await pyodide.loadPackage(wheel, { messageCallback: toStderr, errorCallback: (m) => errors.push(m) });
  if (errors.length) throw new Error(`loadPackage(${wheel}): ${errors.join("; ")}`);
  pyodide.pyimport(ROOT_MODULE).destroy();
  // ... and what its prefetched-wheel path runs besides (into a scratch folder).
  pyodide.runPython("import sysconfig; sysconfig.get_path('purelib')");
  pyodide.unpackArchive(wheelBytes, "wheel", { extractDir: SCRATCH });
  pyodide.runPython(SNAPSHOT);
  const result = JSON.parse(pyodide.runPython(COMPILE));
  const copy = (sub, rel) => {
    const dst = path.join(out, sub, ...rel.split("/"));
    mkdirSync(path.dirname(dst), { recursive: true });
    writeFileSync(dst, pyodide.FS.readFile(`${result.work}/${sub}/${rel}`));
  };
  for (const rel of result.files) copy("wheel", rel);
  for (const rel of result.stdlib.files) copy("stdlib", rel);
  delete result.work;
  process.stdout.write(`${JSON.stringify({ pyodide: version ?? pyodide.version, ...result })}\n`);
} catch (err) {
  fail(`compiling ${wheel} and ${stdlibZip} with Pyodide from ${dist} failed: ${err?.stack ?? err}`);
}
