#!/usr/bin/env bash
# The booted-system rig: boots each Debian suite with its own kernel under qemu, with systemd as
# PID 1, and runs guest-test.sh there against the two given packages. See README.md.
#
#   tests/vm/run.sh PACKAGE_A PACKAGE_B [SUITE...]     (as root; default suites: trixie bookworm)
#
# PACKAGE_A is installed first, PACKAGE_B is the upgrade. NM_VPN_NETNS_VM_TIMEOUT (seconds, default
# 2400) bounds each guest; a guest still running then is killed, and the run fails with the tail of
# its console. NM_VPN_NETNS_VM_STEPS (names of guest-test.sh's steps, space-separated) runs only
# those after install, to look into one step; a run with it set is not a test of the product. The
# guest has no network card: nothing of this run reaches the machine's network.
# shellcheck source-path=SCRIPTDIR
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)

[[ $# -ge 2 ]] || { echo "usage: tests/vm/run.sh PACKAGE_A PACKAGE_B [SUITE...]" >&2; exit 2; }
[[ $EUID -eq 0 ]] || { echo "vm: run as root (debootstrap, and the image's files keep their owners)" >&2; exit 2; }
pkg_a=$(realpath -e "$1") || exit 2
pkg_b=$(realpath -e "$2") || exit 2
shift 2
suites=("$@")
((${#suites[@]})) || suites=(trixie bookworm)
timeout=${NM_VPN_NETNS_VM_TIMEOUT:-2400}
steps=${NM_VPN_NETNS_VM_STEPS:-}
[[ -z $steps ]] || echo "vm: only install and the steps $steps (NM_VPN_NETNS_VM_STEPS); this run is no test of the product" >&2

# Only definitions; rig_pki makes the certificates the e2e rig uses, here for the guest's server.
# shellcheck source=../e2e/rig.sh
source "$src/tests/e2e/rig.sh"

VM_DIR=/opt/nm-vpn-netns-vm
UNIT=nm-vpn-netns-vm-test.service

# The guest's path of package $1, copied into the guest's tree $2 as $3.
add_package() {
    mkdir -p "$2$VM_DIR/pkg"
    cp -a "$1" "$2$VM_DIR/pkg/$3"
    echo "$VM_DIR/pkg/$3"
}

# Lays the test out in tree $1: the e2e rig's scripts and certificates, the packages, and a unit that
# runs the test once NetworkManager is up and powers the guest off after it, whatever happened.
add_test() {
    local root=$1 vm=$1$VM_DIR a b
    mkdir -p "$vm/src/tests" "$vm/w/pki" "$vm/bin"
    cp -r "$src/tests/e2e" "$vm/src/tests/"
    install -m 755 "$here/guest-test.sh" "$vm/guest-test.sh"
    install -m 644 "$here/guest-local-user.sh" "$vm/guest-local-user.sh"
    install -m 644 "$here/guest-faults.sh" "$vm/guest-faults.sh"
    ln -s /usr/sbin/openvpn "$vm/bin/vpn-server"
    RIG_W=$vm/w rig_pki
    a=$(add_package "$pkg_a" "$root" "a-$(basename "$pkg_a")")
    b=$(add_package "$pkg_b" "$root" "b-$(basename "$pkg_b")")
    # Under TCG the whole test takes a few minutes; the unit's bound comes before run.sh's.
    cat >"$root/etc/systemd/system/$UNIT" <<EOF
[Unit]
Description=nm-vpn-netns booted-system test
Wants=NetworkManager.service
After=NetworkManager.service

[Service]
Type=oneshot
Environment="VM_STEPS=$steps"
ExecStart=$VM_DIR/guest-test.sh $a $b
ExecStopPost=systemctl poweroff --no-block
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=$((timeout - 120))

[Install]
WantedBy=multi-user.target
EOF
    ln -s "../$UNIT" "$root/etc/systemd/system/multi-user.target.wants/$UNIT"
    # A getty on the serial console hangs it up, and whatever the test prints afterwards is lost.
    ln -s /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
}

# Boots image $2 with the kernel and initrd of tree $1; the console goes to $3 and to our output.
boot() {
    local tree=$1 img=$2 console=$3 kernel initrd qemu stream t rc=0
    # The suite's one kernel, as linux-image-amd64 installed it.
    kernel=$(printf '%s\n' "$tree"/boot/vmlinuz-* | sort -V | tail -1)
    initrd=$tree/boot/initrd.img-${kernel##*/vmlinuz-}
    # The file exists before tail opens it, which would otherwise race qemu's redirection and lose.
    : >"$console"
    qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m 2048 -smp 2 -nographic -no-reboot -nic none \
        -kernel "$kernel" -initrd "$initrd" -append "root=/dev/vda rw console=ttyS0 quiet panic=-1" \
        -drive "file=$img,format=raw,if=virtio" </dev/null >"$console" 2>&1 &
    qemu=$!
    # Without the terminal's control sequences, which only clutter a CI log.
    tail -n +1 -f --pid="$qemu" "$console" 2>/dev/null |
        sed -u -e 's/\x1b[[][0-9;?!]*[a-zA-Z]//g' -e 's/\x1b][0-9;]*\(\x07\|\x1b\\\)\{0,1\}//g' -e 's/\x1b[a-z]//g' -e 's/\r$//' -e "s/^/[$suite] /" &
    stream=$!
    for ((t = 0; t < timeout; t++)); do
        kill -0 "$qemu" 2>/dev/null || break
        sleep 1
    done
    if kill -0 "$qemu" 2>/dev/null; then
        kill "$qemu"
        sleep 2
        kill -9 "$qemu" 2>/dev/null
        wait "$qemu" 2>/dev/null
        echo "vm: $suite still ran after $timeout s and was killed"
        rc=1
    else
        wait "$qemu" || rc=$?
    fi
    # tail ends within a second of qemu; the summary must not interleave with the console.
    wait "$stream"
    return "$rc"
}

rows=()
failed=0
for suite in "${suites[@]}"; do
    echo "=== vm: $suite"
    t0=$SECONDS
    tree=$(bash "$here/rootfs.sh" "$suite") || { failed=1; rows+=("| $suite | | | | tree failed |"); continue; }
    t_tree=$((SECONDS - t0))
    work=$(mktemp -d "/tmp/nm-vpn-netns-vm.$suite.XXXXXX")
    # Hard links make the copy instant; the run only adds files, and never writes into one of the
    # tree's, so the cached tree stays as built.
    cp -al "$tree" "$work/root"
    add_test "$work/root"
    mkfs.ext4 -q -F -d "$work/root" "$work/disk.img" 3G >/dev/null
    rm -rf "$work/root"
    t_img=$((SECONDS - t0 - t_tree))
    ok=1
    boot "$tree" "$work/disk.img" "$work/console.log" || ok=
    t_boot=$((SECONDS - t0 - t_tree - t_img))
    results=$(debugfs -R "cat $VM_DIR/w/results" "$work/disk.img" 2>/dev/null)
    printf '%s\n' "$results" | sed -n "s/^\(PASS\|FAIL\|note\) /[$suite] \1 /p"
    [[ -n $results && $results == *$'\n'END* && $results != *FAIL* ]] || ok=
    v() { sed -n "s/^version $1 //p" <<<"$results"; }
    if [[ -n $ok ]]; then
        result=pass
        rm -rf "$work"
    else
        result=FAIL
        failed=1
        if [[ $results != *$'\n'END* ]]; then
            echo "vm: $suite did not finish the test; the console's last lines:"
            tail -n 40 "$work/console.log"
        fi
        echo "vm: $suite failed; its console log and image are kept in $work"
    fi
    echo "vm: $suite $result: tree $t_tree s, image $t_img s, boot and test $t_boot s"
    rows+=("| $(v distribution) | $(v kernel) | $(v systemd) | $(v NetworkManager) | $result |")
done

echo
echo "| distribution | kernel | systemd | NetworkManager | result |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit "$failed"
