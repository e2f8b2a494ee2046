#!/usr/bin/env python3
"""Shares of a folded profile by part of the broker, as docs/benchmarks.md
quotes them (the first rule a stack matches wins)."""
import sys, collections
rules=[
 ("storage: Diesel and the database (SQLite in process incl. WAL write + fsync; MySQL: client side)", ["webhook_broker::db::","sqlite3","diesel::"]),
 ("delivery: HTTP client (awc) incl. socket I/O", ["awc::"]),
 ("signing (HMAC-SHA256)", ["signature::"]),
 ("ingest: HTTP server (actix-web: parse, auth, JSON, answer) incl. socket I/O", ["actix_http::h1::dispatcher","actix_server::"]),
 ("dispatcher/registry/recorder/delivery actor logic", ["webhook_broker::actors::"]),
 ("actor mailboxes and async runtime (actix, tokio: queues, wakeups, timers)", ["actix::","tokio::","actix_rt::"]),
]
tot=0; c=collections.Counter(); k=0
for line in open(sys.argv[1]):
    s,n=line.rsplit(' ',1); n=int(n); tot+=n
    if s.split(';')[-1].endswith('_[k]'): k+=n
    for name,pats in rules:
        if any(p in s for p in pats): c[name]+=n; break
    else: c["other"]+=n
for name,_ in rules+[("other",0)]:
    print("| %s | %.0f%% |"%(name,100*c[name]/tot))
print("| (of all samples: in the kernel) | %.0f%% |"%(100*k/tot))
