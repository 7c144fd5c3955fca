"""Binds what baton does not hold, and what it does, and reports:
"port0 PORT SAME", "other PORT SAME", "unix EXISTS SAME", "held PORT SAME",
where SAME says whether the socket is baton's (fd 3, LISTEN_FDS)."""
import os, socket, sys

held_port, other_port, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
baton = os.fstat(3).st_ino

def same(s):
    return os.fstat(s.fileno()).st_ino == baton

s0 = socket.socket(); s0.bind(("0.0.0.0", 0))
print("port0", s0.getsockname()[1], same(s0), flush=True)
s1 = socket.socket(); s1.bind(("127.0.0.1", other_port))
print("other", s1.getsockname()[1], same(s1), flush=True)
su = socket.socket(socket.AF_UNIX); su.bind(path)
print("unix", os.path.exists(path), same(su), flush=True)
# The port of a held TCP listener, but UDP: not baton's either.
sd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); sd.bind(("0.0.0.0", held_port))
print("udp", sd.getsockname()[1], same(sd), flush=True)
sh = socket.socket(); sh.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sh.bind(("0.0.0.0", held_port))
print("held", sh.getsockname()[1], same(sh), flush=True)
sh.listen(5)
while True:
    c, _ = sh.accept()
    c.recv(4096)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
    c.close()
