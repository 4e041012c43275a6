#!/bin/sh
# Usage: install-overlay.sh [--remove] PROFILE [BOOTDIR]
#
# Prepares a Raspberry Pi boot partition for a meterext board profile:
#  - copies the profile's compiled overlay (NAME.dtbo) into BOOTDIR/overlays/,
#  - writes the profile's config.txt lines into one marked block at the end of BOOTDIR/config.txt (under [all]),
#    replacing any block an earlier run wrote, so running it twice - or for another profile - leaves one copy,
#  - removes a serial console on the meter's UART from cmdline.txt (kernel messages would go out on the RS485 bus).
# --remove takes the block out again (the .dtbo stays; it does nothing unless config.txt loads it).
# BOOTDIR defaults to /boot/firmware (Bookworm and later) when it has a config.txt, else /boot.
# Environment: METEREXT_BOARDS_PATH (colon-separated profile directories), METEREXT_OVERLAYS_DIR (where the .dtbo
# files are), METEREXT_SYSROOT (prefix for the BOOTDIR auto-detection; for tests). A reboot applies the changes.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
remove=0
if [ "${1:-}" = "--remove" ]; then remove=1; shift; fi
if [ $# -lt 1 ] || [ $# -gt 2 ]; then sed -n '2,3s/^# //p' "$0" >&2; exit 2; fi
profile=$1

if [ $# -eq 2 ]; then
    bootdir=$2
elif [ -f "${METEREXT_SYSROOT:-}/boot/firmware/config.txt" ]; then
    bootdir="${METEREXT_SYSROOT:-}/boot/firmware"
else
    bootdir="${METEREXT_SYSROOT:-}/boot"
fi
config="$bootdir/config.txt"
[ -f "$config" ] || { echo "install-overlay: $config not found (is BOOTDIR the boot partition?)" >&2; exit 1; }

begin="# BEGIN meterext - written by install-overlay.sh, do not edit inside this block"
end="# END meterext"

# Drop an earlier block (any profile), keeping everything else byte for byte.
strip_block() {
    awk -v b="$begin" -v e="$end" '$0 == b {skip = 1; next} skip && $0 == e {skip = 0; next} !skip' "$1"
}

tmp=$(mktemp "$bootdir/.config.txt.XXXXXX")
trap 'rm -f "$tmp"' EXIT
strip_block "$config" > "$tmp"

if [ $remove -eq 1 ]; then
    cat "$tmp" > "$config"
    echo "install-overlay: removed the meterext block from $config; reboot to apply"
    exit 0
fi

boards_path=${METEREXT_BOARDS_PATH:-/etc/meterext/boards:/usr/share/meterext/boards:$here/profiles}
file=""
old_ifs=$IFS; IFS=:
for dir in $boards_path; do
    if [ -f "$dir/$profile.json" ]; then file="$dir/$profile.json"; break; fi
done
IFS=$old_ifs
[ -n "$file" ] || { echo "install-overlay: no profile '$profile' in $boards_path" >&2; exit 1; }

# JSON is read with python3 (on every Raspberry Pi OS image); output: serial, overlay, then config.txt lines.
fields=$(python3 -c '
import json, sys
p = json.load(open(sys.argv[1]))
print(p["serial"]); print(p.get("overlay") or "")
for line in p.get("config_txt") or []:
    print(line)
' "$file") || { echo "install-overlay: cannot read $file" >&2; exit 1; }
serial=$(printf '%s\n' "$fields" | sed -n 1p)
overlay=$(printf '%s\n' "$fields" | sed -n 2p)
lines=$(printf '%s\n' "$fields" | sed -n '3,$p')

if [ -n "$overlay" ]; then
    overlays_dir=${METEREXT_OVERLAYS_DIR:-/usr/share/meterext/overlays}
    [ -f "$overlays_dir/$overlay.dtbo" ] || overlays_dir="$here/../.build/overlays"
    src="$overlays_dir/$overlay.dtbo"
    [ -f "$src" ] || { echo "install-overlay: $overlay.dtbo not found (run 'make overlays' or set METEREXT_OVERLAYS_DIR)" >&2; exit 1; }
    mkdir -p "$bootdir/overlays"
    cmp -s "$src" "$bootdir/overlays/$overlay.dtbo" || cp "$src" "$bootdir/overlays/$overlay.dtbo"
fi

{
    # The last section of config.txt may be conditional ([pi4], [cm4]...): [all] makes the block apply everywhere.
    printf '%s\n# board profile: %s\n[all]\n' "$begin" "$profile"
    [ -z "$lines" ] || printf '%s\n' "$lines"
    printf '%s\n' "$end"
} >> "$tmp"
cat "$tmp" > "$config"

# A login console on the meter's UART would put boot messages and a getty on the RS485 bus.
cmdline="$bootdir/cmdline.txt"
case "$serial" in
/dev/ttyAMA*|/dev/ttyS*|/dev/serial0)
    if [ -f "$cmdline" ]; then
        tty=${serial#/dev/}
        new=$(sed -E "s/(^| )console=(serial0|$tty),[0-9]+//g; s/^ +//" "$cmdline")
        if [ "$new" != "$(cat "$cmdline")" ]; then
            [ -f "$cmdline.meterext-orig" ] || cp "$cmdline" "$cmdline.meterext-orig"
            printf '%s\n' "$new" > "$cmdline"
            echo "install-overlay: removed the serial console from $cmdline (original kept as cmdline.txt.meterext-orig)"
        fi
    fi
    ;;
esac
echo "install-overlay: $config prepared for board profile '$profile'; reboot to apply"
