#!/usr/bin/env python3
"""Import cycles between the files of each crate: `use crate::...` / `super::...` edges
(comments and #[cfg(test)] modules left out; a module's own declarations and re-exports in
its mod.rs/lib.rs are not edges). Prints each crate's count; exits 1 when any has a cycle.

Usage: tools/import_cycles.py CRATE_DIR...   (make check runs it on every crate)
"""
import os,re,sys
def files(crate):
    src=os.path.join(crate,'src'); out={}
    for root,_,fs in os.walk(src):
        for f in fs:
            if f.endswith('.rs'):
                p=os.path.join(root,f); rel=os.path.relpath(p,src)[:-3]
                mod=rel.replace(os.sep,'::')
                mod=re.sub(r'(::)?mod$','',mod); mod=re.sub(r'^(lib|main)$','',mod)
                out[mod]=p
    return out
def strip_tests(t):
    i=t.find('#[cfg(test)]')
    return t if i<0 else t[:i]
bad=0
for crate in sys.argv[1:]:
    fs=files(crate); g={}
    for m,p in fs.items():
        t=strip_tests(open(p).read())
        t=re.sub(r'//[^\n]*','',t)
        deps=set()
        for path in re.findall(r'crate::([A-Za-z_][A-Za-z0-9_:]*)',t):
            parts=path.split('::')
            for k in range(len(parts),0,-1):
                c='::'.join(parts[:k])
                if c in fs: deps.add(c); break
        parent=m
        for path in re.findall(r'\bsuper::([A-Za-z_][A-Za-z0-9_:]*)',t):
            base=m.rsplit('::',1)[0] if '::' in m else ''
            if os.path.basename(p)=='mod.rs': base=m.rsplit('::',1)[0] if '::' in m else ''
            parts=path.split('::')
            for k in range(len(parts),0,-1):
                c='::'.join(([base] if base else [])+parts[:k])
                if c in fs: deps.add(c); break
        deps.discard(m); deps.discard('')
        g[m]=deps
    # parent modules (mod.rs / lib.rs) declaring children are not imports; ignore edges to ancestors? keep.
    color={}; cyc=[]
    def dfs(u,stack):
        color[u]=1; stack.append(u)
        for v in g.get(u,()):
            if color.get(v)==1: cyc.append(stack[stack.index(v):]+[v])
            elif not color.get(v): dfs(v,stack)
        stack.pop(); color[u]=2
    for u in g:
        if not color.get(u): dfs(u,[])
    print(crate, len(fs),'files', 'cycles:', len(cyc))
    for c in cyc[:8]: print('   ',' -> '.join(c))
    bad+=len(cyc)
sys.exit(1 if bad else 0)
