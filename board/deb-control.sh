#!/bin/sh
# Usage: deb-control.sh BINARY VERSION ARCH MAINTAINER STAGEDIR  -> DEBIAN/control on stdout.
# Depends are the Debian packages that own the shared libraries BINARY links (as dpkg-shlibdeps would find them,
# without needing a debian/ source tree). Libraries no package owns (a debug build's Swift runtime from the
# toolchain) are reported on stderr: such a package only runs where that toolchain is installed.
set -eu
bin=$1 version=$2 arch=$3 maintainer=$4 stage=$5
deps=$(ldd "$bin" 2>/dev/null | awk '/=> \// { print $3 }' | while read -r lib; do
    real=$(readlink -f "$lib")
    pkg=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$real" 2>/dev/null || true)
    if [ -n "$pkg" ]; then echo "${pkg%%:*}"; else echo "deb-control: $lib belongs to no package" >&2; fi
done | sort -u | paste -sd, - | sed 's/,/, /g')
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat <<CONTROL
Package: meterext
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: passwd${deps:+, $deps}
Recommends: python3, network-manager
Section: misc
Priority: optional
Description: KPM33B three-phase meter on RS485 as a MeterExtension REST device
 Polls a Compere KPM33B over Modbus RTU and serves the MeterExtension JSON API
 on HTTP. Ships board profiles, device-tree overlays for Raspberry Pi RS485
 wirings and a hardened systemd service with a watchdog.
CONTROL
