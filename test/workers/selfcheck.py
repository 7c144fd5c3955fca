#!/usr/bin/env python3
"""Stand-alone check of the test workers, with no baton involved.

It plays baton's part of the worker protocol by hand: one listening TCP
socket on 127.0.0.1:0 (non-blocking, shared by every generation), a
NOTIFY_SOCKET datagram socket with SO_PASSCRED, and each worker started as

    /bin/sh -c 'export LISTEN_PID=$$; exec "$@"' sh ARGV...

(the exec keeps the pid, so LISTEN_PID is the worker's own pid) with the
socket as fd 3, LISTEN_FDS=1, LISTEN_FDNAMES=http, BATON_GENERATION=G,
BATON_WORKER=0, in its own process group. A READY=1 counts for a generation
when its sender is the worker or a process in the worker's process group, as
baton attributes it.

For each worker it checks:
  ready     READY=1 arrives; a request then answers 200 with the generation
            header, the body and X-Local-Addr equal to the shared socket
  swap      SWAPS reloads under load (keep-alive and fresh-connection
            clients): start G+1, wait READY=1, SIGTERM G's group, G exits 0,
            no request fails
  drain     on SIGTERM a request in flight completes; a request on an idle
            keep-alive connection during the grace period gets 200 with
            "Connection: close"; a connection made during the drain is not
            accepted by the draining worker but by the next generation; exit 0
  abstract  the same READY=1 through an abstract NOTIFY_SOCKET ("@name")
  pid       with a wrong LISTEN_PID the worker exits 3 (where it checks)

usage:
  selfcheck.py [--only gosd,gunicorn,uvicorn,node,node-helper] [--swaps N]
  selfcheck.py --name NAME [--wrong-pid-exit N] -- ARGV...    any other worker

Uses only the standard library; run it with any python3 >= 3.8.
Ends with the line "N passed, M failed"; exit status 1 if anything failed.
"""

import argparse
import http.client
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

KA_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError,
             BrokenPipeError, ConnectionAbortedError)


def builtin_workers(gosd_bin):
    g = os.path.join(HERE, "gunicorn")
    u = os.path.join(HERE, "uvicorn")
    n = os.path.join(HERE, "node")
    return {
        "gosd": dict(argv=[gosd_bin], wrong_pid_exit=3),
        "gunicorn": dict(argv=["/usr/bin/gunicorn", "--config", os.path.join(g, "gunicorn.conf.py"),
                               "--chdir", g, "app:app"], wrong_pid_exit=3),
        "uvicorn": dict(argv=["/usr/bin/python3", "-m", "uvicorn", "--fd", "3", "--http", "h11",
                              "--lifespan", "on", "--no-access-log", "--app-dir", u, "app:app"],
                        wrong_pid_exit=None),
        "node": dict(argv=["/usr/bin/python3", os.path.join(n, "notify_exec.py"),
                           "/usr/bin/node", os.path.join(n, "server.js")], wrong_pid_exit=3),
        "node-helper": dict(argv=["/usr/bin/node", os.path.join(n, "server.js")], wrong_pid_exit=3),
    }


def pgrp_of(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2:].split()[2])
    except (OSError, ValueError, IndexError):
        return None


class Notify:
    """NOTIFY_SOCKET receiver; attributes READY=1 to generations."""

    def __init__(self, tmpdir, abstract):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if abstract:
            name = "baton-selfcheck-%d-%d" % (os.getpid(), int(time.time() * 1e6))
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            path = os.path.join(tmpdir, "notify-%d" % int(time.time() * 1e6))
            self.sock.bind(path)
            self.env = path
        self.sock.settimeout(0.1)
        self.gens = {}  # pgid -> Gen
        self.lock = threading.Lock()
        self.stray = []
        self.stop = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        space = socket.CMSG_SPACE(struct.calcsize("iII"))
        while not self.stop:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, space)
            except socket.timeout:
                continue
            except OSError:
                return
            pid = None
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", cdata[:12])[0]
            with self.lock:
                gen = self.gens.get(pid)
                how = "worker itself"
                if gen is None and pid is not None:
                    pg = pgrp_of(pid)
                    gen = self.gens.get(pg)
                    how = "process %d in its group" % pid if gen else "pid %d (group %s)" % (pid, pg)
            text = data.decode(errors="replace")
            if gen is None:
                self.stray.append((pid, text, how))
                continue
            gen.messages.append(text)
            if "READY=1" in text.split("\n") and not gen.ready.is_set():
                gen.ready_how = how
                gen.ready_at = time.monotonic()
                gen.ready.set()

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


