"""A worker that says READY=1 only when told to.

usage: ops_readyworker.py
Prints "started gen=G pid=P"; on each SIGUSR1 sends READY=1 to
$NOTIFY_SOCKET (once) and prints "ready gen=G pid=P". Exits 0 on TERM.
It never touches the inherited listeners.
"""
import os, signal, socket, sys

import sigwait

gen = os.environ.get("BATON_GENERATION", "0")
sent = False


def notify(msg):
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(msg.encode(), addr)
    s.close()


def on_usr1(num, frame):
    global sent
    if not sent:
        sent = True
        notify("READY=1")
        os.write(1, b"ready gen=%s pid=%d\n" % (gen.encode(), os.getpid()))


sigwait.setup()
signal.signal(signal.SIGUSR1, on_usr1)
signal.signal(signal.SIGTERM, lambda n, f: os._exit(0))
print("started gen=%s pid=%d" % (gen, os.getpid()), flush=True)
sigwait.forever()
