#!/usr/bin/python3
"""The e2e rig's leak monitor: watches a network namespace and its resolver files for the whole of a
scenario, and reports every sign that an isolated VPN leaked into it.

Written against the kernel and the files only, never through the product: it subscribes to
rtnetlink (links, IPv4/IPv6 addresses and routes, as `ip monitor` does), watches the resolver files
with inotify (and polls them as a backstop), and samples the routes inside each namespace that the
agent reports having isolated a tun into.

A leak is, in the namespace it runs in (the sandbox's root namespace):
  tun-address   any address on a tun (kind "tun", or a name matching --tun-name)
  tun-route     any route through a tun
  tun-up        a tun in state UP
  vpn-address   any address, on any link, inside a VPN network (--vpn-net)
  vpn-route     any route to, via or from a VPN network
  tun-stayed    the tun still there after the agent's "isolated connection ...: tun T is ..." line
                (the agent logs it once the tun is in the namespace, before it answers Isolate),
                unless the monitor has seen as many tuns move out as it has read such lines: then
                the tun of that name is a newer one, made after the move
  resolver      a VPN DNS server (--vpn-dns, or any address in a VPN network), or the VPN's
                domain (--vpn-domain), in a resolver file (--resolver)
  netns-route   a route inside an isolated namespace, sampled when the isolation is reported, a
                second later, and at the end, that leaves through anything but the tun or lo (the
                local table and reject routes stay inside and are allowed)
  no-marker     a tun left the namespace (moved out) but the agent's line never came: the check
                above could not run, so the monitor fails rather than pass unseen
A tun that exists DOWN and without an address before the move is expected and is not a leak.

It starts by dumping what exists (a leak already there counts), touches --ready, runs until --stop
exists, writes its report to --report, and exits 0 (no leak) or 1 (leaks); --rc gets the code last.
"""
import argparse
import ctypes
import ipaddress
import json
import os
import re
import select
import socket
import struct
import subprocess
import sys
import time

NETLINK_ROUTE = 0
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x1, 0x10, 0x40
RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE = 0x100, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_IFNAME, IFLA_LINKINFO, IFLA_NEW_NETNSID, IFLA_NEW_IFINDEX = 3, 18, 45, 49
IFLA_INFO_KIND = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 7, 9, 15
IFF_UP = 0x1
RT_TABLE_LOCAL = 255
# Route types that never send a packet out of a link.
REJECT_TYPES = {"unreachable", "prohibit", "blackhole", "throw"}
ROUTE_TYPE_NAMES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
                    6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw"}

IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x8, 0x80, 0x100
# The agent's line once Isolate's work is done; the connection id before it is quoted and may hold
# anything, so the match is anchored on what follows it.
ISOLATED = re.compile(r"isolated connection .*: tun (\S+) is (\S+) in namespace (\S+) \(")
REAPPLIED = re.compile(r"re-applied the VPN's new config in namespace (\S+)")


def stamp(t):
    return time.strftime("%H:%M:%S", time.gmtime(t)) + ".%03d" % (int(t * 1000) % 1000)


def attrs(data, off):
    """The rtattrs of a message from offset off, as {type: payload} (the last of a repeated type)."""
    out = {}
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[off + 4:off + length]
        off += (length + 3) & ~3
    return out


def addr_text(family, raw):
    return socket.inet_ntop(family, raw) if family in (socket.AF_INET, socket.AF_INET6) else raw.hex()


