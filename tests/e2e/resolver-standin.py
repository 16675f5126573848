#!/usr/bin/env python3
"""Stand-ins for the host's resolver daemons: listens on unix socket paths (nscd's, resolved's
varlink socket), and records each connection as one line with the path it came to. It answers
nothing, so a client falls back as it would with a dead daemon.

    resolver-standin.py LOG PIDFILE STOPFILE SOCKET...

It writes PIDFILE once every socket listens, and exits when STOPFILE exists, or after 10 minutes.
"""
import os
import select
import socket
import sys
import time

log, pidfile, stopfile, *paths = sys.argv[1:]
listeners = {}
for path in paths:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    os.chmod(path, 0o666)
    s.listen(16)
    listeners[s] = path
with open(pidfile + ".tmp", "w") as f:
    f.write(f"{os.getpid()}\n")
os.rename(pidfile + ".tmp", pidfile)

deadline = time.monotonic() + 600
while time.monotonic() < deadline and not os.path.exists(stopfile):
    ready, _, _ = select.select(list(listeners), [], [], 0.2)
    for s in ready:
        conn, _ = s.accept()
        with open(log, "a") as f:
            f.write(listeners[s] + "\n")
        conn.close()
for s, path in listeners.items():
    s.close()
    os.unlink(path)
