"""An unchanged slow app: Python's own ThreadingHTTPServer binds PORT
itself (no LISTEN_FDS, no READY=1), keeps connections alive (HTTP/1.1),
takes SLOW_SECONDS (default 1) per request and has no SIGTERM handler, so
the stop signal ends it at once, requests in flight and all. It prints
"request GEN PATH" as it reads each request and answers "gen GEN PATH"."""
import http.server, os, sys, threading, time

gen = os.environ.get("BATON_GENERATION", "")
slow = float(os.environ.get("SLOW_SECONDS", "1"))
out = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        with out:
            sys.stdout.write("request %s %s\n" % (gen, self.path))
            sys.stdout.flush()
        time.sleep(slow)
        body = ("gen %s %s\n" % (gen, self.path)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), Handler).serve_forever()
