#!/bin/sh
# Usage: deb-control.sh BINARY VERSION ARCH MAINTAINER STAGEDIR  -> DEBIAN/control on stdout.
# Depends are the Debian packages that own the shared libraries BINARY needs directly (its DT_NEEDED entries, as
# dpkg-shlibdeps would list them, without needing a debian/ source tree; ldd says where each one resolves), and the
# packages of the libraries it loads with dlopen (DLOPENED: libcurl.so.4 at the first transfer, libmosquitto.so.1 when
# the MQTT uplink starts; issue 18), which no DT_NEEDED entry names; ldconfig says where those resolve.
# Libraries no package owns (a debug build's Swift runtime from the toolchain) are reported on stderr: such a
# package only runs where that toolchain is installed. libjs-chart.js: the chart library the dashboard at / serves
# from /usr/share/javascript (no CDN: the set-up access point has no internet).
set -eu
bin=$1 version=$2 arch=$3 maintainer=$4 stage=$5
needed=$(objdump -p "$bin" | awk '$1 == "NEEDED" { print $2 }')
resolved=$(ldd "$bin" 2>/dev/null || true)
deps=$({ for soname in $needed; do
    lib=$(printf '%s\n' "$resolved" | awk -v n="$soname" '
        $1 == n && $3 ~ /^\// { print $3; exit }          # libfoo.so.1 => /lib/.../libfoo.so.1 (0x...)
        substr($1, 1, 1) == "/" && substr($1, length($1) - length(n)) == "/" n { print $1; exit }  # the loader
    ')
    [ -n "$lib" ] || { echo "deb-control: $soname not found (ldd)" >&2; continue; }
    real=$(readlink -f "$lib")
    pkg=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$real" 2>/dev/null || true)
    if [ -n "$pkg" ]; then echo "${pkg%%:*}"; else echo "deb-control: $lib belongs to no package" >&2; fi
  done
  # Libraries loaded with dlopen (Sources/CCurl/ccurl.c, Sources/CMosquitto/cmosquitto.c): the same lookup, by soname through the linker cache.
  for soname in ${DLOPENED-libcurl.so.4 libmosquitto.so.1}; do
    lib=$("$(command -v ldconfig || echo /sbin/ldconfig)" -p | awk -v n="$soname" '$1 == n { print $NF; exit }')
    [ -n "$lib" ] || { echo "deb-control: $soname (dlopen) not found (ldconfig -p)" >&2; continue; }
    pkg=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null || true)
    if [ -n "$pkg" ]; then echo "${pkg%%:*}"; else echo "deb-control: $lib belongs to no package" >&2; fi
  done; } | sort -u | paste -sd, - | sed 's/,/, /g')
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat <<CONTROL
Package: meterext
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: passwd, libjs-chart.js${deps:+, $deps}
Recommends: python3, network-manager
Section: misc
Priority: optional
Description: KPM33B three-phase meter on RS485 as a MeterExtension REST device
 Polls a Compere KPM33B over Modbus RTU and serves the MeterExtension JSON API
 on HTTP. Ships board profiles, device-tree overlays for Raspberry Pi RS485
 wirings and a hardened systemd service with a watchdog.
CONTROL
