#!/usr/bin/env python3
"""Import circles among the crate's modules, from `crate::` paths in src/.

Usage: .ci/circles.py [DEPTH [MODULE...]]. With modules named, exits 1
if a circle involves any of them (e.g. `.ci/circles.py 1 tcp relay`).

A module is a file's path under src/ (src/relay/half/lines.rs is
relay::half::lines; mod.rs and a dir's own .rs are the dir's module). An
edge A -> B for every `crate::B...` path in A's file (use lines and inline
paths alike), at the granularity asked (depth 1: top-level modules; a
module's edge to its own ancestors or descendants is not counted). Test
files (tests.rs, tests/) are left out. Prints each strongly connected
component of more than one module."""
import os, re, sys
depth = int(sys.argv[1]) if len(sys.argv) > 1 else 1
guarded = set(sys.argv[2:])
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
mods = {}
for dirpath, _, files in os.walk(root):
    for f in files:
        if not f.endswith(".rs"): continue
        path = os.path.join(dirpath, f)
        rel = os.path.relpath(path, root)[:-3].split(os.sep)
        if "tests" in rel: continue
        if rel[-1] == "mod": rel = rel[:-1]
        if rel in (["lib"], ["main"]): continue
        mods[path] = rel
def cut(parts): return "::".join(parts[:depth])
edges = {}
for path, rel in mods.items():
    src = open(path).read()
    # drop #[cfg(test)] mod tests { ... } blocks roughly: cut at "#[cfg(test)]\nmod tests {"
    m = re.search(r"#\[cfg\(test\)\]\s*mod tests\s*\{", src)
    if m: src = src[:m.start()]
    src = re.sub(r"//[^\n]*", "", src)
    me = cut(rel)
    # expand use crate::{a, b::c}
    targets = set()
    for m in re.finditer(r"crate::\{([^}]*)\}", src):
        for item in m.group(1).split(","):
            item = item.strip()
            if item: targets.add(item.split("::")[0] if depth == 1 else "::".join(item.split("::")[:depth]))
    for m in re.finditer(r"crate::((?:[a-z_][a-z0-9_]*)(?:::[a-z_][a-z0-9_]*)*)", src):
        parts = m.group(1).split("::")
        targets.add("::".join(parts[:depth]))
    for t in targets:
        if not t or t == me or me.startswith(t + "::") or t.startswith(me + "::"): continue
        # only modules that exist
        if not any(cut(r) == t or "::".join(r).startswith(t) for r in mods.values()): continue
        edges.setdefault(me, set()).add(t)
# Tarjan
index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
def strong(v):
    index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index: strong(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: out.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in list(edges): 
    if v not in index: strong(v)
for comp in out:
    print("circle:", " ".join(comp))
    for a in comp:
        for b in sorted(edges.get(a, ())):
            if b in comp: print(f"   {a} -> {b}")
if not out: print("no circle")
if any(guarded & set(comp) for comp in out):
    sys.exit(1)
