"""Board support checks that need no board: overlays compile cleanly, install-overlay.sh is idempotent on both boot
layouts, the systemd unit verifies, and the .deb installs into and purges from a throw-away root.

The .deb is installed with `dpkg --root=DIR --force-script-chrootless`: maintainer scripts then run on the host with
$DPKG_ROOT set instead of chrooted into DIR (which has no shell). postinst/postrm honour $DPKG_ROOT, so this runs the
real scripts: user and groups are created in DIR/etc with `useradd --root`, ownership comes from DIR/etc/passwd,
enablement from `deb-systemd-helper` (which honours $DPKG_ROOT). `--force-depends` because DIR has no libc6 etc.
registered. The package is built from the binary under test ($METEREXT_BIN, a debug build) passed to `make deb` as
BOARD_BIN; `make lint-package` runs lintian on the release package.
"""
import json
import os
import pathlib
import re
import shutil
import stat
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("METEREXT_BIN")
needs_bin = pytest.mark.skipif(not BIN or not os.access(BIN, os.X_OK), reason="METEREXT_BIN (a built meterext) not set")
PROFILES = sorted(p.stem for p in (REPO / "board/profiles").glob("*.json"))


def run(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


@pytest.mark.parametrize("dts", sorted((REPO / "overlays").glob("*.dts")), ids=lambda p: p.name)
def test_overlay_compiles_without_warnings(dts, tmp_path):
    result = subprocess.run(["dtc", "-@", "-I", "dts", "-O", "dtb", "-o", str(tmp_path / "o.dtbo"), str(dts)],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    text = dts.read_text()
    assert "/plugin/;" in text and "fragment@0" in text
    # Every overlay except the kernel-RS485 one must pull its DE pin down (receive) from boot.
    if "rs485-kernel" not in dts.name:
        assert ("brcm,pull = <1>" in text) or ("bias-pull-down" in text)


def test_every_profile_overlay_exists():
    for name in PROFILES:
        profile = json.loads((REPO / f"board/profiles/{name}.json").read_text())
        if profile["overlay"]:
            assert (REPO / f"overlays/{profile['overlay']}.dts").exists(), name


@pytest.fixture
def compiled_overlays(tmp_path):
    out = tmp_path / "dtbo"
    out.mkdir()
    for dts in (REPO / "overlays").glob("*.dts"):
        run("dtc", "-@", "-I", "dts", "-O", "dtb", "-o", str(out / (dts.stem + ".dtbo")), str(dts))
    return out


@pytest.mark.parametrize("layout", ["boot/firmware", "boot"])
def test_install_overlay_is_idempotent(layout, tmp_path, compiled_overlays):
    sysroot = tmp_path / "root"
    boot = sysroot / layout
    boot.mkdir(parents=True)
    original = "# vendor settings\ndtparam=audio=on\n[pi4]\narm_boost=1\n"
    (boot / "config.txt").write_text(original)
    (boot / "cmdline.txt").write_text("console=serial0,115200 console=tty1 root=PARTUUID=1 rootwait\n")
    env = dict(os.environ, METEREXT_SYSROOT=str(sysroot), METEREXT_OVERLAYS_DIR=str(compiled_overlays),
               METEREXT_BOARDS_PATH=str(REPO / "board/profiles"))
    script = str(REPO / "board/install-overlay.sh")
    profile = json.loads((REPO / "board/profiles/rpi-max485.json").read_text())

    for _ in range(2):  # BOOTDIR auto-detected from the sysroot
        run(script, "rpi-max485", env=env)
    config = (boot / "config.txt").read_text()
    assert config.startswith(original)
    lines = config.splitlines()
    for wanted in profile["config_txt"] + ["[all]"]:
        assert lines.count(wanted) == 1, (wanted, config)
    assert lines.index("[all]") < lines.index("dtoverlay=meterext-rpi-de17")
    assert (boot / "overlays/meterext-rpi-de17.dtbo").read_bytes() == (compiled_overlays / "meterext-rpi-de17.dtbo").read_bytes()
    assert (boot / "cmdline.txt").read_text() == "console=tty1 root=PARTUUID=1 rootwait\n"
    assert "console=serial0" in (boot / "cmdline.txt.meterext-orig").read_text()

    # Switching profile (BOOTDIR given explicitly) replaces the block rather than adding a second one.
    run(script, "rpi-kernel-rs485", str(boot), env=env)
    config = (boot / "config.txt").read_text()
    assert config.count("# BEGIN meterext") == 1 and "gpio=17=op,dl" not in config
    assert "dtoverlay=meterext-rpi-rs485-kernel" in config

    run(script, "--remove", "rpi-kernel-rs485", str(boot), env=env)
    assert (boot / "config.txt").read_text() == original


def test_install_overlay_rejects_unknown_profile_and_missing_config(tmp_path):
    env = dict(os.environ, METEREXT_BOARDS_PATH=str(REPO / "board/profiles"))
    boot = tmp_path / "boot"
    boot.mkdir()
    r = subprocess.run([str(REPO / "board/install-overlay.sh"), "rpi-max485", str(boot)], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "config.txt not found" in r.stderr
    (boot / "config.txt").write_text("")
    r = subprocess.run([str(REPO / "board/install-overlay.sh"), "no-such-board", str(boot)], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "no profile 'no-such-board'" in r.stderr
    assert (boot / "config.txt").read_text() == ""


@needs_bin
def test_unit_verifies_and_is_hardened(tmp_path):
    unit = (REPO / "board/systemd/meterext.service").read_text()
    # /usr/bin/meterext exists only on a board: verify the same text with ExecStart pointing at the built binary.
    copy = tmp_path / "meterext.service"
    copy.write_text(unit.replace("ExecStart=/usr/bin/meterext", "ExecStart=" + os.path.abspath(BIN)))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    settings = [l for l in unit.splitlines() if l and not l.startswith("#")]
    for required in ["Type=notify", "NotifyAccess=main", "Restart=always", "ProtectSystem=strict", "NoNewPrivileges=yes",
                     "DevicePolicy=closed", "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                     "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "StateDirectory=meterext", "User=meterext",
                     "ExecStart=/usr/bin/meterext run --config /etc/meterext/meterext.json"]:
        assert required in settings, required
    families = next(l for l in settings if l.startswith("RestrictAddressFamilies=")).split("=", 1)[1].split()
    assert set(families) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    allowed = [l.split("=", 1)[1].split()[0] for l in settings if l.startswith("DeviceAllow=")]
    assert all(d.startswith("char-tty") or d == "char-gpiochip" for d in allowed) and "char-gpiochip" in allowed
    assert not any(l.startswith(("PrivateNetwork=", "PrivateDevices=yes")) for l in settings)
    # Issue 12: bounded resources and no core dumps (a core would hold the token and WiFi passwords).
    for required in ["MemoryMax=128M", "TasksMax=64", "LimitCORE=0"]:
        assert required in settings, required
    # The sandbox must not hide what the service reads: ProcSubset=pid hides /proc/net (get_ip_info reads
    # /proc/net/route), and realtime is forbidden only while no source asks for it.
    assert not any(l.startswith("ProcSubset=") for l in settings)
    sources = "\n".join(p.read_text(errors="replace") for p in (REPO / "Sources").rglob("*") if p.suffix in (".swift", ".c"))
    if "RestrictRealtime=yes" in settings:
        assert not any(word in sources for word in ("sched_setscheduler", "SCHED_FIFO", "SCHED_RR")), \
            "the code asks for realtime scheduling: RestrictRealtime=yes would refuse it"
    if "/proc/net/" in sources or "/proc/sys/" in sources:
        assert not any(l.startswith("ProcSubset=pid") for l in settings)


@needs_bin
def test_unit_security_exposure(tmp_path):
    """systemd's own score of the sandbox (0 = fully confined, 10 = none); printed as a figure, held below 3."""
    copy = tmp_path / "meterext.service"
    copy.write_text((REPO / "board/systemd/meterext.service").read_text()
                    .replace("ExecStart=/usr/bin/meterext", "ExecStart=" + os.path.abspath(BIN)))
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(copy)],
                            capture_output=True, text=True)
    line = next(l for l in result.stdout.splitlines() if "Overall exposure level" in l)
    exposure = float(line.split(":")[1].split()[0])
    print(f"systemd-analyze security: {line.strip()}")
    assert exposure < 3.0, result.stdout


def test_polkit_rule_allows_only_the_actions_the_service_uses():
    """The rule lists NetworkManager's actions one by one (no prefix match) and each one is named in its comment
    with the nmcli call that needs it; the nmcli calls are read from the backend's source."""
    rule = (REPO / "board/polkit/50-meterext-networkmanager.rules").read_text()
    assert "indexOf(\"org.freedesktop.NetworkManager.\")" not in rule and ".indexOf(action.id)" in rule
    allowed = set(re.findall(r'"(org\.freedesktop\.NetworkManager\.[a-z.-]+)"', rule))
    assert allowed == {"org.freedesktop.NetworkManager." + a for a in
                       ("wifi.scan", "network-control", "settings.modify.system", "wifi.share.protected")}, allowed
    backend = (REPO / "Sources/DeviceState/NetworkManagerBackend.swift").read_text()
    # Each privileged nmcli verb the backend uses, and the action NetworkManager checks for it.
    needs = {'"--rescan", "yes"': "wifi.scan", '"connection", "up"': "network-control",
             '"connection", "down"': "network-control", '"connection", "add"': "settings.modify.system",
             '"connection", "delete"': "settings.modify.system", '"ipv4.method", "shared"': "wifi.share.protected"}
    for call, action in needs.items():
        if call in backend:
            assert "org.freedesktop.NetworkManager." + action in allowed, (call, action)
    for verb in ('"radio"', '"networking"', '"general", "hostname"', '"--show-secrets"', '"-s"'):
        assert verb not in backend, f"the backend now calls nmcli {verb}: check the polkit rule"


def make_root(path):
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc"]:
        (path / d).mkdir(parents=True, exist_ok=True)
    (path / "var/lib/dpkg/status").write_text("")
    (path / "var/lib/dpkg/available").write_text("")
    (path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (path / "etc/group").write_text("root:x:0:\ndialout:x:20:\n")  # no "gpio": as on plain Debian
    (path / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (path / "etc/gshadow").write_text("root:*::\ndialout:*::\n")


def build_deb(version):
    run("make", "deb", f"BOARD_BIN={os.path.abspath(BIN)}",
        f"DEB_VERSION={version}", "DEB_BUILD_FLAGS=-Zgzip -z1", cwd=REPO)
    arch = run("dpkg", "--print-architecture").stdout.strip()
    return REPO / f".build/deb/meterext_{version}_{arch}.deb"


def dpkg(root, *args):
    return run("dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends", *args)


def entry(root, db, name):
    for line in (root / "etc" / db).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    return None


@needs_bin
@pytest.mark.skipif(os.geteuid() != 0, reason="dpkg --root with maintainer scripts needs root")
def test_deb_installs_upgrades_and_purges_cleanly(tmp_path):
    root = tmp_path / "root"
    make_root(root)
    deb = build_deb("0.0.1")
    assert run("dpkg-deb", "-f", str(deb), "Package").stdout.strip() == "meterext"
    conffiles = run("dpkg-deb", "-I", str(deb), "conffiles").stdout.split()
    assert conffiles == ["/etc/meterext/meterext.json"]
    dpkg(root, "-i", str(deb))

    binary = root / "usr/bin/meterext"
    assert binary.stat().st_mode & 0o777 == 0o755
    # Stripped (lintian: unstripped-binary-or-object) and still the same program.
    assert ".symtab" not in run("readelf", "-S", "-W", str(binary)).stdout
    assert "USAGE: meterext" in run(str(binary), "--help").stdout
    docs = root / "usr/share/doc/meterext"
    assert "Files: *" in (docs / "copyright").read_text()
    assert run("zcat", str(docs / "changelog.gz")).stdout.startswith("meterext (0.0.1) unstable; urgency=medium")
    manual = run("zcat", str(root / "usr/share/man/man1/meterext.1.gz")).stdout
    assert ".Dt METEREXT 1" in manual and "\n\n" not in manual
    for sub in ("run", "scan", "read", "relay", "token"):
        assert f".It Em {sub}" in manual, sub
    config = root / "etc/meterext/meterext.json"
    st = config.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o644)
    assert json.loads(config.read_text())["board"] is None
    assert sorted(p.stem for p in (root / "usr/share/meterext/boards").glob("*.json")) == PROFILES
    assert sorted(p.name for p in (root / "usr/share/meterext/overlays").iterdir()) == \
        sorted(p.stem + ".dtbo" for p in (REPO / "overlays").glob("*.dts"))
    unit = (root / "lib/systemd/system/meterext.service").read_text()
    assert unit == (REPO / "board/systemd/meterext.service").read_text()
    assert os.readlink(root / "etc/systemd/system/multi-user.target.wants/meterext.service") == "/lib/systemd/system/meterext.service"

    user = entry(root, "passwd", "meterext")
    assert user is not None and user[6] == "/usr/sbin/nologin"
    for group in ["dialout", "gpio"]:
        assert "meterext" in entry(root, "group", group)[3].split(","), group
    state = (root / "var/lib/meterext").stat()
    assert (state.st_uid, state.st_gid) == (int(user[2]), int(user[3]))
    assert stat.S_IMODE(state.st_mode) == 0o750

    # Upgrade keeps the installer's configuration (conffile) and does not re-enable a disabled service.
    config.write_text('{"board": "usb-rs485"}\n')
    (root / "etc/systemd/system/multi-user.target.wants/meterext.service").unlink()
    dpkg(root, "--force-confold", "-i", str(build_deb("0.0.2")))
    assert config.read_text() == '{"board": "usb-rs485"}\n'
    assert not (root / "etc/systemd/system/multi-user.target.wants/meterext.service").exists()
    assert entry(root, "passwd", "meterext")[2] == user[2], "upgrade must not recreate the user"

    dpkg(root, "--purge", "meterext")
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if not str(p.relative_to(root)).startswith("var/lib/dpkg") and p.is_file()
                  and not p.name.endswith("-") and p.name != ".pwd.lock")
    assert left == ["etc/group", "etc/gshadow", "etc/passwd", "etc/shadow"], left
    assert entry(root, "passwd", "meterext") is None and entry(root, "group", "meterext") is None
    assert not (root / "var/lib/meterext").exists() and not (root / "etc/meterext").exists()


@needs_bin
def test_make_install_and_uninstall_into_destdir(tmp_path):
    dest = tmp_path / "dest"
    run("make", "install", f"DESTDIR={dest}", "PREFIX=/usr/local", f"BOARD_BIN={os.path.abspath(BIN)}", cwd=REPO)
    assert (dest / "usr/local/bin/meterext").exists()
    assert "ExecStart=/usr/local/bin/meterext run" in (dest / "lib/systemd/system/meterext.service").read_text()
    (dest / "etc/meterext/meterext.json").write_text("{}\n")
    run("make", "install", f"DESTDIR={dest}", "PREFIX=/usr/local", f"BOARD_BIN={os.path.abspath(BIN)}", cwd=REPO)
    assert (dest / "etc/meterext/meterext.json").read_text() == "{}\n", "install must keep an existing config"
    run("make", "uninstall", f"DESTDIR={dest}", "PREFIX=/usr/local", cwd=REPO)
    left = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert left == ["etc/meterext/meterext.json"]
