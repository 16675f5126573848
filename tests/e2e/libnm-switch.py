#!/usr/bin/python3
"""Flip a VPN on or off the way gnome-shell's VPN switch does, through libnm.

gnome-shell calls NM.Client.activate_connection_async(connection, None, None, ...) and
deactivate_connection_async(active, ...). Exit 0 once the VPN reached the wanted state,
1 with NM's reason otherwise.

usage: libnm-switch.py up|down CONNECTION-ID [TIMEOUT-SECONDS]
"""
import sys

import gi

gi.require_version("NM", "1.0")
from gi.repository import GLib, NM  # noqa: E402


def main():
    action, name = sys.argv[1], sys.argv[2]
    timeout = int(sys.argv[3]) if len(sys.argv) > 3 else 60
    client = NM.Client.new(None)
    loop = GLib.MainLoop()
    result = {"ok": False, "why": "timed out after %d s" % timeout}

    def finish(ok, why):
        result.update(ok=ok, why=why)
        loop.quit()

    def watch(active):
        def changed(ac, state, reason):
            if state == NM.ActiveConnectionState.ACTIVATED:
                finish(True, "activated")
            elif state == NM.ActiveConnectionState.DEACTIVATED:
                finish(False, "deactivated: %s" % reason.value_nick)

        active.connect("state-changed", changed)
        if active.get_state() == NM.ActiveConnectionState.ACTIVATED:
            finish(True, "activated")

    if action == "up":
        conn = client.get_connection_by_id(name)
        if conn is None:
            print("libnm-switch: no connection %r" % name, file=sys.stderr)
            return 1

        def activated(c, res):
            try:
                watch(c.activate_connection_finish(res))
            except GLib.Error as e:
                finish(False, e.message)

        client.activate_connection_async(conn, None, None, None, activated)
    else:
        active = [a for a in client.get_active_connections() if a.get_id() == name]
        if not active:
            print("libnm-switch: %r is not active" % name, file=sys.stderr)
            return 1

        def deactivated(c, res):
            try:
                c.deactivate_connection_finish(res)
                finish(True, "deactivated")
            except GLib.Error as e:
                finish(False, e.message)

        client.deactivate_connection_async(active[0], None, deactivated)

    GLib.timeout_add_seconds(timeout, loop.quit)
    loop.run()
    print("libnm-switch: %s %s: %s" % (action, name, result["why"]), file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
