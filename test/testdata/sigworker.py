"""Reports every signal it receives, one line each (dumb-init's print_signals).

usage: sigworker.py [--children N] [--stay]
Prints "ready pid=P pgid=G" once its handlers are installed, then
"sig NAME pid=P" per signal. With --children, N children in the same
process group do the same with the prefix "child-". TERM, INT and QUIT are
reported and then end the process with status 0; with --stay only TERM
does.
"""
import os, signal, sys

import sigwait

SKIP = {signal.SIGKILL, signal.SIGSTOP}
STOP = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}


def run(prefix):
    sigwait.setup()
    def handler(num, frame):
        # os.write, not print: a handler may run inside another's print,
        # and buffered writers are not reentrant.
        os.write(1, b"%ssig %s pid=%d\n" % (prefix.encode(), signal.Signals(num).name.encode(), os.getpid()))
        if num in STOP:
            os._exit(0)
    for num in range(1, 32):
        if num in SKIP:
            continue
        try:
            signal.signal(num, handler)
        except (OSError, ValueError):
            pass
    print("%sready pid=%d pgid=%d" % (prefix, os.getpid(), os.getpgrp()), flush=True)
    sigwait.forever()


children = 0
args = sys.argv[1:]
while args:
    a = args.pop(0)
    if a == "--children":
        children = int(args.pop(0))
    elif a == "--stay":
        STOP = {signal.SIGTERM}
for i in range(children):
    if os.fork() == 0:
        run("child-")
run("")
