"""A UDP worker: answers every datagram on fd 3 (LISTEN_FDS) with
"gen=G pid=P <datagram>", sends READY=1, and exits 0 on SIGTERM."""
import os, select, signal, socket

if os.environ.get("LISTEN_PID") != str(os.getpid()):
    raise SystemExit("no LISTEN_FDS for this process")
s = socket.socket(fileno=3)
gen = os.environ.get("BATON_GENERATION", "")
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", addr)
while True:
    # The socket is non-blocking, and that is not the worker's to change
    # (in shared mode every generation shares its file description).
    select.select([s], [], [])
    try:
        data, peer = s.recvfrom(2048)
    except BlockingIOError:
        continue  # another worker took it
    s.sendto(b"gen=%s pid=%d %s" % (gen.encode(), os.getpid(), data), peer)
