"""ASGI test worker for baton, served by Debian's uvicorn 0.17.6.

    /usr/bin/python3 -m uvicorn --fd 3 --http h11 --lifespan on \
        --no-access-log --app-dir /ABS/test/workers/uvicorn app:app

uvicorn adopts fd 3 with --fd 3 (it ignores LISTEN_FDS / LISTEN_PID) and
knows nothing of NOTIFY_SOCKET, so this app does two things itself, from its
ASGI lifespan startup handler:

* READY=1: a datagram to $NOTIFY_SOCKET ("@name" = abstract socket), sent
  from uvicorn's own pid once uvicorn is actually serving fd 3 (lifespan
  startup runs *before* uvicorn calls create_server, so it waits for
  Server.started).

* A correct drain. uvicorn 0.17.6 on SIGTERM closes the listener and then, at
  once, closes every connection that has no request in progress: idle
  keep-alive connections *and* connections just accepted whose request has
  not been read yet. A client reusing such a connection gets EOF with no
  bytes. There is no timeout_graceful_shutdown in this version, and it then
  waits for in-flight requests forever. So the app replaces uvicorn's SIGTERM
  handler (loop.add_signal_handler, which replaces): it closes uvicorn's
  listening servers (stop accepting; baton keeps the socket and its queue),
  answers everything with "Connection: close" for WORKER_GRACE_MS (default
  500), and only then hands over to uvicorn's own shutdown (handle_exit),
  which closes what is still idle and waits for what is active. uvicorn
  then exits 0.

The uvicorn Server object is found with gc (uvicorn.main does not expose it
when run as "python3 -m uvicorn"). If it is not found (another ASGI server),
READY=1 is sent at lifespan startup and the server's own SIGTERM handling is
left alone.

Protocol (the same for every worker under test/workers):
    GET any path -> 200
      X-Baton-Generation: $BATON_GENERATION
      X-Baton-Worker:     $BATON_WORKER
      X-Baton-Pid:        pid of the process that answered
      X-Worker-Kind:      uvicorn
      X-Local-Addr:       local address of the accepted connection
      body: "hello from generation G worker W pid P kind uvicorn local A\n"
    ?sleep=MS delays the answer by MS milliseconds (an in-flight request).
"""

import asyncio
import gc
import os
import signal
import socket
import sys
import threading
from urllib.parse import parse_qs

KIND = "uvicorn"
GEN = os.environ.get("BATON_GENERATION", "")
WORKER = os.environ.get("BATON_WORKER", "")
GRACE = int(os.environ.get("WORKER_GRACE_MS", "500")) / 1000.0

_state = {"draining": False}


def log(msg):
    sys.stderr.write("uvicorn-app: pid %d gen %s: %s\n" % (os.getpid(), GEN, msg))
    sys.stderr.flush()


def sd_notify(state):
    """Send one sd_notify datagram; return False if NOTIFY_SOCKET is unset."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(addr)
        s.sendall(state.encode())
    return True


def _notify_ready():
    try:
        if sd_notify("READY=1"):
            log("READY=1 sent")
        else:
            log("NOTIFY_SOCKET not set, READY=1 not sent")
    except OSError as e:
        log("READY=1 failed: %s" % e)


def _find_uvicorn_server():
    try:
        from uvicorn.server import Server
    except ImportError:
        return None
    for obj in gc.get_objects():
        if isinstance(obj, Server):
            return obj
    return None


async def _ready_when_serving(server):
    # uvicorn's startup: lifespan startup (us), then create_server on fd 3,
    # then started = True.
    while not server.started:
        if server.should_exit:
            return
        await asyncio.sleep(0.005)
    _notify_ready()


def _begin_drain(server, loop):
    if _state["draining"]:
        return
    _state["draining"] = True
    log("SIGTERM, draining for %.3fs" % GRACE)
    # Stop accepting: take the listeners out of the event loop first, and
    # close uvicorn's descriptors for them a moment later. Closing at once
    # drops a connection accepted in this same loop step: Python 3.11's
    # asyncio Server._attach asserts the server still has sockets, and the
    # connection is lost without a word (the client is reset when we exit).
    servers = getattr(server, "servers", None) or []
    for srv in servers:
        for sock in srv.sockets:
            loop.remove_reader(sock.fileno())
    loop.call_later(0.05, lambda: [s.close() for s in servers])
    # Then uvicorn's own shutdown: idle connections closed, active awaited.
    loop.call_later(GRACE, server.handle_exit, signal.SIGTERM, None)


async def _lifespan(receive, send):
    message = await receive()
    assert message["type"] == "lifespan.startup"
    server = _find_uvicorn_server()
    if server is not None and threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, _begin_drain, server, loop)
        loop.create_task(_ready_when_serving(server))
    else:
        log("uvicorn Server not found: READY=1 now, server's own SIGTERM handling")
        _notify_ready()
    await send({"type": "lifespan.startup.complete"})
    message = await receive()
    assert message["type"] == "lifespan.shutdown"
    await send({"type": "lifespan.shutdown.complete"})


def _fmt_addr(addr):
    if not addr:
        return ""
    host, port = addr[0], addr[1]
    return "[%s]:%s" % (host, port) if ":" in str(host) else "%s:%s" % (host, port)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    try:
        ms = int(qs.get("sleep", ["0"])[0])
    except ValueError:
        ms = 0
    if ms > 0:
        await asyncio.sleep(ms / 1000.0)
    pid = str(os.getpid())
    local = _fmt_addr(scope.get("server"))
    body = ("hello from generation %s worker %s pid %s kind %s local %s\n"
            % (GEN, WORKER, pid, KIND, local)).encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"x-baton-generation", GEN.encode()),
        (b"x-baton-worker", WORKER.encode()),
        (b"x-baton-pid", pid.encode()),
        (b"x-worker-kind", KIND.encode()),
        (b"x-local-addr", local.encode()),
    ]
    if _state["draining"]:
        # Decided when the response starts, so a request that began before
        # SIGTERM also gets it; uvicorn (h11) closes after sending it.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
