"""A worker that exits and leaves a helper running in its process group.

usage: groupleft.py [--ignore]
Forks a helper into the worker's own process group, waits until the helper
has set up its TERM disposition, prints "helper pid=P pgid=G" and exits 3.
On TERM the helper prints "helper got TERM", spends 300 ms cleaning up,
prints "helper done" and exits 0. With --ignore it ignores TERM: only
SIGKILL ends it.
"""
import os, signal, sys, time

import sigwait

ignore = "--ignore" in sys.argv[1:]
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    sigwait.setup()
    def on_term(num, frame):
        os.write(1, b"helper got TERM\n")
        time.sleep(0.3)  # the cleanup takes a while
        os.write(1, b"helper done\n")
        os._exit(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore else on_term)
    os.write(w, b"x")
    os.close(w)
    sigwait.forever()
os.close(w)
os.read(r, 1)
print("helper pid=%d pgid=%d" % (pid, os.getpgid(pid)), flush=True)
sys.exit(3)
