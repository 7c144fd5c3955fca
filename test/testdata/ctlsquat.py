"""A hostile neighbour: takes, in advance, the control socket name that a
baton started later will want, @baton/ctl/<PID namespace inode>/1, for
COUNT namespace inodes from FIRST (inodes are handed out lowest free
first, from 0xF0000000). Its sockets listen and never accept. It prints
"squatting N" once N names are bound, then waits.
"""
import resource, signal, socket, sys

first, count = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 64), hard))
held = []
for ns in range(first, first + count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind("\0baton/ctl/%d/1" % ns)
        s.listen(1)
        held.append(s)
    except OSError:
        s.close()  # in use: a baton of that namespace runs already
print("squatting %d" % len(held), flush=True)
signal.pause()
