"""An HTTP/1.1 worker that drains as badly as an unchanged app does: no
SIGTERM handler, so the stop signal ends it at once, requests in flight
and all. It serves fd 3 (LISTEN_FDS), keep-alive included, one thread a
connection; every request takes SLOW_SECONDS (default 1) to answer, and
one for /hang an hour. It prints "request GEN PATH" as it reads each
request, and sends READY=1."""
import os, select, socket, sys, threading, time

if os.environ.get("LISTEN_PID") != str(os.getpid()):
    raise SystemExit("no LISTEN_FDS for this process")
ls = socket.socket(fileno=3)
gen = os.environ.get("BATON_GENERATION", "")
slow = float(os.environ.get("SLOW_SECONDS", "1"))
out = threading.Lock()


def serve(c):
    c.setblocking(True)
    f = c.makefile("rb")
    while True:
        line = f.readline()
        if not line:
            return
        path = line.split()[1].decode() if len(line.split()) > 1 else "/"
        while f.readline() not in (b"\r\n", b"\n", b""):
            pass
        with out:
            sys.stdout.write("request %s %s\n" % (gen, path))
            sys.stdout.flush()
        time.sleep(3600 if path == "/hang" else slow)
        body = ("gen %s %s\n" % (gen, path)).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", addr)
while True:
    # The listener is non-blocking and not the worker's to change.
    select.select([ls], [], [])
    try:
        c, _ = ls.accept()
    except BlockingIOError:
        continue  # another worker took it
    threading.Thread(target=serve, args=(c,), daemon=True).start()
