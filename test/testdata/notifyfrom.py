"""Sends READY=1 from a stranger first, then from a helper in the worker's
own process group, then waits for TERM.

The stranger is a child that called setsid(): same PID namespace, another
process group, so baton must ignore it. The helper stays in the worker's
group, so baton must count its READY=1 for the worker.
"""
import os, signal, socket, sys

import sigwait


def send_ready():
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"READY=1", addr)
    s.close()


def child(setsid):
    # The sender stays alive after sending: baton (like systemd with
    # NotifyAccess=all) can only attribute a datagram to a live process.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        if setsid:
            os.setsid()
        send_ready()
        sigwait.setup()
        signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
        os.write(w, b"x")
        sigwait.forever()
    os.close(w)
    os.read(r, 1)
    return pid


stranger = child(True)
print("stranger %d" % stranger, flush=True)
# Wait for the test to see baton ignore it before the helper speaks.
sys.stdin.readline()
helper = child(False)
print("helper %d" % helper, flush=True)
sigwait.setup()
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
sigwait.forever()
