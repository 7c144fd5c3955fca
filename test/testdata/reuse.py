"""A worker for the pid-reuse test.

Prints "ready pid=P gen=G" once its handlers are in place. TERM ends it
with status 0, except in generation 2, which ignores TERM (its retirement
ends in SIGKILL at the stop timeout). On SIGUSR1 it forks a process that
takes the pid written in the file $REUSE_PID_FILE (through ns_last_pid),
in a session and process group of its own, unrelated to any worker; that
process prints "victim nspid=N hostpid=H" and waits.
"""
import os, signal, time

import sigwait

gen = os.environ.get("BATON_GENERATION", "")


def victim(num, frame):
    want = int(open(os.environ["REUSE_PID_FILE"]).read())
    try:
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(want - 1))
    except OSError as e:
        os.write(1, b"victim-failed %s\n" % str(e).encode())
        return
    pid = os.fork()
    if pid == 0:
        os.setsid()
        sigwait.setup()
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        # /proc here is the test's (host) view, so /proc/self names the
        # host pid.
        os.write(1, b"victim nspid=%d hostpid=%s\n" % (os.getpid(), os.readlink("/proc/self").encode()))
        sigwait.forever()


sigwait.setup()
signal.signal(signal.SIGUSR1, victim)
if gen == "2":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
print("ready pid=%d gen=%s" % (os.getpid(), gen), flush=True)
sigwait.forever()
