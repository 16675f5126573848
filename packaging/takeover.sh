# nm-vpn-netns takes over a NetworkManager VPN service by replacing the service's `.name` file.
# Sourced, never run: by `make install`/`make uninstall`, and built into the .deb's maintainer
# scripts and the RPM's scriptlets (a package's postrm runs after its files are gone, so it cannot
# source this at run time). Both packages' purge of the agent's state is here too, at the end.
# POSIX sh, as maintainer scripts are. Every function is idempotent.
#
# Why a diversion: NetworkManager reads /usr/lib/NetworkManager/VPN before /etc and the first file
# for a service wins, so ours must sit at the stock path. dpkg-divert --rename moves the stock file
# aside (to a name that does not end in .name, which NM ignores) and makes every later upgrade of
# the stock package land there too.
#
# Why remove and create anew: NetworkManager loads a .name file when it appears in the directory and
# never reloads one that exists (its directory monitor acts on creation and deletion only), so a
# file rewritten in place would keep NM on the old content until it restarts.

# The stock VPN plugins taken over: one word each, the `nm-<word>-service.name` they ship. Each is
# taken over by itself, and only where its stock file is (or comes, through the packages' triggers).
NM_VPN_NETNS_PLUGINS="openvpn openconnect"

: "${NM_VPN_NETNS_VPN_DIR:=/usr/lib/NetworkManager/VPN}"
: "${NM_VPN_NETNS_SHIM:=/usr/lib/NetworkManager/nm-vpn-netns-service}"
# `--package nm-vpn-netns` in the package's scripts; `--local` for `make install`.
: "${NM_VPN_NETNS_DIVERT_OWNER:=--package nm-vpn-netns}"
# How the stock file is moved aside: `dpkg` (a diversion) where dpkg-divert exists, else `rename`.
# The RPM's scriptlets say `rename`: Fedora can install dpkg, but dpkg does not own its files.
: "${NM_VPN_NETNS_DIVERT_BY:=$(command -v dpkg-divert >/dev/null && echo dpkg || echo rename)}"

nm_vpn_netns_stock() { echo "$NM_VPN_NETNS_VPN_DIR/nm-$1-service.name"; }
nm_vpn_netns_diverted() { echo "$NM_VPN_NETNS_VPN_DIR/nm-$1-service.name.distrib"; }

# Ours, and not the stock file: ours is the only one whose program= is the shim.
nm_vpn_netns_is_ours() {
    grep -qx "program=$NM_VPN_NETNS_SHIM" "$1" 2>/dev/null
}

# Who diverts the stock file: nothing, LOCAL (make install) or a package's name.
nm_vpn_netns_diverter() {
    dpkg-divert --listpackage "$(nm_vpn_netns_stock "$1")"
}

nm_vpn_netns_divert() {
    if [ "$NM_VPN_NETNS_DIVERT_BY" = rename ]; then
        # Without dpkg (make install on other distributions, the RPM): a plain rename. The
        # distribution's package manager then puts the stock file back on every upgrade of the
        # stock plugin (the RPM's file trigger moves it aside again).
        if [ -e "$(nm_vpn_netns_stock "$1")" ] && ! nm_vpn_netns_is_ours "$(nm_vpn_netns_stock "$1")"; then
            mv "$(nm_vpn_netns_stock "$1")" "$(nm_vpn_netns_diverted "$1")"
        fi
        return 0
    fi
    # shellcheck disable=SC2086 # the owner is two words on purpose
    dpkg-divert $NM_VPN_NETNS_DIVERT_OWNER --quiet --rename \
        --divert "$(nm_vpn_netns_diverted "$1")" --add "$(nm_vpn_netns_stock "$1")"
}

# Drops our file first, so that the stock one can move back to its place.
nm_vpn_netns_undivert() {
    nm_vpn_netns_unregister "$1"
    if [ "$NM_VPN_NETNS_DIVERT_BY" = rename ]; then
        if [ -e "$(nm_vpn_netns_diverted "$1")" ] && [ ! -e "$(nm_vpn_netns_stock "$1")" ]; then
            mv "$(nm_vpn_netns_diverted "$1")" "$(nm_vpn_netns_stock "$1")"
        fi
        return 0
    fi
    # shellcheck disable=SC2086
    dpkg-divert $NM_VPN_NETNS_DIVERT_OWNER --quiet --rename \
        --divert "$(nm_vpn_netns_diverted "$1")" --remove "$(nm_vpn_netns_stock "$1")"
}

