"""Workers for steer-mode rollback tests: generation 2 is rolled back and
lingers, every other generation serves well.

usage: rolledback.py MODE [GOOD...]
Generation 2 never sends READY=1 (baton rolls it back when
BATON_READY_TIMEOUT ends) and ignores SIGTERM (baton kills it only after
BATON_STOP_TIMEOUT). Meanwhile it keeps using fd 3 (LISTEN_FDS) by MODE:
  udp         answers every datagram with "gen=2 pid=P <datagram>";
  tcp-accept  once SIGTERM came, waits until its listener has left the
              reuseport group (SO_ACCEPTCONN 0, once baton shut it down) or
              2 s, then calls listen() on it again, as asyncio, uvicorn, Node
              and gunicorn do, prints "relistened" and answers every HTTP
              request with X-Baton-Generation: 2;
  tcp-listen  the same, but never accepts.
Every other generation execs GOOD, or with none, as in udp mode answers
every datagram, sends READY=1, and on SIGTERM answers what is already
queued before it exits 0.
"""
import os, select, signal, socket, sys, time

import sigwait

mode, good = sys.argv[1], sys.argv[2:]
gen = os.environ.get("BATON_GENERATION", "")
if os.environ.get("LISTEN_PID") != str(os.getpid()):
    raise SystemExit("no LISTEN_FDS for this process")
if gen != "2" and good:
    os.execv(good[0], good)

sigwait.setup()
terms = []
signal.signal(signal.SIGTERM, lambda *a: terms.append(1))
kind = socket.SOCK_DGRAM if mode == "udp" else socket.SOCK_STREAM
s = socket.socket(fileno=3, type=kind)


def echo():
    # The socket is non-blocking, and that is not the worker's to change.
    try:
        data, peer = s.recvfrom(2048)
    except BlockingIOError:
        return False
    s.sendto(b"gen=%s pid=%d %s" % (gen.encode(), os.getpid(), data), peer)
    return True


if gen != "2":
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", addr)
    while True:
        ready, _, _ = select.select([s, sigwait._r], [], [])
        if sigwait._r in ready:
            os.read(sigwait._r, 512)
        if s in ready:
            echo()
        if terms:
            while echo():
                pass
            os._exit(0)

print("started", flush=True)
if mode == "udp":
    while True:
        ready, _, _ = select.select([s, sigwait._r], [], [])
        if sigwait._r in ready:
            os.read(sigwait._r, 512)
            print("term", flush=True)
        if s in ready:
            echo()

while not terms:
    os.read(sigwait._r, 512)
print("term", flush=True)
end = time.monotonic() + 2
while time.monotonic() < end and s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
    time.sleep(0.01)
s.listen(128)
print("relistened", flush=True)
if mode == "tcp-listen":
    sigwait.forever()

RESPONSE = (b"HTTP/1.1 200 OK\r\nX-Baton-Generation: 2\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 3\r\nConnection: close\r\n\r\ngen")
while True:
    select.select([s], [], [])
    try:
        c, _ = s.accept()
    except BlockingIOError:
        continue
    c.setblocking(True)
    c.settimeout(5)
    try:
        buf = b""
        while b"\r\n\r\n" not in buf:
            got = c.recv(4096)
            if not got:
                break
            buf += got
        head, _, body = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(body) < length:
            got = c.recv(4096)
            if not got:
                break
            body += got
        c.sendall(RESPONSE)
    except OSError:
        pass
    c.close()
