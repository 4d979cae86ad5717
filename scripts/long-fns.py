#!/usr/bin/env python3
"""long-fns.py [ROOT] [LIMIT]: functions longer than LIMIT lines (default 80)
in the Rust sources under ROOT's crates (src/ only, `mod tests` blocks
skipped), longest first; and the import cycles between files of a crate
(file A names a module path that resolves to file B and B to A)."""
import os, re, sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else "."
LIMIT = int(sys.argv[2]) if len(sys.argv) > 2 else 80
CRATES = {"models": "cxr_models", "service": "cxr_service", "wasm-client": "cxr_wasm"}
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?fn\s+(\w+)")


def strip(line):
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.split("//")[0]


def functions(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    out, i = [], 0
    while i < len(lines):
        s = strip(lines[i])
        if re.match(r"^\s*mod tests\s*\{", s):
            depth, j = 0, i
            while j < len(lines):
                depth += strip(lines[j]).count("{") - strip(lines[j]).count("}")
                if depth == 0 and j > i:
                    break
                j += 1
            i = j + 1
            continue
        m = FN.match(s)
        if m:
            depth, j, opened = 0, i, False
            while j < len(lines):
                t = strip(lines[j])
                if not opened and ";" in t and "{" not in t:
                    break  # a declaration without a body
                depth += t.count("{") - t.count("}")
                opened = opened or "{" in t
                if opened and depth == 0:
                    break
                j += 1
            if opened:
                out.append((j - i + 1, m.group(7), path, i + 1))
        i += 1
    return out


def rust_files(crate_dir):
    for d, _, fs in os.walk(os.path.join(crate_dir, "src")):
        for f in fs:
            if f.endswith(".rs"):
                yield os.path.join(d, f)


def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel


def cycles(crate_dir, name):
    src = os.path.join(crate_dir, "src")
    mods = {tuple(module_of(src, p)): p for p in rust_files(crate_dir)}
    deps = {}
    for m, p in mods.items():
        text = open(p, encoding="utf-8").read()
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
        found = set()
        for path in re.findall(r"\b(crate|super|self|%s)((?:::\w+)+)" % name, text):
            base = {"crate": [], name: [], "self": list(m), "super": list(m[:-1])}[path[0]]
            parts = base + path[1].strip(":").split("::")
            while parts and tuple(parts) not in mods:
                parts = parts[:-1]
            t = tuple(parts)
            if t != m and t in mods and not (len(t) < len(m) and m[: len(t)] == t and t == ()):
                found.add(t)
        deps[m] = found
    pairs = set()
    for a, ds in deps.items():
        for b in ds:
            # a file and its parent module's file (mod.rs declaring it) are not a cycle
            if a in deps.get(b, ()) and a < b and a[: len(b)] != b and b[: len(a)] != a:
                pairs.add((mods[a], mods[b]))
    return sorted(pairs)


def main():
    found, cyc = [], []
    for c, name in CRATES.items():
        d = os.path.join(ROOT, c)
        if os.path.isdir(d):
            for p in rust_files(d):
                found += functions(p)
            cyc += cycles(d, name)
    found.sort(reverse=True)
    long = [f for f in found if f[0] > LIMIT]
    print(f"functions over {LIMIT} lines: {len(long)}")
    for n, f, p, l in found[: max(len(long), 10)]:
        print(f"  {n:4d}  {f}  {os.path.relpath(p, ROOT)}:{l}")
    print(f"import cycles between files: {len(cyc)}")
    for a, b in cyc:
        print(f"  {os.path.relpath(a, ROOT)} <-> {os.path.relpath(b, ROOT)}")


main()