# make install's takeover of one plugin. The .deb diverts a stock file that is not there yet, and
# its trigger generates ours when the file lands; make install has no trigger, so a diversion of an
# absent file would send a later install of that plugin to the diverted path, with nothing at the
# stock one, and NetworkManager would not see the plugin at all. A plugin that is not installed is
# left alone instead, and named; what an earlier make install left for it (ours, its diversion) goes.
nm_vpn_netns_take_over() {
    stock=$(nm_vpn_netns_stock "$1")
    if [ ! -e "$(nm_vpn_netns_diverted "$1")" ] && { [ ! -e "$stock" ] || nm_vpn_netns_is_ours "$stock"; }; then
        nm_vpn_netns_undivert "$1"
        echo "nm-vpn-netns: $stock is missing (is network-manager-$1 installed?);" \
            "not taking over $1; run make install again after installing it" >&2
        return 0
    fi
    nm_vpn_netns_divert "$1"
    nm_vpn_netns_register "$1"
}

# Writes ours from the diverted stock file: every key as the distribution ships it, but program=.
# Without a stock file (its plugin not installed, or removed under us) ours goes too: its shim would
# find no stock service to run, and NetworkManager would offer a VPN type that cannot connect.
nm_vpn_netns_register() {
    stock=$(nm_vpn_netns_stock "$1")
    diverted=$(nm_vpn_netns_diverted "$1")
    if [ ! -e "$diverted" ]; then
        nm_vpn_netns_unregister "$1"
        echo "nm-vpn-netns: $diverted is missing (is network-manager-$1 installed?); not registering for $1" >&2
        return 0
    fi
    # Not a .name until renamed into place: NM never sees a half-written file.
    new="$stock.nm-vpn-netns-new"
    sed "s|^program=.*|program=$NM_VPN_NETNS_SHIM|" "$diverted" >"$new"
    chmod 644 "$new"
    if cmp -s "$new" "$stock"; then
        rm -f "$new"
        return 0
    fi
    if [ -e "$stock" ] && ! nm_vpn_netns_is_ours "$stock"; then
        rm -f "$new"
        echo "nm-vpn-netns: $stock is not ours and was not diverted; leaving it" >&2
        return 1
    fi
    rm -f "$stock"
    mv "$new" "$stock"
    echo "nm-vpn-netns: registered for $1 ($stock)"
}

nm_vpn_netns_unregister() {
    stock=$(nm_vpn_netns_stock "$1")
    if nm_vpn_netns_is_ours "$stock"; then
        rm -f "$stock"
    fi
    rm -f "$stock.nm-vpn-netns-new"
}

# The bus daemon watches its policy directories too, but not on every system; ask it outright.
nm_vpn_netns_reload_bus() {
    if [ -S /run/dbus/system_bus_socket ] && command -v dbus-send >/dev/null; then
        dbus-send --system --type=method_call --dest=org.freedesktop.DBus / \
            org.freedesktop.DBus.ReloadConfig >/dev/null 2>&1 || true
    fi
}

# After an upgrade replaced the agent's binary. An agent that holds no lease is stopped, and D-Bus
# activation starts the new one at the next call. One that holds a lease keeps serving the VPNs that
# are up, and exits by itself after its last release (its binary is gone). The arguments are the
# command that stops a unit: deb-systemd-invoke, or systemctl.
# The agent's records, one JSON file per namespace it holds or kept, and their copies that outlive
# a reboot.
: "${NM_VPN_NETNS_STATE:=/run/nm-vpn-netns}"
: "${NM_VPN_NETNS_DURABLE:=/var/lib/nm-vpn-netns}"

