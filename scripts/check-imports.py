#!/usr/bin/env python3
"""Fails when a module of src/handler or src/fanout imports a module that imports it back
(directly or through others): the code's arrows must point one way. Reads `use` lines and
qualified paths (`super::x::`, `crate::handler::x::`); a module's own submodules count as itself."""
import re
import sys
from pathlib import Path

def modules(root: Path):
    mods = {}
    for f in sorted(root.rglob("*.rs")):
        rel = f.relative_to(root).with_suffix("")
        parts = [p for p in rel.parts if p != "mod"]
        # A folder module and its submodules are one node at the top level of the area.
        name = parts[0] if parts else "mod"
        mods.setdefault(name, []).append(f)
    return mods

def edges(area: str, root: Path):
    mods = modules(root)
    names = set(mods) - {"mod"}
    graph = {n: set() for n in names}
    pat = re.compile(r"(?:super|crate::%s)::(?:\{([^}]*)\}|([a-z_]+))" % area)
    for name, files in mods.items():
        if name == "mod":
            continue
        for f in files:
            text = f.read_text()
            text = text.split("#[cfg(test)]")[0]
            # Doc links and comments name modules without importing them.
            text = "\n".join(l.split("//")[0] for l in text.splitlines())
            for m in pat.finditer(text):
                group = m.group(1)
                targets = re.findall(r"\b([a-z_]+)\b", group) if group else [m.group(2)]
                for t in targets:
                    if t in names and t != name:
                        graph[name].add(t)
    return graph

def cycle(graph):
    state = {}
    def visit(n, path):
        state[n] = 1
        for t in sorted(graph[n]):
            if state.get(t) == 1:
                return path + [n, t]
            if t not in state:
                c = visit(t, path + [n])
                if c:
                    return c
        state[n] = 2
        return None
    for n in sorted(graph):
        if n not in state:
            c = visit(n, [])
            if c:
                return c
    return None

bad = False
for area in sys.argv[1:] or ["handler", "fanout"]:
    c = cycle(edges(area, Path("src") / area))
    if c:
        start = c.index(c[-1])
        print(f"error: import cycle in src/{area}: " + " -> ".join(c[start:]), file=sys.stderr)
        bad = True
sys.exit(1 if bad else 0)
