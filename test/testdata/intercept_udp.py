"""An unchanged UDP server: binds its own port, blocking, no signal
handler, no LISTEN_FDS: answers "gen=G pid=P <datagram>"."""
import os, socket, sys

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
gen = os.environ.get("BATON_GENERATION", "").encode()
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(b"gen=%s pid=%d %s" % (gen, os.getpid(), data), peer)
