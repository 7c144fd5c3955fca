"""Binds the held port, waits WAIT seconds, prints "listening", then
listens (or, with WAIT=never, never does) and answers every request."""
import os, socket, sys, time

s = socket.socket()
s.bind(("0.0.0.0", int(sys.argv[1])))
wait = os.environ.get("WAIT", "0")
if os.environ.get("NEVER_GEN") == os.environ.get("BATON_GENERATION"):
    print("never listening gen=%s" % os.environ.get("BATON_GENERATION"), flush=True)
    while True:
        time.sleep(3600)
time.sleep(float(wait))
print("listening gen=%s" % os.environ.get("BATON_GENERATION"), flush=True)
s.listen(64)
while True:
    c, _ = s.accept()
    c.recv(4096)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
    c.close()
