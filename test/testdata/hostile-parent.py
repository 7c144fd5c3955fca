"""Execs a command the way a careless parent would: every signal blocked,
many ignored, and optionally one signal already pending.

usage: hostile-parent.py [--pending NAME] [--block-only] -- COMMAND [ARG...]

--block-only blocks every signal but ignores none, so that baton needs no
shim to reset dispositions and starts a plain-mode worker directly.

The blocked mask and the ignored dispositions survive execve, so COMMAND
(baton) starts with them; a pending signal (blocked, so never discarded)
is delivered as soon as COMMAND unblocks it.
"""
import os, signal, sys

args = sys.argv[1:]
pending = None
if args and args[0] == "--pending":
    pending = getattr(signal, args[1])
    args = args[2:]
block_only = False
if args and args[0] == "--block-only":
    block_only = True
    args = args[1:]
if not args or args[0] != "--":
    sys.exit("usage: hostile-parent.py [--pending NAME] [--block-only] -- COMMAND [ARG...]")
args = args[1:]

signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP})
IGNORE = ["SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGPIPE", "SIGALRM",
          "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGWINCH", "SIGCONT", "SIGXFSZ", "SIGXCPU",
          "SIGVTALRM", "SIGIO", "SIGPWR", "SIGCHLD"]
if block_only:
    IGNORE = []
for name in IGNORE:
    num = getattr(signal, name)
    if num != pending:
        signal.signal(num, signal.SIG_IGN)
for num in range(signal.SIGRTMIN, signal.SIGRTMAX + 1):
    if not block_only:
        signal.signal(num, signal.SIG_IGN)
if pending is not None:
    os.kill(os.getpid(), pending)  # blocked: it stays pending across execve
os.execv(args[0], args)
