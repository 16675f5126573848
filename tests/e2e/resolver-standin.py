#!/usr/bin/env python3
"""Stand-ins for the host's resolver daemons: listens on unix socket paths (nscd's, resolved's
varlink socket), and records each connection as one line: the path it came to, the network
namespace and uid of the process that connected (SO_PEERCRED). Lookups on the host side (sudo's,
say) connect too; what matters is whether one came from a VPN's namespace. It answers nothing, so
a client falls back as it would with a dead daemon.

    resolver-standin.py LOG PIDFILE STOPFILE SOCKET...

It writes PIDFILE once every socket listens, and exits when STOPFILE exists, or after 10 minutes.
"""
import os
import select
import socket
import struct
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
        pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        try:
            netns = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            netns = "gone"
        with open(log, "a") as f:
            f.write(f"{listeners[s]} {netns} uid={uid}\n")
        conn.close()
for s, path in listeners.items():
    s.close()
    os.unlink(path)
