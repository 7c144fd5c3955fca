"""A hostile neighbour: connects to ADDR and closes at once, in a loop, for
ever. ADDR is an abstract unix socket ("@name") or host:port. It prints
"flooding" once its first connection is made, then nothing. Errors
(a full backlog, a reset) only make it try again.
"""
import socket, sys

addr = sys.argv[1]
if addr.startswith("@"):
    family, target = socket.AF_UNIX, "\0" + addr[1:]
else:
    host, port = addr.rsplit(":", 1)
    family, target = socket.AF_INET, (host, int(port))
said = False
while True:
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.connect(target)
        if not said:
            print("flooding", flush=True)
            said = True
    except OSError:
        pass
    s.close()