class Gen:
    def __init__(self, ctx, n, notify, wrong_pid=False):
        self.n = n
        self.ready = threading.Event()
        self.ready_how = None
        self.ready_at = None
        self.messages = []
        self.code = None
        self.log = os.path.join(ctx.tmpdir, "%s-gen%d.log" % (ctx.name, n))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LISTEN_", "NOTIFY_", "BATON_"))}
        env.update(LISTEN_FDS="1", LISTEN_FDNAMES="http", NOTIFY_SOCKET=notify.env,
                   BATON_GENERATION=str(n), BATON_WORKER="0")
        if wrong_pid:
            env["LISTEN_PID"] = "1"
            script = 'exec "$@"'
        else:
            script = 'export LISTEN_PID=$$; exec "$@"'
        logfd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, logfd, 1),
            (os.POSIX_SPAWN_DUP2, logfd, 2),
            (os.POSIX_SPAWN_DUP2, ctx.lfd, 3),
        ]
        self.started = time.monotonic()
        with notify.lock:
            self.pid = os.posix_spawn("/bin/sh", ["sh", "-c", script, "sh"] + ctx.argv, env,
                                      file_actions=actions, setpgroup=0)
            notify.gens[self.pid] = self
        os.close(logfd)

    def poll(self):
        if self.code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.code = os.waitstatus_to_exitcode(status)
        return self.code

    def wait_exit(self, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.poll() is not None:
                return self.code
            time.sleep(0.01)
        return None

    def wait_ready(self, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.ready.wait(0.05):
                return True
            if self.poll() is not None:
                return False
        return False

    def signal(self, sig):
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def tail(self, n=15):
        try:
            with open(self.log, errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return ""
        return "\n".join("        | " + l for l in lines[-n:])


class Ctx:
    def __init__(self, name, argv, tmpdir):
        self.name = name
        self.argv = argv
        self.tmpdir = tmpdir
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", 0))
        ls.listen(4096)
        if ls.fileno() == 3:  # posix_spawn's dup2(3, 3) would keep close-on-exec
            fd = os.dup(3)
            ls.close()
            ls = socket.socket(fileno=fd)
        self.ls = ls
        self.lfd = ls.fileno()
        self.port = ls.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.gens = []

    def close(self):
        for g in self.gens:
            if g.poll() is None:
                g.signal(signal.SIGKILL)
                g.wait_exit(5)
            else:
                g.signal(signal.SIGKILL)  # stragglers in its group
        self.ls.close()


def get(conn, path="/"):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read().decode(errors="replace")
    return r, body


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.lines = []

    def check(self, name, ok, detail):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        line = "  %s %-28s %s" % ("PASS" if ok else "FAIL", name, detail)
        print(line, flush=True)
        self.lines.append(line)
        return ok


class Load:
    """Clients looping requests until stopped: half keep-alive, half fresh."""

    def __init__(self, port, keepalive=4, fresh=4):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.by_gen = {}
        self.ka_races = 0
        self.failures = []
        self.threads = [threading.Thread(target=self.client, args=(True,), daemon=True)
                        for _ in range(keepalive)]
        self.threads += [threading.Thread(target=self.client, args=(False,), daemon=True)
                         for _ in range(fresh)]
        for t in self.threads:
            t.start()

    def record(self, gen=None, race=False, failure=None):
        with self.lock:
            if failure:
                self.failures.append(failure)
            elif race:
                self.ka_races += 1
            else:
                self.ok += 1
                self.by_gen[gen] = self.by_gen.get(gen, 0) + 1

    def client(self, keepalive):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop.is_set():
            if not keepalive:
                conn.close()
            reused = conn.sock is not None
            try:
                r, body = get(conn)
            except KA_ERRORS as e:
                conn.close()
                if reused:
                    self.record(race=True)
                else:
                    self.record(failure="fresh connection: %r" % e)
                continue
            except Exception as e:  # timeouts, protocol errors
                conn.close()
                self.record(failure="%s connection: %r" % ("reused" if reused else "fresh", e))
                continue
            gen = r.getheader("X-Baton-Generation")
            if r.status != 200 or not gen or ("generation %s " % gen) not in body:
                self.record(failure="bad answer %d gen %r body %r" % (r.status, gen, body[:80]))
            else:
                self.record(gen=gen)
            if r.will_close:
                conn.close()
        conn.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(15)


def run_worker(name, argv, wrong_pid_exit, swaps, res, tmpdir, keep_logs):
    print("== %s: %s" % (name, " ".join(argv)), flush=True)
    ctx = Ctx(name, argv, tmpdir)
    notify = Notify(tmpdir, abstract=False)
    n = 0

    def start(gen_notify=notify, wrong_pid=False):
        nonlocal n
        n += 1
        g = Gen(ctx, n, gen_notify, wrong_pid=wrong_pid)
        ctx.gens.append(g)
        return g

    def ready_or_fail(g, what):
        ok = g.wait_ready(30)
        detail = ("gen %d READY=1 after %.0f ms from %s"
                  % (g.n, (g.ready_at - g.started) * 1000, g.ready_how) if ok
                  else "gen %d: no READY=1 (exit %s, stray %s)\n%s"
                  % (g.n, g.poll(), notify.stray, g.tail()))
        res.check("%s %s" % (name, what), ok, detail)
        return ok

    try:
        # ---- ready + basic answer
        g = start()
        if not ready_or_fail(g, "ready"):
            return
        t_ready = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", ctx.port, timeout=10)
        try:
            r, body = get(conn)
            t_first = time.monotonic()
            hdr = {k: r.getheader(k) for k in ("X-Baton-Generation", "X-Local-Addr", "X-Baton-Pid",
                                                 "X-Worker-Kind")}
            ok = (r.status == 200 and hdr["X-Baton-Generation"] == "1"
                  and hdr["X-Local-Addr"] == ctx.addr and "generation 1 " in body)
            res.check("%s answer" % name, ok,
                      "%d %s first answer %.0f ms after READY; body %r"
                      % (r.status, hdr, (t_first - t_ready) * 1000, body.strip()))
        except Exception as e:
            res.check("%s answer" % name, False, "%r\n%s" % (e, g.tail()))
            return
        finally:
            conn.close()

        # ---- swaps under load
        load = Load(ctx.port)
        time.sleep(0.3)
        cur = g
        swap_ok = True
        notes = []
        for _ in range(swaps):
            new = start()
            if not new.wait_ready(30):
                swap_ok = False
                notes.append("gen %d never ready (exit %s)\n%s" % (new.n, new.poll(), new.tail()))
                break
            t = time.monotonic()
            cur.signal(signal.SIGTERM)
            code = cur.wait_exit(15)
            notes.append("gen %d exit %s in %.0f ms" % (cur.n, code, (time.monotonic() - t) * 1000))
            if code != 0:
                swap_ok = False
                notes.append(cur.tail())
            cur = new
            time.sleep(0.3)
        time.sleep(0.2)
        load.finish()
        ok = swap_ok and not load.failures and load.ok > 0
        res.check("%s swap x%d under load" % (name, swaps), ok,
                  "%d ok, %d failed, %d keep-alive races; answers by gen %s; %s%s"
                  % (load.ok, len(load.failures), load.ka_races,
                     dict(sorted(load.by_gen.items())), "; ".join(notes),
                     ("; failures: %s" % load.failures[:5]) if load.failures else ""))
        res.check("%s no keep-alive race" % name, load.ka_races == 0,
                  "%d requests on a reused connection got no answer" % load.ka_races)
        if not swap_ok:
            return

        # ---- drain details on the current generation
        g = cur
        ka = http.client.HTTPConnection("127.0.0.1", ctx.port, timeout=10)
        r, _ = get(ka)
        keeps_alive = not r.will_close
        slow_res = {}

        def slow():
            c = http.client.HTTPConnection("127.0.0.1", ctx.port, timeout=10)
            try:
                rr, bb = get(c, "/?sleep=400")
                slow_res.update(status=rr.status, gen=rr.getheader("X-Baton-Generation"),
                                conn=rr.getheader("Connection"))
            except Exception as e:
                slow_res.update(error=repr(e))
            finally:
                c.close()
        queued_res = {}

        def queued():
            c = http.client.HTTPConnection("127.0.0.1", ctx.port, timeout=30)
            try:
                rr, bb = get(c)
                queued_res.update(status=rr.status, gen=rr.getheader("X-Baton-Generation"),
                                  at=time.monotonic())
            except Exception as e:
                queued_res.update(error=repr(e), at=time.monotonic())
            finally:
                c.close()
        ts = threading.Thread(target=slow, daemon=True)
        ts.start()
        time.sleep(0.1)  # the slow request is in flight
        t0 = time.monotonic()
        g.signal(signal.SIGTERM)
        time.sleep(0.15)
        if keeps_alive:
            try:
                r, body = get(ka)
                res.check("%s drain keep-alive" % name,
                          r.status == 200 and (r.getheader("Connection") or "").lower() == "close",
                          "request on an idle keep-alive connection 150 ms after SIGTERM: %d, "
                          "Connection: %s" % (r.status, r.getheader("Connection")))
            except Exception as e:
                res.check("%s drain keep-alive" % name, False,
                          "request on an idle keep-alive connection 150 ms after SIGTERM: %r" % e)
        else:
            res.check("%s drain keep-alive" % name, True,
                      "n/a: the server closes every connection after one response")
        ka.close()
        time.sleep(0.05)
        tq = threading.Thread(target=queued, daemon=True)
        tq.start()
        code = g.wait_exit(15)
        t_exit = time.monotonic()
        ts.join(10)
        res.check("%s drain in-flight" % name, slow_res.get("status") == 200,
                  "request in flight at SIGTERM: %s" % slow_res)
        res.check("%s drain exit 0" % name, code == 0,
                  "gen %d exit %s %.0f ms after SIGTERM%s"
                  % (g.n, code, (t_exit - t0) * 1000, "" if code == 0 else "\n" + g.tail()))
        time.sleep(0.1)
        not_taken = not queued_res
        nxt = start()
        if not nxt.wait_ready(30):
            res.check("%s drain queue kept" % name, False, "next gen not ready\n%s" % nxt.tail())
            return
        tq.join(15)
        res.check("%s drain queue kept" % name,
                  not_taken and queued_res.get("status") == 200 and queued_res.get("gen") == str(nxt.n),
                  "connection made 200 ms after SIGTERM: untouched by the draining gen %d: %s; "
                  "then answered %s" % (g.n, not_taken, queued_res))
        nxt.signal(signal.SIGTERM)
        code = nxt.wait_exit(15)
        res.check("%s idle exit 0" % name, code == 0, "gen %d exit %s" % (nxt.n, code))

        # ---- abstract NOTIFY_SOCKET
        anotify = Notify(tmpdir, abstract=True)
        try:
            ga = start(gen_notify=anotify)
            ok = ga.wait_ready(30)
            res.check("%s abstract notify" % name, ok,
                      "NOTIFY_SOCKET=%s: %s" % (anotify.env, "READY=1 from %s" % ga.ready_how if ok
                                                 else "no READY=1 (exit %s)\n%s" % (ga.poll(), ga.tail())))
            ga.signal(signal.SIGTERM)
            ga.wait_exit(15)
        finally:
            anotify.close()

        # ---- wrong LISTEN_PID
        if wrong_pid_exit is not None:
            gw = start(wrong_pid=True)
            code = gw.wait_exit(20)
            res.check("%s wrong LISTEN_PID" % name, code == wrong_pid_exit,
                      "LISTEN_PID=1: exit %s (want %d); %s"
                      % (code, wrong_pid_exit, gw.tail(2).strip()))
    finally:
        ctx.close()
        notify.close()
        if notify.stray:
            print("  note: unattributed notify messages: %s" % notify.stray, flush=True)
        if keep_logs:
            print("  logs: %s/%s-gen*.log" % (tmpdir, name), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="gosd,gunicorn,uvicorn,node,node-helper")
    ap.add_argument("--swaps", type=int, default=3)
    ap.add_argument("--gosd-bin", default="", help="prebuilt gosd (default: go build it)")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--name", help="check ARGV after -- instead of the built-in workers")
    ap.add_argument("--wrong-pid-exit", type=int, default=None)
    ap.add_argument("argv", nargs="*")
    args = ap.parse_args()

    tmpdir = tempfile.mkdtemp(prefix="baton-selfcheck-")
    res = Results()
    try:
        if args.name or args.argv:
            if not args.argv:
                ap.error("--name needs ARGV after --")
            todo = [(args.name or os.path.basename(args.argv[0]), args.argv, args.wrong_pid_exit)]
        else:
            names = [s for s in args.only.split(",") if s]
            gosd = args.gosd_bin
            if "gosd" in names and not gosd:
                gosd = os.path.join(tmpdir, "gosd")
                print("== building gosd: go build -o %s ./test/workers/gosd" % gosd, flush=True)
                subprocess.run(["go", "build", "-o", gosd, "./test/workers/gosd"], cwd=REPO, check=True)
            table = builtin_workers(gosd)
            todo = [(nm, table[nm]["argv"], table[nm]["wrong_pid_exit"]) for nm in names]
        for name, argv, wpe in todo:
            run_worker(name, argv, wpe, args.swaps, res, tmpdir, args.keep_logs)
    finally:
        if not args.keep_logs:
            shutil.rmtree(tmpdir, ignore_errors=True)
    print("%d passed, %d failed" % (res.passed, res.failed), flush=True)
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
