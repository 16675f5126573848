#!/usr/bin/python3
"""A stand-in for a stock VPN service (nm-openvpn's, nm-openconnect's), for the shim's tests
(tests/shim_bus.rs).

The shim starts it as it starts the stock service: `fake_stock.py --bus-name NAME`, on the bus of
DBUS_SYSTEM_BUS_ADDRESS. Like a libnm plugin it exports org.freedesktop.NetworkManager.VPN.Plugin
before it owns NAME, reports STARTING after a successful Connect, and after Disconnect reports
STOPPING and STOPPED and quits.

Every call is appended to the file FAKE_STOCK_LOG as one line: the method's name, then, for the
calls that carry a connection, its vpn.data as tab-separated key=value pairs in key order. The
line "exit" ends a clean exit.
A vpn.data key "fake-reject" makes Connect fail with the error org.example.Fake.Error.Rejected and
that key's value as its message. A vpn.data key "fake-not-interactive" makes ConnectInteractive
fail with org.freedesktop.NetworkManager.VPN.Error.InteractiveNotSupported and change nothing, as
libnm answers for a plugin without connect_interactive (nm-openconnect-service).
If NM_DBUS_SERVICE_OPENCONNECT is in its environment, the first line is "env" and its value.

Tests drive it through io.github.NmVpnNetns.Test.FakeStock on the same object:
  Emit(s member, v args)   emit the plugin signal `member` with `args` (a tuple) from this process
  Crash()                  exit at once, status 3, without a word on the bus
  Spawn() -> u             start a child that sleeps, in this process group, as openvpn is started,
                           and return its PID

On SIGTERM it ends its children and exits, as nm-openvpn-service does with openvpn. Disconnect and
Crash leave them running, as a stock service that lost track of openvpn would.
"""
import os
import signal
import subprocess
import sys

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

PATH = "/org/freedesktop/NetworkManager/VPN/Plugin"
PLUGIN = "org.freedesktop.NetworkManager.VPN.Plugin"
CONTROL = "io.github.NmVpnNetns.Test.FakeStock"
STARTING, STOPPING, STOPPED = 3, 5, 6
INTERACTIVE_NOT_SUPPORTED = "org.freedesktop.NetworkManager.VPN.Error.InteractiveNotSupported"

XML = f"""
<node>
  <interface name="{PLUGIN}">
    <method name="Connect"><arg type="a{{sa{{sv}}}}" direction="in"/></method>
    <method name="ConnectInteractive">
      <arg type="a{{sa{{sv}}}}" direction="in"/><arg type="a{{sv}}" direction="in"/>
    </method>
    <method name="NeedSecrets">
      <arg type="a{{sa{{sv}}}}" direction="in"/><arg type="s" direction="out"/>
    </method>
    <method name="NewSecrets"><arg type="a{{sa{{sv}}}}" direction="in"/></method>
    <method name="Disconnect"/>
    <method name="SetConfig"><arg type="a{{sv}}" direction="in"/></method>
    <method name="SetIp4Config"><arg type="a{{sv}}" direction="in"/></method>
    <method name="SetIp6Config"><arg type="a{{sv}}" direction="in"/></method>
    <method name="SetFailure"><arg type="s" direction="in"/></method>
  </interface>
  <interface name="{CONTROL}">
    <method name="Emit"><arg type="s" direction="in"/><arg type="v" direction="in"/></method>
    <method name="Crash"/>
    <method name="Spawn"><arg type="u" direction="out"/></method>
  </interface>
</node>
"""


def log(*fields):
    with open(os.environ["FAKE_STOCK_LOG"], "a") as f:
        f.write("\t".join(fields) + "\n")


def vpn_data(params):
    return params.get_child_value(0).unpack().get("vpn", {}).get("data", {})


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "--bus-name":
        sys.exit(f"usage: {sys.argv[0]} --bus-name NAME")
    name = sys.argv[2]
    inherited = os.environ.get("NM_DBUS_SERVICE_OPENCONNECT")
    if inherited is not None:
        log("env", inherited)
    loop = GLib.MainLoop()
    conn = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
    children = []

    def on_sigterm():
        for child in children:
            child.terminate()
            child.wait()
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, on_sigterm)

    def emit(member, args):
        conn.emit_signal(None, PATH, PLUGIN, member, args)

    def on_call(_conn, _sender, _path, iface, method, params, invocation):
        if iface == CONTROL:
            if method == "Crash":
                os._exit(3)
            if method == "Spawn":
                children.append(subprocess.Popen(["sleep", "600"]))
                invocation.return_value(GLib.Variant("(u)", (children[-1].pid,)))
                return
            emit(params.get_child_value(0).get_string(), params.get_child_value(1).get_variant())
            invocation.return_value(None)
            return
        data = {}
        if method in ("Connect", "ConnectInteractive", "NeedSecrets", "NewSecrets"):
            data = vpn_data(params)
        log(method, *(f"{k}={v}" for k, v in sorted(data.items())))
        if method == "ConnectInteractive" and "fake-not-interactive" in data:
            invocation.return_dbus_error(
                INTERACTIVE_NOT_SUPPORTED, "Plugin does not implement ConnectInteractive()"
            )
            return
        if method in ("Connect", "ConnectInteractive"):
            reject = data.get("fake-reject")
            if reject is not None:
                invocation.return_dbus_error("org.example.Fake.Error.Rejected", reject)
                return
            invocation.return_value(None)
            emit("StateChanged", GLib.Variant("(u)", (STARTING,)))
        elif method == "NeedSecrets":
            invocation.return_value(GLib.Variant("(s)", ("vpn",)))
        elif method == "Disconnect":
            invocation.return_value(None)
            emit("StateChanged", GLib.Variant("(u)", (STOPPING,)))
            emit("StateChanged", GLib.Variant("(u)", (STOPPED,)))
            conn.flush_sync(None)
            loop.quit()
        else:
            invocation.return_value(None)

    for info in Gio.DBusNodeInfo.new_for_xml(XML).interfaces:
        conn.register_object(PATH, info, on_call, None, None)
    conn.call_sync(
        "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName",
        GLib.Variant("(su)", (name, 0)), None, Gio.DBusCallFlags.NONE, -1, None,
    )
    loop.run()
    log("exit")


if __name__ == "__main__":
    main()
