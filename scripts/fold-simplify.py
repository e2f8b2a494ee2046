#!/usr/bin/env python3
"""Shortens the frames of a folded perf profile (generic arguments dropped,
thread numbers merged) so a flame graph of it stays small and readable."""
import sys,re,collections
def strip(f):
    # Keep `<Type as Trait>` (depth 1) but drop generic arguments inside it.
    out = []
    d = 0
    for ch in f:
        if ch == "<":
            d += 1
            if d <= 1:
                out.append(ch)
            elif d == 2:
                out.append("<…")
            continue
        if ch == ">" and d > 0:
            d -= 1
            if d <= 1:
                out.append(ch)
            continue
        if d <= 1:
            out.append(ch)
    return "".join(out)[:160]


c=collections.Counter()
for l in open(sys.argv[1]):
    s,n=l.rsplit(' ',1)
    fr=[strip(x) for x in s.split(';')]
    fr[0]=re.sub(r'-\d+(/\d+)?$','',fr[0])
    c[';'.join(fr)]+=int(n)
for k,v in c.items(): print(k,v)
