#!/usr/bin/env bash
# PID 1 of the rig's NetworkManager sandbox (see rig.sh). It builds the sandbox's mounts, starts the
# system bus, announces itself and then waits; the rig ends the sandbox by killing this process.
# Arguments: the rig's work dir and the source tree, as the caller sees them.
set -euo pipefail
w=$1 src=$2

# Cut off from the caller first, so nothing below propagates out.
mount --make-rprivate /
mount -t tmpfs -o mode=755 sandbox-run /run
mkdir -p /run/rig/w /run/rig/src /run/rig/ovl /run/netns /run/dbus
mount --bind "$w" /run/rig/w
mount --bind "$src" /run/rig/src

# Copy-on-write /etc, /usr and /var: make install, dpkg-divert and NM's files stay in the sandbox.
mount -t tmpfs sandbox-ovl /run/rig/ovl
for d in etc usr var; do
    mkdir -p "/run/rig/ovl/$d/upper" "/run/rig/ovl/$d/work"
    mount -t overlay "sandbox-$d" -o "lowerdir=/$d,upperdir=/run/rig/ovl/$d/upper,workdir=/run/rig/ovl/$d/work" "/$d"
done
mount -t tmpfs sandbox-tmp /tmp
# Only the rig's own configuration and profiles, never whatever the machine has.
mount -t tmpfs -o mode=755 sandbox-nm-etc /etc/NetworkManager
mkdir -p /etc/NetworkManager/system-connections /etc/NetworkManager/conf.d /etc/NetworkManager/VPN
mount -t tmpfs -o mode=755 sandbox-nm-var /var/lib/NetworkManager
# Nothing of the machine's own nm-vpn-netns state: /etc/netns and the agent's durable records.
rm -rf /etc/netns /var/lib/nm-vpn-netns
: >/etc/resolv.conf
# NM waits for udev forever on a writable /sys; read-only makes it treat links as initialized.
mount -o remount,bind,ro /sys
hostname rig-nm

# Now share: NM's slave mount namespace must receive mounts made here later (/run/netns/NAME).
mount --make-rshared /

dbus-daemon --system --nofork --nopidfile --nosyslog &
for _ in $(seq 100); do [[ -S /run/dbus/system_bus_socket ]] && break; sleep 0.1; done
[[ -S /run/dbus/system_bus_socket ]] || { echo "sandbox: the system bus did not start" >&2; exit 1; }

touch /run/rig/w/sandbox.ready
# Reap children while waiting; PID 1 must not exit.
while true; do wait || sleep 1; done
