#!/usr/bin/env bash
# Installs, idempotently, what the booted-system rig needs on the machine that runs it: qemu to boot
# the guests, debootstrap to build their root filesystems, e2fsprogs for `mkfs.ext4 -d` and debugfs
# (an image is made and read without a loop device or a mount), openssl for the certificates.
# The guests' own packages come from Debian inside debootstrap (see rootfs.sh).
set -euo pipefail

PACKAGES=(qemu-system-x86 debootstrap e2fsprogs openssl debian-archive-keyring)

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) || true
    [[ $status == *'install ok installed'* ]] || missing+=("$p")
done
((${#missing[@]})) || exit 0
[[ $EUID -eq 0 ]] || { echo "vm deps: installing ${missing[*]} needs root" >&2; exit 1; }
echo "vm deps: installing ${missing[*]}"
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --no-upgrade "${missing[@]}"
