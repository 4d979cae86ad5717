#!/usr/bin/env python3
"""long-fns.py [ROOT] [LIMIT]: functions longer than LIMIT lines (default 80)
in the Rust sources under ROOT's crates (src/ only, `mod tests` blocks
skipped), longest first; and the import cycles between files of a crate
(files that reach each other through the module paths they name)."""
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
        text = "\n".join(strip(l) for l in text.split("\n"))
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
    # A module's own file re-exporting its children (`pub use child::X`) is a
    # facade, not a dependency: edges from a module to its descendants are
    # left out. Cycles are the strongly connected components left.
    graph = {a: {b for b in ds if b[: len(a)] != a} for a, ds in deps.items()}
    return [sorted(mods[m] for m in comp) for comp in sccs(graph) if len(comp) > 1]


def sccs(graph):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


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
    for comp in cyc:
        print("  " + " <-> ".join(os.path.relpath(f, ROOT) for f in comp))


main()
