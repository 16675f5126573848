#!/usr/bin/python3
"""A stand-in for the plugin shim, for testing the agent over the real system bus.

It creates a tun device and holds it open, as openvpn does, asks the agent to isolate it with an
nm-openvpn-shaped config, prints the agent's answer as one JSON line, then obeys commands on stdin:
  send DST PORT TEXT   write an IPv4/UDP packet from the tunnel's far end into the held tun
  release NETNS        call Release
  exit                 quit (closing the tun, which the kernel then destroys)
End of input quits too. Errors are printed as {"error": NAME, "message": TEXT}.

usage: agent-client.py --tun NAME [--existing] --id ID --uuid UUID [--settings k=v,...]
                       [--permissions P] --addr4 A/P [--dns4 A] [--domain D] [--addr6 A/P]
--existing uses a link that exists already (of any kind) instead of creating a tun.
The first JSON line also carries "client-pid", so a test can kill the client mid-lease, and
"call-us", the round trip of the Isolate call.
"""
import argparse
import fcntl
import json
import os
import socket
import struct
import sys
import time

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

BUS_NAME = "io.github.NmVpnNetns.Agent1"
PATH = "/io/github/NmVpnNetns/Agent1"
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


def ip4(a):
    # NetworkManager's u32 IPv4: the network-order bytes read in native order.
    return struct.unpack("=I", socket.inet_aton(a))[0]


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def udp_packet(src, dst, port, payload):
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, len(udp))
    udp = udp[:6] + struct.pack("!H", checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + udp


def call(bus, method, args, sig):
    return bus.call_sync(BUS_NAME, PATH, BUS_NAME, method, GLib.Variant(sig, args),
                         None, Gio.DBusCallFlags.NONE, 30000, None)


def report(obj):
    print(json.dumps(obj), flush=True)


def report_error(e):
    name = Gio.DBusError.get_remote_error(e) or ""
    prefix = "GDBus.Error:%s: " % name
    report({"error": name, "message": e.message[len(prefix):] if e.message.startswith(prefix) else e.message})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tun", required=True)
    p.add_argument("--existing", action="store_true")
    p.add_argument("--id", required=True)
    p.add_argument("--uuid", required=True)
    p.add_argument("--settings", default="netns-isolate=yes")
    p.add_argument("--permissions", default="")
    p.add_argument("--addr4", required=True)
    p.add_argument("--dns4")
    p.add_argument("--domain")
    p.add_argument("--addr6")
    a = p.parse_args()

    tun = None
    if not a.existing:
        tun = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", a.tun.encode(), IFF_TUN | IFF_NO_PI))
    addr4, prefix4 = a.addr4.split("/")
    ip4cfg = {"address": GLib.Variant("u", ip4(addr4)), "prefix": GLib.Variant("u", int(prefix4))}
    if a.dns4:
        ip4cfg["dns"] = GLib.Variant("au", [ip4(a.dns4)])
    if a.domain:
        ip4cfg["domains"] = GLib.Variant("as", [a.domain])
    config = {"tundev": GLib.Variant("s", a.tun), "gateway": GLib.Variant("u", ip4("198.18.0.1")),
              "has-ip4": GLib.Variant("b", True), "mtu": GLib.Variant("u", 1500)}
    request = {
        "id": GLib.Variant("s", a.id),
        "uuid": GLib.Variant("s", a.uuid),
        "permissions": GLib.Variant("as", [x for x in a.permissions.split(",") if x]),
        "netns-settings": GLib.Variant("a{ss}", dict(kv.split("=", 1) for kv in a.settings.split(",") if kv)),
        "ifindex": GLib.Variant("u", socket.if_nametoindex(a.tun)),
        "config": GLib.Variant("a{sv}", config),
        "ip4-config": GLib.Variant("a{sv}", ip4cfg),
    }
    if a.addr6:
        addr6, prefix6 = a.addr6.split("/")
        config["has-ip6"] = GLib.Variant("b", True)
        request["config"] = GLib.Variant("a{sv}", config)
        request["ip6-config"] = GLib.Variant("a{sv}", {
            "address": GLib.Variant("ay", socket.inet_pton(socket.AF_INET6, addr6)),
            "prefix": GLib.Variant("u", int(prefix6))})

    bus = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
    try:
        start = time.monotonic()
        (result,) = call(bus, "Isolate", (request,), "(a{sv})").unpack()
        call_us = int((time.monotonic() - start) * 1e6)
        report(dict(result, **{"client-pid": os.getpid(), "call-us": call_us}))
    except GLib.Error as e:
        report_error(e)

    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "send":
            os.write(tun, udp_packet("198.19.0.1", cmd[1], int(cmd[2]), cmd[3].encode()))
            report({"sent": cmd[3]})
        elif cmd[0] == "release":
            try:
                call(bus, "Release", (cmd[1],), "(s)")
                report({"released": cmd[1]})
            except GLib.Error as e:
                report_error(e)
        elif cmd[0] == "exit":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
