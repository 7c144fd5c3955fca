"""gunicorn 20.1 settings for running app.py under baton.

Why these settings:

* Listener: none is configured. gunicorn's arbiter takes fds 3.. by itself
  when LISTEN_PID equals its pid (gunicorn/systemd.py listen_fds). With a
  wrong LISTEN_PID it would silently bind 127.0.0.1:8000 instead, so
  on_starting below refuses to start (exit 3) unless the systemd variables
  are right. Do not add `bind = "fd://3"` as well: gunicorn would then try to
  adopt fd 3 twice and fail.

* READY=1: gunicorn's arbiter sends "READY=1\\nSTATUS=Gunicorn arbiter
  booted" itself when NOTIFY_SOCKET is set, from its own pid (the worker
  baton started), right after adopting the listeners and *before* it forks
  its workers. preload_app = True imports the app in the arbiter before
  that, so a generation whose app fails to import exits before READY=1
  (baton rolls back) instead of after it. The remaining gap (forking the
  workers, ~0.1 s) is absorbed by the shared accept queue as latency.

* Worker class "sync": every response carries "Connection: close" (the sync
  worker never keeps connections alive), so a drain cannot race a client
  reusing an idle connection. On SIGTERM each sync worker finishes the
  request it is on and exits without accepting again; the arbiter closes
  its copy of the listener, waits up to graceful_timeout for the workers and
  exits 0. Connections still queued stay in baton's socket for the next
  generation. gthread (keep-alive) instead drops its idle keep-alive
  connections at once when told to stop, which races with clients reusing
  them; gevent/eventlet call setblocking(1) on the shared listener.
"""

import os
import sys

workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = "sync"
preload_app = True
# Bounded below baton's BATON_STOP_TIMEOUT (default 8 s).
graceful_timeout = 5
timeout = 30
# Heartbeat files on tmpfs when there is one (a read-only root has no /tmp).
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")


def on_starting(server):
    """Refuse to start unless gunicorn will adopt the inherited sockets.

    Runs in the arbiter before it looks at LISTEN_FDS, so the variables are
    still there. gunicorn's own check is the same comparison; without this
    hook a mismatch would mean a server on 127.0.0.1:8000 that baton's
    socket never reaches.
    """
    pid, fds = os.environ.get("LISTEN_PID", ""), os.environ.get("LISTEN_FDS", "")
    if pid != str(os.getpid()) or not fds.isdigit() or int(fds) < 1:
        sys.stderr.write(
            "gunicorn.conf.py: not socket-activated (LISTEN_PID=%r, our pid %d, "
            "LISTEN_FDS=%r): gunicorn would bind 127.0.0.1:8000 instead of fd 3; "
            "exiting 3\n" % (pid, os.getpid(), fds))
        sys.stderr.flush()
        os._exit(3)
