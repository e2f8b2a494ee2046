# The insert of 1,000 deliveries into copies of `deliveries`, each copy
# without some of its indexes (docs/benchmarks.md, session 11):
#   python3 insert_indexes.py dx_full,dx_nochan ',deliveries_by_channel_seq'
# (the second argument: the indexes to drop per copy, joined by '+'; the
# word `key` adds an index on (channel_key, seq), channel_key being a
# 64-bit hash of webhook and channel that every copy carries: session 12,
#   python3 insert_indexes.py dx_full,dx_nochan,dx_key,dx_key_nocreated \
#     ',deliveries_by_channel_seq,deliveries_by_channel_seq+key,deliveries_by_channel_seq+key+deliveries_by_created'
# ). The schema must predate migration 000014, which drops the channel
# index: check out an older commit to migrate `wb_exp`.
# Needs a MariaDB database `wb_exp` with the broker's MySQL schema: create
# it and start the broker on it once, which runs the migrations:
#   mariadb -h127.0.0.1 -uroot -e 'CREATE DATABASE wb_exp'
#   DATABASE_URL=mysql://root@127.0.0.1:3306/wb_exp BROKER_BIND=127.0.0.1:0 \
#     timeout 8 target/release/webhook-broker
# and `pip install pymysql`. Times are wall-clock round trips from Python,
# for comparing forms with one another in the same minutes, not absolute.
import pymysql, random, time, statistics, sys, hashlib
db = pymysql.connect(host='127.0.0.1', user='root', database='wb_exp', autocommit=False)
cur = db.cursor()
tables = sys.argv[1].split(',')
for t in tables:
    cur.execute(f"DROP TABLE IF EXISTS {t}"); cur.execute(f"CREATE TABLE {t} LIKE deliveries")
    cur.execute(f"ALTER TABLE {t} ADD COLUMN channel_key BIGINT NULL")
for t, drop in zip(tables, sys.argv[2].split(',')):
    for ix in filter(None, drop.split('+')):
        if ix == 'key':
            cur.execute(f"CREATE INDEX by_channel_key ON {t} (channel_key, seq)")
        else:
            cur.execute(f"DROP INDEX {ix} ON {t}")
def channel_key(webhook, channel):
    return int.from_bytes(hashlib.sha256((webhook + "\0" + channel).encode()).digest()[:8], 'big', signed=True)
WEBHOOKS = [f"wh_{i:032x}" for i in range(10)]
seq = 0
times = {t: [] for t in tables}
now = int(time.time()*1000)
for rnd in range(230):
    rows = []
    for _ in range(1000):
        seq += 1
        webhook, channel = random.choice(WEBHOOKS), "ch-%d" % random.randrange(1000)
        rows.append(("msg_%020d%012x" % (seq, random.getrandbits(48)), "evt_%032d" % seq, webhook, channel, 'pending', 0, now, now, seq, channel_key(webhook, channel)))
    now += 100
    # Each round in a new order, so that no copy always goes first.
    for t in random.sample(tables, len(tables)):
        t0 = time.perf_counter()
        for i in range(0, 1000, 200):
            ch = rows[i:i+200]
            cur.execute(f"INSERT INTO {t} (id,event_id,webhook_id,channel_id,status,attempts,next_attempt_at,created_at,seq,channel_key) VALUES " + ",".join(["(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"]*len(ch)), [v for r in ch for v in r])
        db.commit()
        if rnd >= 200: times[t].append((time.perf_counter()-t0)*1000)
for t in tables: print(t, "median %.1f ms" % statistics.median(times[t]))
