# A drain with every channel of one webhook clipped (docs/benchmarks.md,
# session 12): C channels x N events for one webhook whose receiver answers
# 503 while they go in, then 204; prints the drain rate and MariaDB's and
# the broker's CPU per delivery over the drain, order violations and
# duplicates at the receiver (a Python server, which bounds the rate: the
# CPU per delivery is what compares builds).
#   python3 clipdrain.py target/release/webhook-broker 1000 100
# Needs MariaDB on 127.0.0.1:3306 (it creates and drops `wb_clip`) and
# `pip install pymysql`.
# Drain of one webhook whose every channel is clipped: C channels x N events
# behind a receiver that was down; MariaDB and broker CPU per delivery of the drain.
import http.server, threading, subprocess, sys, os, time, json, http.client, socketserver, pymysql
from concurrent.futures import ThreadPoolExecutor
BIN=sys.argv[1]; C=int(sys.argv[2]); N=int(sys.argv[3]); DB=sys.argv[4] if len(sys.argv)>4 else 'wb_clip'
state={'down':True,'ok':0,'order':{},'bad':0,'seen':set(),'dups':0}
lock=threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version='HTTP/1.1'
    def log_message(self,*a): pass
    def do_POST(self):
        n=int(self.headers.get('content-length',0)); body=self.rfile.read(n)
        if state['down']:
            self.send_response(503); self.send_header('content-length','0'); self.end_headers(); return
        j=json.loads(body); ch=j['id']; s=j['seq']; mid=self.headers.get('webhook-id')
        with lock:
            if mid in state['seen']: state['dups']+=1
            else:
                state['seen'].add(mid); state['ok']+=1
                last=state['order'].get(ch,-1)
                if s<last: state['bad']+=1
                state['order'][ch]=s
        self.send_response(204); self.send_header('content-length','0'); self.end_headers()
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads=True
srv=S(('127.0.0.1',0),H); rport=srv.server_address[1]
threading.Thread(target=srv.serve_forever,daemon=True).start()
m=pymysql.connect(host='127.0.0.1',user='root'); c=m.cursor(); c.execute(f'DROP DATABASE IF EXISTS {DB}'); c.execute(f'CREATE DATABASE {DB}'); m.close()
env=dict(os.environ, DATABASE_URL=f'mysql://root@127.0.0.1:3306/{DB}', BROKER_BIND='127.0.0.1:0', BROKER_ADMIN_TOKEN='adm', BROKER_ALLOW_PRIVATE_TARGETS='true', BROKER_RETRY_SCHEDULE=','.join(['2s']*100), RUST_LOG='info')
p=subprocess.Popen([BIN],env=env,stderr=subprocess.PIPE,text=True)
port=None
for line in p.stderr:
    if 'listening on' in line: port=int(line.rsplit(':',1)[1]); break
threading.Thread(target=lambda: [None for _ in p.stderr],daemon=True).start()
def call(method,path,token,body):
    h=http.client.HTTPConnection('127.0.0.1',port); h.request(method,path,json.dumps(body),{'authorization':f'Bearer {token}','content-type':'application/json'}); r=h.getresponse(); d=r.read(); h.close(); return r.status,(json.loads(d) if d else None)
st,app=call('POST','/v1/apps','adm',{'name':'clip'}); assert st==201,app
st,wh=call('POST','/v1/webhook',app['apiKey'],{'uri':f'http://127.0.0.1:{rport}/','event':'all'}); assert st in (200,201),wh
local=threading.local()
def send(i):
    if not hasattr(local,'h'): local.h=http.client.HTTPConnection('127.0.0.1',port)
    body=json.dumps({'event':'channel_live','appId':app['id'],'channel':{'id':f'ch-{i%C}','seq':i//C}})
    local.h.request('POST','/v1/events',body,{'authorization':'Bearer adm','content-type':'application/json'}); r=local.h.getresponse(); r.read(); assert r.status==202, r.status
t0=time.time()
with ThreadPoolExecutor(16) as ex: list(ex.map(send, range(C*N)))
print(f'ingested {C*N} in {time.time()-t0:.1f}s', flush=True)
time.sleep(3)
def cpu(pid):
    f=open(f'/proc/{pid}/stat').read().rsplit(')',1)[1].split(); return (int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK')
mpid=int(subprocess.check_output(['pidof','mariadbd']).split()[0])
c0=(cpu(mpid),cpu(p.pid)); t0=time.time(); state['down']=False
while state['ok']<C*N and time.time()-t0<600: time.sleep(0.2)
dt=time.time()-t0; c1=(cpu(mpid),cpu(p.pid))
n=state['ok']
print(f'{os.path.basename(os.path.dirname(BIN))}: drained {n}/{C*N} in {dt:.1f}s = {n/dt:.0f}/s; mariadb {(c1[0]-c0[0])/max(n,1)*1e6:.0f} us/delivery, broker {(c1[1]-c0[1])/max(n,1)*1e6:.0f} us; order violations {state["bad"]}, dups {state["dups"]}', flush=True)
p.kill(); m=pymysql.connect(host='127.0.0.1',user='root'); m.cursor().execute(f'DROP DATABASE IF EXISTS {DB}')
