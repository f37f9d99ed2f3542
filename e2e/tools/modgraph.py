#!/usr/bin/env python3
"""The data plane's module dependency graph, from its sources: which top-level module (a file or
folder directly under dataplane/src) names which other (`crate::<module>` paths, in `use` lines
and inline), and the import cycles between them (strongly connected components).

    python3 e2e/tools/modgraph.py [dataplane/src]      # edges, then cycles

Tests (`tests.rs`, `#[cfg(test)]` modules after their marker) are left out: only what the
product's code depends on counts.
"""
import os
import re
import sys

src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../../dataplane/src")
src = os.path.normpath(src)
ROOTS = {"lib", "main"}

def top_module(path):
    rel = os.path.relpath(path, src)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first

edges = {}
for dirpath, _, files in os.walk(src):
    for name in files:
        if not name.endswith(".rs") or name == "tests.rs":
            continue
        path = os.path.join(dirpath, name)
        if os.sep + "tests" + os.sep in path:
            continue
        text = open(path, encoding="utf-8").read()
        marker = text.find("#[cfg(test)]")
        if marker >= 0:
            text = text[:marker]
        text = re.sub(r"//[^\n]*", "", text)
        me = top_module(path)
        found = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
        # `use crate::{a, b::c}` groups
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
            found.update(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
        for other in found:
            if other != me and other not in ROOTS:
                edges.setdefault(me, set()).add(other)

nodes = sorted(set(edges) | {n for targets in edges.values() for n in targets})
for node in nodes:
    if node in ROOTS:
        continue
    print(f"{node} -> {', '.join(sorted(edges.get(node, ())))}")

# Tarjan's strongly connected components.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = counter[0]; counter[0] += 1
    stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in nodes:
    if v not in index:
        visit(v)
print()
if sccs:
    for comp in sccs:
        print("cycle:", " <-> ".join(comp))
else:
    print("no cycles")
