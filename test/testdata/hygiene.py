"""Reports what a worker inherited, on one stdout line, then waits.

hygiene gen=G worker=W fds=0,1,2,3,4 listen_pid_ok=yes listen_fds=N
listen_fdnames=... baton_vars=... sigblk=HEX sigign=HEX notify=set|unset
fd3_ino=I fd4_ino=I fd3_nonblock=yes|no
"""
import fcntl, os, signal

import sigwait

fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
# listdir itself opened one descriptor, closed by now: keep those still open.
fds = [f for f in fds if os.path.exists("/proc/self/fd/%d" % f)]
# SIGSTATUS is "SigBlk:HEX SigIgn:HEX" as read by the sh that exec'd us
# (Python ignores SIGPIPE and SIGXFSZ itself at start-up).
status = dict(kv.split(":", 1) for kv in os.environ.get("SIGSTATUS", "").split())
rep = {
    "gen": os.environ.get("BATON_GENERATION", ""),
    "worker": os.environ.get("BATON_WORKER", ""),
    "fds": ",".join(map(str, fds)),
    "listen_pid_ok": "yes" if os.environ.get("LISTEN_PID") == str(os.getpid()) else "no",
    "listen_fds": os.environ.get("LISTEN_FDS", ""),
    "listen_fdnames": os.environ.get("LISTEN_FDNAMES", ""),
    "baton_vars": ",".join(sorted(k for k in os.environ if k.startswith("BATON_"))),
    "listen_pid": os.environ.get("LISTEN_PID", ""),
    "sigblk": status.get("SigBlk", "missing"),
    "sigign": status.get("SigIgn", "missing"),
    "notify": "set" if os.environ.get("NOTIFY_SOCKET") else "unset",
}
for fd in (3, 4):
    try:
        rep["fd%d_ino" % fd] = str(os.fstat(fd).st_ino)
    except OSError:
        rep["fd%d_ino" % fd] = "none"
try:
    rep["fd3_nonblock"] = "yes" if fcntl.fcntl(3, fcntl.F_GETFL) & os.O_NONBLOCK else "no"
except OSError:
    rep["fd3_nonblock"] = "none"
print("hygiene " + " ".join("%s=%s" % kv for kv in rep.items()), flush=True)
sigwait.setup()
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
sigwait.forever()
