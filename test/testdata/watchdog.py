"""A worker for the watchdog test. Sends READY=1; worker 0 then sends
WATCHDOG=1 every WATCHDOG_USEC/4 (and prints "pinged" once the first is in
baton's queue), worker 1 never does. Prints
"watchdog worker=W pid=P usec=U pid_ok=yes|no" first."""
import os, signal, socket, time

import sigwait

w = os.environ.get("BATON_WORKER", "")
usec = int(os.environ.get("WATCHDOG_USEC", "0"))
ok = "yes" if os.environ.get("WATCHDOG_PID") == str(os.getpid()) else "no"
print("watchdog worker=%s pid=%d usec=%d pid_ok=%s" % (w, os.getpid(), usec, ok), flush=True)
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1", addr)
sigwait.setup()
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
first = True
while True:
    if w == "0":
        s.sendto(b"WATCHDOG=1", addr)
        if first:
            print("pinged", flush=True)
            first = False
        time.sleep(usec / 4e6)
    else:
        sigwait.forever()
