#!/bin/sh
# Proves the libgpiod shim (Sources/CGPIOD) compiles against both APIs it claims (issue 11):
#  - libgpiod 1.6 on this host (Debian 12), with the host's gcc;
#  - libgpiod 2.x in a minimal Debian 13 (trixie) chroot made by debootstrap, with trixie's gcc.
# Every .c file in Sources/CGPIOD is compiled with the same flags both times: -Wall -Wextra -Werror (-c, objects
# thrown away). The chroot is
# made once and kept in $TRIXIE_ROOT (default .build/trixie-root); a chroot without the marker file a finished
# debootstrap writes is made anew. The mirror is the first Debian one in this host's apt sources (DEBIAN_MIRROR
# overrides it). Needs root (debootstrap, chroot): `make gpiod-compat` installs debootstrap first.
set -eu

repo=$(cd "$(dirname "$0")/../.." && pwd)
shim=$repo/Sources/CGPIOD
target=${TRIXIE_ROOT:-$repo/.build/trixie-root}

# The first "URIs:" (deb822) or "deb URL" (one-line format) entry that serves Debian's main archive.
host_mirror() {
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1 == "URIs:" { for (i = 2; i <= NF; i++) print $i }
             $1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' "$f"
    done | grep -E '/debian/?$' | head -n 1
}

sources=$(find "$shim" -maxdepth 1 -name '*.c' | sort)
[ -n "$sources" ] || { echo "compile-both: no .c files in $shim" >&2; exit 1; }

# 1. Host: libgpiod 1.6.
host_version=$(dpkg-query -W -f "\${Version}" libgpiod-dev)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for src in $sources; do
    gcc -std=gnu11 -Wall -Wextra -Werror -c -I "$shim/include" -o "$out/$(basename "$src").o" "$src"
done
echo "compile-both: Sources/CGPIOD compiles against libgpiod-dev $host_version (host)"

# 2. Debian 13 chroot: libgpiod 2.x.
if [ "$(id -u)" != 0 ]; then
    echo "compile-both: the libgpiod 2.x half needs root (debootstrap, chroot): run as root, as CI does" >&2
    exit 1
fi
if [ ! -f "$target/.meterext-complete" ]; then
    mirror=${DEBIAN_MIRROR:-$(host_mirror)}
    [ -n "$mirror" ] || { echo "compile-both: no Debian mirror in /etc/apt sources; set DEBIAN_MIRROR" >&2; exit 1; }
    # An interrupted debootstrap can leave /proc or /sys mounted inside: unmount, and never delete across them.
    awk -v t="$target/" 'index($2, t) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf --one-file-system "$target"
    start=$(date +%s)
    debootstrap --variant=minbase --include=gcc,libc6-dev,libgpiod-dev trixie "$target" "$mirror" \
        > "$target.log" 2>&1 || { tail -n 20 "$target.log" >&2; exit 1; }
    touch "$target/.meterext-complete"
    echo "compile-both: made the trixie chroot in $(( $(date +%s) - start )) s ($target)"
fi
chroot_version=$(chroot "$target" dpkg-query -W -f "\${Version}" libgpiod-dev)
case $chroot_version in
2.*) ;;
*) echo "compile-both: the trixie chroot has libgpiod-dev $chroot_version, not 2.x" >&2; exit 1 ;;
esac
rm -rf "$target/src" && mkdir -p "$target/src/out" && cp -R "$shim/." "$target/src/CGPIOD"
for src in $sources; do
    name=$(basename "$src")
    chroot "$target" gcc -std=gnu11 -Wall -Wextra -Werror -c -I /src/CGPIOD/include -o "/src/out/$name.o" "/src/CGPIOD/$name"
done
rm -rf "$target/src"
echo "compile-both: Sources/CGPIOD compiles against libgpiod-dev $chroot_version (Debian 13 chroot)"
