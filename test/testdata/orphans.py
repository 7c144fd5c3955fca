"""Makes orphans: a middle process starts N grandchildren and exits at once,
so every grandchild is reparented to the init (or subreaper) and must be
reaped there.

usage: orphans.py N [--linger-ms MS] [--exit CODE] [--wait]
Grandchildren are /bin/true, or with --linger-ms a sleep of up to MS
milliseconds (random). They are started with posix_spawn (vfork speed), so
10,000 take about a second. Prints "orphan PID" per grandchild when
N <= 200, then "done N" once the middle process is gone. With --exit the
worker then exits with CODE; with --wait it waits for TERM instead.
"""
import os, random, signal, sys

import sigwait

n = int(sys.argv[1])
linger = 0
code = None
wait = False
args = sys.argv[2:]
while args:
    a = args.pop(0)
    if a == "--linger-ms":
        linger = int(args.pop(0))
    elif a == "--exit":
        code = int(args.pop(0))
    elif a == "--wait":
        wait = True

r, w = os.pipe()
middle = os.fork()
if middle == 0:
    os.close(r)
    pids = []
    for i in range(n):
        if linger:
            argv = ["sleep", "%.4f" % (random.random() * linger / 1000.0)]
            pids.append(os.posix_spawn("/bin/sleep", argv, {}))
        else:
            pids.append(os.posix_spawn("/bin/true", ["true"], {}))
    if n <= 200:
        os.write(w, "".join("%d\n" % p for p in pids).encode())
    os._exit(0)  # without waiting: the grandchildren are orphans now
os.close(w)
out = os.fdopen(r).read()
os.waitpid(middle, 0)
for line in out.split():
    print("orphan", line, flush=True)
print("done", n, flush=True)
if wait:
    sigwait.setup()
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    sigwait.forever()
if code is not None:
    os._exit(code)
