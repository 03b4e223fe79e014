#!/usr/bin/env python3
"""The call graph between the C files of src/: which file calls (or reads)
which other file's phx_ functions and variables, whether any files call each
other in a circle, and which folders (layers) call which.

    python3 test/layering.py [src]       prints the graph; exits 1 on a cycle
"""
import re, os, sys, glob, itertools
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
files = sorted(glob.glob(f'{root}/*.c') + glob.glob(f'{root}/*/*.c'))
defs = {}
texts = {}
for f in files:
    t = open(f).read()
    t = re.sub(r'/\*.*?\*/', '', t, flags=re.S)
    t = re.sub(r'"(\\.|[^"\\])*"', '""', t)
    texts[f] = t
    for m in re.finditer(r'^(?:[A-Za-z_][\w \*]*\n)?(phx_\w+)\(', t, re.M):
        defs.setdefault(m.group(1), f)
    for m in re.finditer(r'^(?:const )?[A-Za-z_][\w \*]*?\b(phx_\w+)\s*(?:=|;|\[)', t, re.M):
        defs.setdefault(m.group(1), f)
edges = {}
for f, t in texts.items():
    for name, d in defs.items():
        if d != f and re.search(r'\b' + name + r'\b', t):
            edges.setdefault(f, {}).setdefault(d, []).append(name)
short = lambda p: os.path.relpath(p, root)
for f in files:
    for d, names in sorted(edges.get(f, {}).items()):
        print(f'{short(f):28s} -> {short(d):28s} {", ".join(sorted(set(names)))}')
# cycles (file level)
def reach(a):
    seen, st = set(), [a]
    while st:
        x = st.pop()
        for y in edges.get(x, {}):
            if y not in seen:
                seen.add(y); st.append(y)
    return seen
cyc = [short(f) for f in files if f in reach(f)]
print('files in a cycle:', cyc or 'none')
folder = lambda p: os.path.dirname(short(p)) or '.'
fe = {}
for f, ds in edges.items():
    for d in ds:
        if folder(f) != folder(d):
            fe.setdefault(folder(f), set()).add(folder(d))
print('folder edges:', {k: sorted(v) for k, v in sorted(fe.items())})
sys.exit(1 if cyc else 0)
