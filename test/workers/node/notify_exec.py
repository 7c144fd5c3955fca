#!/usr/bin/python3
"""notify_exec.py COMMAND [ARG...]

Open a datagram socket connected to $NOTIFY_SOCKET ("@name" = abstract),
leave it open across exec as descriptor $NOTIFY_FD, and exec COMMAND in the
same process (same pid, so LISTEN_PID stays right and the listeners on fds
3.. are untouched).

For runtimes with no AF_UNIX datagram sockets, such as Node: the program
sends READY=1 with a plain write(2) on that descriptor
(fs.writeSync(Number(process.env.NOTIFY_FD), "READY=1") in Node). The kernel
stamps the message with the writer's credentials, i.e. the worker's own pid.

Without NOTIFY_SOCKET, or if it cannot be reached, COMMAND is exec'd
anyway, without NOTIFY_FD. Uses only the standard library.
"""

import fcntl
import os
import socket
import sys


def main():
    if len(sys.argv) < 2:
        sys.stderr.write("usage: notify_exec.py COMMAND [ARG...]\n")
        return 2
    argv = sys.argv[1:]
    addr = os.environ.get("NOTIFY_SOCKET", "")
    os.environ.pop("NOTIFY_FD", None)
    if addr:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.connect("\0" + addr[1:] if addr[0] == "@" else addr)
            # Above stdio and the listeners (fds 3 .. 3+LISTEN_FDS-1), not
            # close-on-exec.
            try:
                nfds = int(os.environ.get("LISTEN_FDS", "0"))
            except ValueError:
                nfds = 0
            fd = fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 3 + max(nfds, 0))
            s.close()
            os.environ["NOTIFY_FD"] = str(fd)
        except OSError as e:
            sys.stderr.write("notify_exec.py: NOTIFY_SOCKET=%r: %s; no NOTIFY_FD\n" % (addr, e))
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        sys.stderr.write("notify_exec.py: exec %s: %s\n" % (argv[0], e))
        return 127 if isinstance(e, FileNotFoundError) else 126


if __name__ == "__main__":
    sys.exit(main())