class Monitor:
    def __init__(self, args):
        self.args = args
        self.tun_name = re.compile(args.tun_name)
        self.vpn_nets = [ipaddress.ip_network(n) for n in args.vpn_net]
        self.vpn_dns = {ipaddress.ip_address(a) for a in args.vpn_dns}
        self.links = {}  # ifindex -> {"name", "kind", "up"}
        self.leaks = []  # (time, rule, expected, got)
        self.timeline = []  # (time, text): what a post-mortem needs
        self.isolations = []  # (time, tun, link in the namespace, namespace)
        self.moved_out = 0
        self.samples = 0
        self.resolver_reads = 0
        self.pending = []  # (due, namespace, tun): route samples to take
        self.seen_resolver = {}

    # ---- reporting ---------------------------------------------------------------------------

    def note(self, text):
        self.timeline.append((time.time(), text))

    def leak(self, rule, expected, got):
        key = (rule, got)
        if any((r, g) == key for _, r, _, g in self.leaks):
            return
        now = time.time()
        self.leaks.append((now, rule, expected, got))
        self.timeline.append((now, "LEAK %s: %s" % (rule, got)))

    def report(self):
        lines = []
        if self.leaks:
            lines.append("leak monitor: %d leak(s) in the root namespace or an isolated namespace" % len(self.leaks))
            for t, rule, expected, got in self.leaks:
                lines.append("  %s LEAK %s" % (stamp(t), rule))
                lines.append("    expected: %s" % expected)
                lines.append("    got:      %s" % got)
            lines.append("  what the monitor saw (UTC):")
            for t, text in self.timeline[-300:]:
                lines.append("    %s %s" % (stamp(t), text))
        else:
            lines.append(
                "leak monitor: no leak (%d isolation(s) checked%s, %d namespace route sample(s), "
                "resolver files read %d times)" % (
                    len(self.isolations),
                    "".join(" [%s in %s]" % (tun, ns) for _, tun, _, ns in self.isolations[:6]),
                    self.samples, self.resolver_reads))
        return "\n".join(lines) + "\n"

    # ---- rtnetlink ----------------------------------------------------------------------------

    def is_tun(self, index):
        link = self.links.get(index)
        return link is not None and (link["kind"] == "tun" or bool(self.tun_name.match(link["name"])))

    def link_name(self, index):
        link = self.links.get(index)
        return "%s (ifindex %d)" % (link["name"] if link else "?", index)

    def in_vpn(self, addr):
        return any(addr in net for net in self.vpn_nets)

    def on_link(self, kind, data):
        _family, _type, index, flags, _change = struct.unpack_from("=BxHiII", data, 0)
        a = attrs(data, 16)
        if kind == RTM_DELLINK:
            link = self.links.pop(index, None)
            if link and (link["kind"] == "tun" or self.tun_name.match(link["name"])):
                if IFLA_NEW_NETNSID in a:
                    self.moved_out += 1
                    new = struct.unpack("=i", a[IFLA_NEW_IFINDEX])[0] if IFLA_NEW_IFINDEX in a else "?"
                    self.note("tun %s moved out to netnsid %d (ifindex %s there)" % (
                        self.link_name_of(link, index), struct.unpack("=i", a[IFLA_NEW_NETNSID])[0], new))
                else:
                    self.note("tun %s deleted" % self.link_name_of(link, index))
            return
        link = self.links.setdefault(index, {"name": "?", "kind": "", "up": False})
        fresh = link["name"] == "?"
        if IFLA_IFNAME in a:
            link["name"] = a[IFLA_IFNAME].rstrip(b"\0").decode(errors="replace")
        if IFLA_LINKINFO in a:
            info = attrs(a[IFLA_LINKINFO], 0)
            if IFLA_INFO_KIND in info:
                link["kind"] = info[IFLA_INFO_KIND].rstrip(b"\0").decode(errors="replace")
        up = bool(flags & IFF_UP)
        if self.is_tun(index):
            if fresh:
                self.note("tun %s present, %s" % (self.link_name(index), "UP" if up else "down"))
            elif up != link["up"]:
                self.note("tun %s now %s" % (self.link_name(index), "UP" if up else "down"))
            if up:
                self.leak("tun-up", "a tun in the root namespace stays down until it moves",
                          "tun %s is UP (flags 0x%x)" % (self.link_name(index), flags))
        link["up"] = up

    @staticmethod
    def link_name_of(link, index):
        return "%s (ifindex %d)" % (link["name"], index)

    def on_addr(self, data):
        family, plen, _flags, _scope, index = struct.unpack_from("=BBBBI", data, 0)
        a = attrs(data, 8)
        raw = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
        if raw is None:
            return
        text = "%s/%d on %s" % (addr_text(family, raw), plen, self.link_name(index))
        if self.is_tun(index):
            self.leak("tun-address", "no address on a tun in the root namespace", text)
        elif self.in_vpn(ipaddress.ip_address(raw)):
            self.leak("vpn-address", "no address in a VPN network (%s) in the root namespace"
                      % ", ".join(map(str, self.vpn_nets)), text)

    def on_route(self, data):
        family, dst_len, _src_len, _tos, table, _proto, _scope, rtype, _flags = struct.unpack_from("=BBBBBBBBI", data, 0)
        a = attrs(data, 12)
        if RTA_TABLE in a:
            table = struct.unpack("=I", a[RTA_TABLE])[0]
        oifs = []
        if RTA_OIF in a:
            oifs.append(struct.unpack("=i", a[RTA_OIF])[0])
        if RTA_MULTIPATH in a:
            mp, off = a[RTA_MULTIPATH], 0
            while off + 8 <= len(mp):
                length, _nhflags, _hops, nh_index = struct.unpack_from("=HBBi", mp, off)
                oifs.append(nh_index)
                if length < 8:
                    break
                off += (length + 3) & ~3
        dst = addr_text(family, a[RTA_DST]) if RTA_DST in a else ("0.0.0.0" if family == socket.AF_INET else "::")
        text = "%s %s/%d%s%s table %d" % (
            ROUTE_TYPE_NAMES.get(rtype, str(rtype)), dst, dst_len,
            " via %s" % addr_text(family, a[RTA_GATEWAY]) if RTA_GATEWAY in a else "",
            "".join(" dev %s" % self.link_name(i) for i in oifs), table)
        if any(self.is_tun(i) for i in oifs):
            self.leak("tun-route", "no route through a tun in the root namespace", text)
            return
        addrs = [ipaddress.ip_address(a[k]) for k in (RTA_GATEWAY, RTA_PREFSRC) if k in a]
        if RTA_DST in a:
            net = ipaddress.ip_network("%s/%d" % (dst, dst_len), strict=False)
            if any(net.subnet_of(v) for v in self.vpn_nets if v.version == net.version):
                addrs.append(net.network_address)
        if any(self.in_vpn(x) for x in addrs):
            self.leak("vpn-route", "no route to, via or from a VPN network (%s) in the root namespace"
                      % ", ".join(map(str, self.vpn_nets)), text)

    def handle(self, data):
        off = 0
        while off + 16 <= len(data):
            length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
            if length < 16:
                break
            body = data[off + 16:off + length]
            if kind in (RTM_NEWLINK, RTM_DELLINK):
                self.on_link(kind, body)
            elif kind == RTM_NEWADDR:
                self.on_addr(body)
            elif kind == RTM_NEWROUTE:
                self.on_route(body)
            off += (length + 3) & ~3

    def drain(self, sock):
        while True:
            try:
                data = sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as e:
                # ENOBUFS: events were dropped. Re-read the whole state so nothing goes unseen.
                self.note("netlink: %s; re-reading the state" % e)
                self.dump_all()
                continue
            self.handle(data)

    def dump(self, kind, body):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            s.send(struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
            while True:
                data = s.recv(1 << 20)
                off, done = 0, False
                while off + 16 <= len(data):
                    length, mtype = struct.unpack_from("=IH", data, off)
                    if mtype in (NLMSG_DONE, NLMSG_ERROR) or length < 16:
                        done = True
                        break
                    off += (length + 3) & ~3
                self.handle(data[:off])
                if done:
                    return
        finally:
            s.close()

    def dump_all(self):
        self.dump(RTM_GETLINK, struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0))
        self.dump(RTM_GETADDR, struct.pack("=BBBBI", socket.AF_UNSPEC, 0, 0, 0, 0))
        for family in (socket.AF_INET, socket.AF_INET6):
            self.dump(RTM_GETROUTE, struct.pack("=BBBBBBBBI", family, 0, 0, 0, 0, 0, 0, 0, 0))

    # ---- the agent's log, and the namespaces it reports ------------------------------------------

    def on_agent_line(self, line, sock):
        m = ISOLATED.search(line)
        if m:
            tun, link, ns = m.groups()
            # Events queued before the agent wrote its line are the state it wrote it in.
            self.drain(sock)
            now = time.time()
            self.isolations.append((now, tun, link, ns))
            self.note("agent: isolated tun %s as %s in namespace %s" % (tun, link, ns))
            # A line for a tun whose move the monitor has already seen says nothing of a tun of the
            # same name in the root namespace now: that is the next connection's, made after the
            # move (a quick reconnect, with the monitor a line behind on a loaded machine).
            left = [i for i, l in self.links.items() if l["name"] == tun]
            if left and len(self.isolations) <= self.moved_out:
                self.note("agent's line for a tun already seen moving out; %s is a newer one"
                          % ", ".join(self.link_name(i) for i in left))
                left = []
            if left:
                self.leak("tun-stayed", "tun %s gone from the root namespace once the agent reported it isolated" % tun,
                          "%s still in the root namespace" % ", ".join(self.link_name(i) for i in left))
            self.sample(ns, link)
            self.pending.append((now + 1.0, ns, link))
            return
        m = REAPPLIED.search(line)
        if m:
            ns = m.group(1)
            self.note("agent: re-applied a config in namespace %s" % ns)
            links = [link for _, _, link, n in self.isolations if n == ns]
            if links:
                self.pending.append((time.time() + 0.5, ns, links[-1]))

    def sample(self, ns, tun):
        """The routes in namespace ns must all leave through tun (or stay inside)."""
        if not os.path.exists(os.path.join("/run/netns", ns)):
            return
        self.samples += 1
        stray = self.stray_routes(ns, tun)
        # `ip` names each route's device after its dump; a device that left in between (a tun
        # destroyed as its VPN goes down) shows as ifN. Its routes go with it, so they are looked
        # at again once: only those still there count.
        if any(re.match(r"^if\d+$", d) for _, devs in stray for d in devs):
            time.sleep(0.3)
            stray = self.stray_routes(ns, tun)
        for route, _ in stray:
            self.leak("netns-route", "every route in namespace %s through its tun %s (or lo)" % (ns, tun),
                      "%s %s" % (ns, json.dumps(route, sort_keys=True)))

    def stray_routes(self, ns, tun):
        """The routes of namespace ns, both families, that leave through neither tun nor lo, each
        with its devices."""
        stray = []
        for family in ("-4", "-6"):
            try:
                out = subprocess.run(["ip", "-j", family, "-n", ns, "route", "show", "table", "all"],
                                     capture_output=True, text=True, timeout=5)
            except subprocess.TimeoutExpired:
                self.note("sampling routes in %s timed out" % ns)
                continue
            if out.returncode != 0:
                # The namespace went away between the check and the sample: nothing to leak from.
                continue
            for route in json.loads(out.stdout or "[]"):
                if route.get("table") == "local" or route.get("type") in REJECT_TYPES:
                    continue
                devs = [route["dev"]] if "dev" in route else []
                devs += [nh["dev"] for nh in route.get("nexthops", []) if "dev" in nh]
                if not devs or any(d not in ("lo", tun) for d in devs):
                    stray.append((route, devs))
        return stray

    def due_samples(self, final=False):
        now = time.time()
        keep = []
        for due, ns, tun in self.pending:
            if final or due <= now:
                self.sample(ns, tun)
            else:
                keep.append((due, ns, tun))
        self.pending = keep

    # ---- resolver files ----------------------------------------------------------------------

    def check_resolvers(self):
        self.resolver_reads += 1
        for path in self.args.resolver:
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            for line in text.splitlines():
                words = line.split()
                if len(words) < 2 or words[0].startswith(("#", ";")):
                    continue
                bad = False
                if words[0] == "nameserver":
                    try:
                        server = ipaddress.ip_address(words[1].split("%")[0])
                        bad = server in self.vpn_dns or self.in_vpn(server)
                    except ValueError:
                        pass
                elif words[0] in ("search", "domain") and self.args.vpn_domain:
                    bad = any(w.rstrip(".") == self.args.vpn_domain or w.rstrip(".").endswith("." + self.args.vpn_domain)
                              for w in words[1:])
                if bad:
                    self.leak("resolver", "no VPN DNS server (%s) nor domain %s in %s" % (
                        ", ".join(map(str, sorted(self.vpn_dns, key=str))), self.args.vpn_domain or "-", path),
                        "%s: %s" % (path, line))

    # ---- the loop ------------------------------------------------------------------------------

    def run(self):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: root may exceed rmem_max
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE))
        # Subscribed first, then the dump: an event between the two is seen twice, never missed.
        self.dump_all()
        self.note("monitor started: %d links, tuns: %s" % (
            len(self.links), ", ".join(self.link_name(i) for i in self.links if self.is_tun(i)) or "none"))

        libc = ctypes.CDLL(None, use_errno=True)
        ino = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        watched = set()
        for path in self.args.resolver:
            d = os.path.dirname(path)
            if d not in watched and os.path.isdir(d):
                libc.inotify_add_watch(ino, d.encode(), IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE)
                watched.add(d)
        names = {os.path.basename(p).encode() for p in self.args.resolver}
        self.check_resolvers()

        log = open(self.args.agent_log, "rb") if self.args.agent_log else None
        if log:
            log.seek(0, os.SEEK_END)
        partial = b""
        open(self.args.ready, "w").close()

        last_poll = 0.0
        while True:
            stop = os.path.exists(self.args.stop)
            r, _, _ = select.select([sock, ino], [], [], 0 if stop else 0.1)
            self.drain(sock)
            if ino in r:
                try:
                    buf = os.read(ino, 65536)
                except BlockingIOError:
                    buf = b""
                off, hit = 0, False
                while off + 16 <= len(buf):
                    _wd, _mask, _cookie, nlen = struct.unpack_from("=iIII", buf, off)
                    hit |= buf[off + 16:off + 16 + nlen].rstrip(b"\0") in names
                    off += 16 + nlen
                if hit:
                    self.check_resolvers()
            if log:
                partial += log.read()
                *lines, partial = partial.split(b"\n")
                for line in lines:
                    self.on_agent_line(line.decode(errors="replace"), sock)
            now = time.time()
            if now - last_poll >= 0.5:
                self.check_resolvers()
                last_poll = now
            self.due_samples()
            if stop:
                break
        self.drain(sock)
        self.check_resolvers()
        self.due_samples(final=True)
        for _, _, link, ns in self.isolations:
            self.sample(ns, link)
        if self.moved_out and not self.isolations and log:
            self.leak("no-marker", "the agent's \"isolated connection ...\" line for each tun that left",
                      "%d tun(s) moved out of the root namespace, and no such line in %s"
                      % (self.moved_out, self.args.agent_log))
        return 1 if self.leaks else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tun-name", default=r"^(tun|rigtun)[0-9]+$")
    p.add_argument("--vpn-net", action="append", default=[])
    p.add_argument("--vpn-dns", action="append", default=[])
    p.add_argument("--vpn-domain", default="")
    p.add_argument("--resolver", action="append", default=[])
    p.add_argument("--agent-log", default="")
    p.add_argument("--ready", required=True)
    p.add_argument("--stop", required=True)
    p.add_argument("--report", required=True)
    p.add_argument("--rc", required=True)
    args = p.parse_args()
    try:
        m = Monitor(args)
        code = m.run()
        text = m.report()
    except Exception as e:  # noqa: BLE001 - a broken monitor must fail the scenario, saying why
        code, text = 2, "leak monitor: internal error: %r\n" % e
    with open(args.report, "w") as f:
        f.write(text)
    with open(args.rc, "w") as f:
        f.write("%d\n" % code)
    sys.exit(code)


if __name__ == "__main__":
    main()
