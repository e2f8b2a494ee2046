# Outcome-update forms on the broker's MySQL schema, timed alone
# (docs/benchmarks.md, session 11): 200,000 rows of history, then rounds of
# 1,000 rows inserted and updated to succeeded by each form in turn.
#   python3 outcome_forms.py join_narrow,one_in 30
# Needs a MariaDB database `wb_exp` with the broker's MySQL schema: create
# it and start the broker on it once, which runs the migrations:
#   mariadb -h127.0.0.1 -uroot -e 'CREATE DATABASE wb_exp'
#   DATABASE_URL=mysql://root@127.0.0.1:3306/wb_exp BROKER_BIND=127.0.0.1:0 \
#     timeout 8 target/release/webhook-broker
# and `pip install pymysql`. Times are wall-clock round trips from Python,
# for comparing forms with one another in the same minutes, not absolute.
import pymysql, random, time, statistics, sys, uuid
db = pymysql.connect(host='127.0.0.1', user='root', database='wb_exp', autocommit=False)
cur = db.cursor()
WEBHOOKS = [f"wh_{i:032x}" for i in range(10)]
seq = [0]
def new_rows(n, now):
    rows = []
    for _ in range(n):
        seq[0] += 1
        rows.append(("msg_" + uuid.uuid7().hex if hasattr(uuid,'uuid7') else "msg_%020d%012x" % (seq[0], random.getrandbits(48)),
                     "evt_%032d" % seq[0], random.choice(WEBHOOKS), "ch-%d" % random.randrange(1000),
                     'pending', 0, now, now, seq[0]))
    return rows
def insert(rows):
    for i in range(0, len(rows), 200):
        ch = rows[i:i+200]
        cur.execute("INSERT INTO deliveries (id,event_id,webhook_id,channel_id,status,attempts,next_attempt_at,created_at,seq) VALUES " +
                    ",".join(["(%s,%s,%s,%s,%s,%s,%s,%s,%s)"] * len(ch)), [v for r in ch for v in r])
    db.commit()
def join_narrow(rows, now):
    for i in range(0, len(rows), 250):
        ch = rows[i:i+250]
        sql = "UPDATE deliveries d JOIN (SELECT %s AS id, %s AS attempts, %s AS at, %s AS last_status_code" + " UNION ALL SELECT %s,%s,%s,%s" * (len(ch)-1) + \
              ") v ON d.id = v.id SET d.status='succeeded', d.attempts=v.attempts, d.next_attempt_at=v.at, d.last_status_code=v.last_status_code, d.last_error=NULL, d.delivered_at=v.at"
        args = []
        for k, r in enumerate(ch):
            args += [r[0], 1, now + k // 10, 200]
        cur.execute(sql, args)
def grouped_ms(rows, now):
    groups = {}
    for k, r in enumerate(rows):
        groups.setdefault(now + k // 10, []).append(r[0])
    for at, ids in groups.items():
        cur.execute("UPDATE deliveries SET status='succeeded', attempts=1, next_attempt_at=%s, last_status_code=200, last_error=NULL, delivered_at=%s WHERE id IN (" + ",".join(["%s"]*len(ids)) + ")", [at, at] + ids)
def one_in(rows, now):
    ids = [r[0] for r in rows]
    for i in range(0, len(ids), 1000):
        ch = ids[i:i+1000]
        cur.execute("UPDATE deliveries SET status='succeeded', attempts=1, last_status_code=200, last_error=NULL WHERE id IN (" + ",".join(["%s"]*len(ch)) + ")", ch)
def status_only(rows, now):
    ids = [r[0] for r in rows]
    cur.execute("UPDATE deliveries SET status='succeeded', attempts=1 WHERE id IN (" + ",".join(["%s"]*len(ids)) + ")", ids)
VARIANTS = dict(join_narrow=join_narrow, grouped_ms=grouped_ms, one_in=one_in, status_only=status_only)
pick = sys.argv[1].split(',')
# history
now = int(time.time()*1000)
cur.execute("SELECT COUNT(*) FROM deliveries"); have = cur.fetchone()[0]
while have < 200000:
    rows = new_rows(2000, now); insert(rows)
    cur.execute("UPDATE deliveries SET status='succeeded' WHERE status='pending'"); db.commit(); have += 2000
times = {v: [] for v in pick}
for rnd in range(int(sys.argv[2]) if len(sys.argv) > 2 else 30):
    for v in pick:
        now += 1000
        rows = new_rows(1000, now); insert(rows)
        t = time.perf_counter(); VARIANTS[v](rows, now); db.commit(); times[v].append((time.perf_counter()-t)*1000)
for v in pick:
    print(v, "median %.1f ms" % statistics.median(times[v]), "p25 %.1f p75 %.1f" % tuple(statistics.quantiles(times[v], n=4)[0::2]))
