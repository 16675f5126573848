#!/usr/bin/env bash
# Builds target/debian/nm-vpn-netns_<version>_amd64.deb from what `make build` produced, with
# cargo-deb (its settings are [package.metadata.deb] in Cargo.toml).
#
#   packaging/debian/build.sh CARGO_DEB [VERSION]
#
# VERSION defaults to the top entry of packaging/debian/changelog. The maintainer scripts are
# generated here: packaging/takeover.sh is spliced into each in place of #TAKEOVER#, because a
# postrm runs after the package's own files are gone and cannot source anything of ours.
set -euo pipefail

cargo_deb=${1:?usage: build.sh CARGO_DEB [VERSION]}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

changelog_version=$(sed -n '1s/^nm-vpn-netns (\([^)]*\)).*/\1/p' "$here/changelog")
cargo_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
# The changelog and Cargo.toml name one release: a version bump touches both.
if [[ ${changelog_version%-*} != "$cargo_version" ]]; then
    echo "build.sh: packaging/debian/changelog is at $changelog_version, Cargo.toml at $cargo_version" >&2
    exit 1
fi
version=${2:-$changelog_version}

for b in nm-vpn-netns nm-vpn-netns-agent nm-vpn-netns-service; do
    [[ -x target/release/$b ]] || { echo "build.sh: target/release/$b is missing; run 'make build' first" >&2; exit 1; }
done

gen=target/debian-gen
rm -rf "$gen"
mkdir -p "$gen/scripts" "$gen/files"
for script in preinst postinst postrm; do
    awk -v lib="$root/packaging/takeover.sh" '
        $0 == "#TAKEOVER#" { while ((getline line < lib) > 0) print line; next } { print }
    ' "$here/$script" >"$gen/scripts/$script"
    chmod 755 "$gen/scripts/$script"
done
# The man pages and completions come from the binary being packaged, dated by the changelog entry.
changelog_date=$(sed -n 's/^ -- .*>  \(.*\)$/\1/p' "$here/changelog" | head -1)
SOURCE_DATE_EPOCH=$(date -d "$changelog_date" +%s) target/release/nm-vpn-netns generate-docs "$gen/docs" >/dev/null
gzip -9n "$gen"/docs/man/*
for unit in io.github.NmVpnNetns.Agent1.service nm-vpn-netns-agent.service; do
    sed 's|@LIBEXECDIR@|/usr/libexec|g' "nm-plugin/$unit.in" >"$gen/files/$unit"
done
sed 's|@BINDIR@|/usr/bin|g' nm-plugin/io.github.NmVpnNetns.exec.policy.in >"$gen/files/io.github.NmVpnNetns.exec.policy"

mkdir -p target/debian
"$cargo_deb" --no-build --deb-version "$version" --output "target/debian/nm-vpn-netns_${version}_amd64.deb" >/dev/null
echo "target/debian/nm-vpn-netns_${version}_amd64.deb"
