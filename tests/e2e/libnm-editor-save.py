#!/usr/bin/python3
"""Save a VPN profile the way nm-connection-editor and GNOME Settings do, through libnm.

The editor works on a copy of the profile. nm-openvpn's editor plugin builds a new NMSettingVpn
from its fields (update_connection: nm_setting_vpn_new, the service type, then one data item per
field) and adds it to the copy, which replaces the old `vpn` setting; keys it does not know, such
as the netns-* keys, are gone. The editor then copies the result into the remote connection
(nm_connection_replace_settings_from_connection) and commits it (commit_changes, to disk). Other
settings of the copy, `user` among them, stay as they were.

usage: libnm-editor-save.py CONNECTION-ID
"""
import sys

import gi

gi.require_version("NM", "1.0")
from gi.repository import GLib, NM  # noqa: E402


def main():
    name = sys.argv[1]
    client = NM.Client.new(None)
    remote = client.get_connection_by_id(name)
    if remote is None:
        print("libnm-editor-save: no connection %r" % name, file=sys.stderr)
        return 1
    edited = NM.SimpleConnection.new_clone(remote)
    old = edited.get_setting_vpn()
    vpn = NM.SettingVpn.new()
    vpn.set_property(NM.SETTING_VPN_SERVICE_TYPE, old.get_service_type())
    # The openvpn editor's fields: every key it knows, which excludes ours.
    for key in old.get_data_keys():
        if not key.startswith("netns-"):
            vpn.add_data_item(key, old.get_data_item(key))
    edited.add_setting(vpn)
    remote.replace_settings_from_connection(edited)
    try:
        remote.commit_changes(True, None)
    except GLib.Error as e:
        print("libnm-editor-save: %s: %s" % (name, e.message), file=sys.stderr)
        return 1
    print("libnm-editor-save: saved %s with vpn.data keys %s" % (name, sorted(vpn.get_data_keys())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
