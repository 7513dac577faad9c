// Compile a pure wheel's modules to bytecode with Pyodide's own interpreter:
//   node scripts/pyodide_compile.mjs <distDir> <wheel> <outDir> [lockFile]
// Used by scripts/build_pyodide_dist.py (the host CPython cannot write
// bytecode for Pyodide's Python version).  Boots Pyodide from the offline
// dist folder (no network; `lockFile`, default <distDir>/pyodide-lock.json,
// only has to exist: nothing is loaded from it, and a dist folder being
// assembled has no lock file yet), copies the wheel into Pyodide's file system and
// compiles every .py outside *.dist-info/ with py_compile:
//   * invalidation mode UNCHECKED_HASH: no source mtime check after the wheel
//     is unpacked (a wheel's mtimes are not the unpacked files' mtimes);
//   * dfile = the module's final path in Pyodide's site-packages, so
//     tracebacks and co_filename name the installed file;
//   * cfile name from importlib.util.cache_from_source (the interpreter's tag).
// Writes each .pyc to <outDir>/<its path inside the wheel> and prints one JSON
// line on stdout: {pyodide, python, cacheTag, magic, siteDir, files: [...]}.
// Any failure: message on stderr, exit status 1.
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

const COMPILE = `
import importlib.util
import json
import os
import py_compile
import site
import sys
import zipfile

site_dir = site.getsitepackages()[0]
work = "/tmp/nimbus-pyodide-compile"
done = []
with zipfile.ZipFile(wheel_in_fs) as zf:
    for name in zf.namelist():
        top = name.split("/", 1)[0]
        if not name.endswith(".py") or top.endswith((".dist-info", ".data")):
            continue
        src = f"{work}/src/{name}"
        os.makedirs(os.path.dirname(src), exist_ok=True)
        with open(src, "wb") as fh:
            fh.write(zf.read(name))
        final = f"{site_dir}/{name}"
        rel = os.path.relpath(importlib.util.cache_from_source(final), site_dir)
        py_compile.compile(
            src,
            cfile=f"{work}/out/{rel}",
            dfile=final,
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
        done.append(rel)
json.dumps({
    "python": sys.version.split()[0],
    "cacheTag": sys.implementation.cache_tag,
    "magic": importlib.util.MAGIC_NUMBER.hex(),
    "siteDir": site_dir,
    "work": f"{work}/out",
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
