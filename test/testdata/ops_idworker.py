"""Reports who it runs as, over HTTP on the inherited listener (fd 3).

usage: ops_idworker.py
Takes fd 3 (LISTEN_FDS=1, LISTEN_PID must be its own pid), sends READY=1 to
$NOTIFY_SOCKET, prints "id <json>" on stdout and answers every GET with the
same JSON: real and effective uid/gid, supplementary groups, the soft and
hard limits of nofile and core (getrlimit and /proc/self/limits) and
whether NOTIFY_SOCKET was reachable. Exits 0 on TERM.

The shared listener is non-blocking and must stay so (every generation
shares its open file description): accept() is guarded by select() and may
find nothing.
"""
import json, os, resource, select, signal, socket, sys


def notify(msg):
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return "no NOTIFY_SOCKET"
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.sendto(msg.encode(), addr)
    except OSError as e:
        return str(e)
    finally:
        s.close()
    return ""


def proc_limits():
    out = {}
    with open("/proc/self/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                out["nofile"] = line.split()[3:5]
            elif line.startswith("Max core file size"):
                out["core"] = line.split()[4:6]
    return out


def identity():
    ruid, euid, suid = os.getresuid()
    rgid, egid, sgid = os.getresgid()
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    core = resource.getrlimit(resource.RLIMIT_CORE)
    return {
        "pid": os.getpid(),
        "listen_pid_ok": os.environ.get("LISTEN_PID") == str(os.getpid()),
        "uid": ruid, "euid": euid, "suid": suid,
        "gid": rgid, "egid": egid, "sgid": sgid,
        "groups": sorted(os.getgroups()),
        "nofile": list(nofile), "core": list(core),
        "proc_limits": proc_limits(),
    }


def main():
    signal.signal(signal.SIGTERM, lambda n, f: os._exit(0))
    if os.environ.get("LISTEN_FDS") != "1":
        print("want LISTEN_FDS=1", file=sys.stderr)
        sys.exit(2)
    lsock = socket.socket(fileno=3)
    info = identity()
    info["notify_err"] = notify("READY=1")
    body = json.dumps(info, sort_keys=True)
    print("id " + body, flush=True)
    resp = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            "Connection: close\r\n\r\n%s" % (len(body), body)).encode()
    while True:
        r, _, _ = select.select([lsock], [], [])
        try:
            conn, _ = lsock.accept()
        except (BlockingIOError, InterruptedError):
            continue
        conn.settimeout(5)
        try:
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            conn.sendall(resp)
        except OSError:
            pass
        finally:
            conn.close()


main()
