#!/usr/bin/env python3
"""The file-level import graph of src/ from `crate::` and `super::` paths; prints every cycle
(a child naming its parent module's items is allowed) and exits 1 if there is one."""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
mods = {}  # module path tuple -> file
for d, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p = os.path.join(d, f)
        rel = os.path.relpath(p, root)[:-3].split(os.sep)
        if rel[-1] == 'mod': rel = rel[:-1]
        if rel == ['lib'] or rel == ['main']: rel = []  if rel == ['lib'] else ['__main']
        mods[tuple(rel)] = p
def modpath_of(p):
    for k, v in mods.items():
        if v == p: return k
def resolve(path):
    # longest prefix that is a module file
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in mods: return tuple(path[:n])
def expand(tree):
    # expand a use tree like a::{b, c::{d, e}} into paths
    tree = re.sub(r'\s+', '', tree)
    out = []
    def rec(prefix, s):
        # split top-level by commas
        parts, depth, cur = [], 0, ''
        for ch in s:
            if ch == '{': depth += 1
            if ch == '}': depth -= 1
            if ch == ',' and depth == 0: parts.append(cur); cur = ''
            else: cur += ch
        if cur: parts.append(cur)
        for part in parts:
            if '{' in part:
                i = part.index('{'); head = part[:i].rstrip(':').split('::') if part[:i].rstrip(':') else []
                rec(prefix + [h for h in head if h], part[i+1:-1])
            else:
                seg = part.split(' as ')[0].split('as')[0] if False else part
                seg = re.sub(r'as\w+$', '', seg) if False else seg
                out.append(prefix + [x for x in re.split(r'::', re.sub(r'as[A-Za-z_]\w*$','',part)) if x])
    rec([], tree)
    return out
edges = {}
for mp, p in mods.items():
    src = open(p).read()
    # drop #[cfg(test)] mod tests { ... } crudely: cut at '#[cfg(test)]\nmod tests'
    src = re.split(r'#\[cfg\(test\)\]\s*mod\s+tests', src)[0]
    src = re.sub(r'//[^\n]*', '', src)
    targets = set()
    for m in re.finditer(r'\buse\s+([^;]+);', src):
        for path in expand(m.group(1)):
            targets.add(tuple(path))
    for m in re.finditer(r'\b((?:crate|super)(?:::[A-Za-z_]\w*)+)', src):
        targets.add(tuple(m.group(1).split('::')))
    me = mp
    for t in targets:
        t = list(t)
        if not t: continue
        if t[0] == 'crate': abs_ = t[1:]
        elif t[0] == 'super':
            base = list(me[:-1]) if not mods[me].endswith('mod.rs') else list(me[:-1])
            # `super` from file a/b.rs is a ; from a/b/mod.rs is a too
            i = 0
            base = list(me)
            while i < len(t) and t[i] == 'super':
                base = base[:-1]; i += 1
            parent_hop = (i >= 1)
            abs_ = base + t[i:]
        elif t[0] == 'self': abs_ = list(me) + t[1:]
        else: continue
        r = resolve(abs_)
        if r is None or r == me: continue
        # a child naming its parent module's items is fine
        if len(r) < len(me) and tuple(me[:len(r)]) == r: continue
        edges.setdefault(me, set()).add(r)
# Tarjan
idx, low, st, on, res, c = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        res.append(comp)
for v in mods:
    if v not in idx: sc(v)
bad = [r for r in res if len(r) > 1]
for comp in bad:
    names = sorted('/'.join(x) or 'lib' for x in comp)
    print(len(comp), 'files in a cycle:', ' '.join(names))
    s = set(comp)
    for a in comp:
        for b in sorted(edges.get(a, ())):
            if b in s: print('   ', '/'.join(a) or 'lib', '->', '/'.join(b) or 'lib')
print('cycles:', len(bad))
sys.exit(1 if bad else 0)