# The namespaces whose isolation is up (their record holds a lease), one per line.
nm_vpn_netns_leased() {
    grep -ls '"leased": *true' "$NM_VPN_NETNS_STATE"/* | xargs -r -n1 basename
}

# One record (the agent's JSON, one file per namespace): restore or remove the files the agent
# wrote, unless they changed since; remove the /etc/netns entry it created; delete the namespace it
# created, if it is still that one (its device and inode). A durable record (/var/lib) whose twin
# in /run is gone outlived a reboot, and with it the namespace: only its files are handled
# (second argument "files"). perl, as our own binaries are already gone by then: essential on
# Debian (perl-base), and required by the RPM for its erase.
nm_vpn_netns_purge_record() {
    perl -e '
        use strict;
        local $/;
        open(my $fh, "<", $ARGV[0]) or die "cannot read $ARGV[0]: $!\n";
        my $r = <$fh>;
        my $files_only = ($ARGV[1] // "") eq "files";
        my ($ns) = $r =~ /"netns":\s*"([A-Za-z0-9_.-]+)"/ or die "$ARGV[0]: no namespace name\n";
        my $dir = "/etc/netns/$ns";
        while ($r =~ /"file":\s*"(resolv\.conf|nsswitch\.conf)",\s*"backup_hex":\s*(null|"([0-9a-f]*)")(?:,\s*"written_hex":\s*(?:null|"([0-9a-f]*)"))?/g) {
            my ($file, $hex, $written) = ("$dir/$1", $3, $4);
            if (defined $written) {
                # Gone, it has nothing to compare; what the agent replaced is not put back where
                # someone removed the file.
                if (!-e $file && !-l $file) {
                    print "left $file: it was removed since nm-vpn-netns wrote it\n" if defined $hex;
                    next;
                }
                my $now = "";
                if (open(my $in, "<", $file)) { $now = unpack("H*", scalar <$in>) // ""; close($in); }
                if ($now ne $written) { print "left $file: it changed since nm-vpn-netns wrote it\n"; next; }
            }
            if (defined $hex) {
                open(my $out, "+<", $file) or do { warn "left $file: cannot restore it: $!\n"; next };
                truncate($out, 0); print $out pack("H*", $hex); close($out);
                print "restored $file\n";
            } elsif (unlink $file) {
                print "removed $file\n";
            }
        }
        if ($r =~ /"etc_dir_created":\s*true/) {
            rmdir $dir ? print "removed $dir\n" : -e $dir && warn "left $dir: $!\n";
        }
        my ($dev, $ino) = $r =~ /"netns_id":\s*\{\s*"dev":\s*(\d+),\s*"ino":\s*(\d+)/;
        my @st = stat("/run/netns/$ns");
        if ($files_only) {
        } elsif (defined $ino && @st && ($st[0] != $dev || $st[1] != $ino)) {
            print "left namespace $ns: it is not the one nm-vpn-netns created\n";
        } elsif ($r =~ /"created":\s*true/) {
            system("ip", "netns", "delete", $ns) == 0 ? print "deleted namespace $ns\n"
                : warn "left namespace $ns: ip netns delete failed\n";
        } elsif (-e "/run/netns/$ns") {
            print "left namespace $ns: nm-vpn-netns did not create it\n";
        }
    ' "$@"
}

# Deletes what the agent left, as nm_vpn_netns_purge_record says, and the agent's state: the
# .deb's purge, and the RPM's erase (an RPM has no purge). While an isolation is up it deletes
# nothing, says so and what to do (the argument), and fails: the agent that holds the isolation
# still runs, and releases it when the VPN goes down.
nm_vpn_netns_purge() {
    leased=$(nm_vpn_netns_leased)
    if [ -n "$leased" ]; then
        echo "nm-vpn-netns: not purging: isolated VPNs are up in namespace(s)" \
            "$(echo "$leased" | tr '\n' ' ')" >&2
        echo "nm-vpn-netns: $1" >&2
        return 1
    fi
    for record in "$NM_VPN_NETNS_STATE"/*; do
        [ -f "$record" ] || continue
        nm_vpn_netns_purge_record "$record" || echo "nm-vpn-netns: left $record" >&2
    done
    for record in "$NM_VPN_NETNS_DURABLE"/*; do
        [ -f "$record" ] || continue
        [ -e "$NM_VPN_NETNS_STATE/${record##*/}" ] && continue
        nm_vpn_netns_purge_record "$record" files || echo "nm-vpn-netns: left $record" >&2
    done
    rm -rf "$NM_VPN_NETNS_STATE" "$NM_VPN_NETNS_DURABLE"
}

nm_vpn_netns_stop_idle_agent() {
    [ -d /run/systemd/system ] || return 0
    if [ -n "$(nm_vpn_netns_leased)" ]; then
        echo "nm-vpn-netns: isolated VPNs are up; the running agent stays until the last one goes down"
        return 0
    fi
    "$@" stop nm-vpn-netns-agent.service >/dev/null || true
}

nm_vpn_netns_for_each() {
    for plugin in $NM_VPN_NETNS_PLUGINS; do
        "$@" "$plugin" || return
    done
}
