#!/bin/sh
# Records the signal mask and the ignored set this shell inherited in
# SIGSTATUS, then execs "$@" with the same pid. grep reads its own
# /proc/self/status, and it inherits both sets from this shell
# (/proc/$$ would name a host pid inside a PID namespace). Python ignores
# SIGPIPE and SIGXFSZ itself at start-up, so a Python worker cannot read
# what it inherited.
SIGSTATUS=$(grep -E '^Sig(Blk|Ign)' /proc/self/status | tr -d ' \t' | tr '\n' ' ')
export SIGSTATUS
exec "$@"
