"""A compromised worker: tries to replace baton's NOTIFY_SOCKET with a socket
of its own (so later workers' READY=1 would never reach baton), reports
"squat ok" or "squat refused ERRNO", then sends READY=1 the proper way.
"""
import os, socket

path = os.environ["NOTIFY_SOCKET"]
mine = os.path.join(os.path.dirname(path), "mine")
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(mine)
    os.rename(mine, path)
    print("squat ok", flush=True)
except OSError as e:
    print("squat refused %s" % e.errno, flush=True)
try:
    os.unlink(path)
    print("unlink ok", flush=True)
except OSError as e:
    print("unlink refused %s" % e.errno, flush=True)
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", path)
while True:
    os.pause() if hasattr(os, "pause") else __import__("signal").pause()
