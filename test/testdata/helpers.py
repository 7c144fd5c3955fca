"""A main process with N helpers that need time to clean up on TERM.

usage: helpers.py N CLEANUP_MS
Helpers are forked; every other one calls setsid() (its own session, so
only a signal to every process reaches it). On TERM a helper spends
CLEANUP_MS "cleaning up", prints "cleaned I" and exits. The main process
prints "ready" once every helper has installed its handler, and exits at
once on TERM: the main child exits first, which is where inits lose them.
"""
import os, signal, sys, time

import sigwait

n, cleanup = int(sys.argv[1]), int(sys.argv[2]) / 1000.0
r, w = os.pipe()
for i in range(n):
    if os.fork() == 0:
        os.close(r)
        if i % 2 == 1:
            os.setsid()
        sigwait.setup()
        def handler(num, frame, i=i):
            time.sleep(cleanup)
            print("cleaned", i, flush=True)
            os._exit(0)
        signal.signal(signal.SIGTERM, handler)
        os.write(w, b"x")
        os.close(w)
        sigwait.forever()
os.close(w)
got = 0
while got < n:
    got += len(os.read(r, n))
sigwait.setup()
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
print("ready", flush=True)
sigwait.forever()
