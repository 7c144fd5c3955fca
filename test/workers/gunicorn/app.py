"""WSGI test worker for baton, served by Debian's gunicorn 20.1.

Run it with the settings in gunicorn.conf.py (see ./run for the argv):

    /usr/bin/gunicorn --config /ABS/test/workers/gunicorn/gunicorn.conf.py \
        --chdir /ABS/test/workers/gunicorn app:app

gunicorn itself takes the listener (LISTEN_FDS, when LISTEN_PID is its pid)
and sends READY=1 itself (from the arbiter, when NOTIFY_SOCKET is set); the
app does neither.

Protocol (the same for every worker under test/workers):
    GET any path -> 200
      X-Baton-Generation: $BATON_GENERATION
      X-Baton-Worker:     $BATON_WORKER
      X-Baton-Pid:        pid of the gunicorn worker process that answered
      X-Worker-Kind:      gunicorn
      X-Local-Addr:       local address of the accepted connection
      body: "hello from generation G worker W pid P kind gunicorn local A\n"
    ?sleep=MS delays the answer by MS milliseconds (an in-flight request).

X-Local-Addr is the proof that gunicorn serves baton's socket: with a wrong
LISTEN_PID, gunicorn ignores fd 3 and silently binds 127.0.0.1:8000, and the
address there would be 127.0.0.1:8000 (gunicorn.conf.py also refuses to start
in that case, exit 3).
"""

import os
import time
from urllib.parse import parse_qs

KIND = "gunicorn"
GEN = os.environ.get("BATON_GENERATION", "")
WORKER = os.environ.get("BATON_WORKER", "")


def _local_addr(environ):
    sock = environ.get("gunicorn.socket")
    if sock is not None:
        try:
            name = sock.getsockname()
        except OSError:
            name = None
        if isinstance(name, tuple):
            host, port = name[0], name[1]
            return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
        if name:
            return str(name)
    return "%s:%s" % (environ.get("SERVER_NAME", ""), environ.get("SERVER_PORT", ""))


def app(environ, start_response):
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        ms = int(qs.get("sleep", ["0"])[0])
    except ValueError:
        ms = 0
    if ms > 0:
        time.sleep(ms / 1000.0)
    pid = str(os.getpid())
    local = _local_addr(environ)
    body = ("hello from generation %s worker %s pid %s kind %s local %s\n"
            % (GEN, WORKER, pid, KIND, local)).encode()
    start_response("200 OK", [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("X-Baton-Generation", GEN),
        ("X-Baton-Worker", WORKER),
        ("X-Baton-Pid", pid),
        ("X-Worker-Kind", KIND),
        ("X-Local-Addr", local),
    ])
    return [body]
