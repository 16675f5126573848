#!/usr/bin/python3
"""Check NetworkManager's view of a VPN service's registration against a stock .name file.

NetworkManager's VPN manager reads the .name files with libnm's NMVpnPluginInfo, and runs the
program of the one registered for a connection's service (NM src/core/vpn/nm-vpn-manager.c:
nm_vpn_plugin_info_list_find_by_service); nmcli and GNOME's editor find the plugin's libnm
editor and auth dialog through the same reader. This loads the directories as they do and checks
that the registration of SERVICE runs PROGRAM, and has every other key of STOCK as STOCK has it.

usage: vpn-registration.py SERVICE PROGRAM STOCK
Exit 0 with the registered file's path; 1 with what differs.
"""
import sys

import gi

gi.require_version("NM", "1.0")
from gi.repository import GLib, NM  # noqa: E402


def main():
    service, program, stock_path = sys.argv[1:4]
    info = NM.VpnPluginInfo.list_find_by_service(NM.VpnPluginInfo.list_load(), service)
    if info is None:
        print(f"no registration for {service}")
        return 1
    stock = GLib.KeyFile()
    stock.load_from_file(stock_path, GLib.KeyFileFlags.NONE)
    wrong = []
    if info.get_program() != program:
        wrong.append(f"program={info.get_program()}, not {program}")
    for group in stock.get_groups()[0]:
        for key in stock.get_keys(group)[0]:
            if (group, key) == ("VPN Connection", "program"):
                continue
            want, got = stock.get_string(group, key), info.lookup_property(group, key)
            if got != want:
                wrong.append(f"[{group}] {key}={got}, the stock file has {want}")
    print(f"{service}: {info.get_filename()}" + "".join(f"\n  {w}" for w in wrong))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
