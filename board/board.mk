# Board support: overlays, install/uninstall, Debian package, cross-build hint, board checks.
# Included from the top-level Makefile (`include board/board.mk`); every path is relative to the repository root.
#
#   make overlays                 compile overlays/*.dts into .build/overlays/*.dtbo (fails on any dtc warning)
#   make install [DESTDIR=] [PREFIX=/usr] [METEREXT_BIN=...]
#   make uninstall [DESTDIR=] [PREFIX=/usr]
#   make deb [METEREXT_BIN=...] [DEB_VERSION=...]     -> .build/deb/meterext_VERSION_ARCH.deb
#   make cross                    build for aarch64 with an installed Swift SDK, or say how to build on the board
#   make board-check              overlays + unit verification + the board's pytest files (needs METEREXT_BIN)

PREFIX ?= /usr
DESTDIR ?=
METEREXT_BIN ?= .build/release/meterext
DEB_VERSION ?= 0.1.0
DEB_ARCH ?= $(shell dpkg --print-architecture 2>/dev/null || echo unknown)
DEB_MAINTAINER ?= meterext maintainers <meterext@localhost>
DTC ?= dtc
# e.g. DEB_BUILD_FLAGS="-Zgzip -z1" for quick test packages; the default is dpkg-deb's (xz).
DEB_BUILD_FLAGS ?=
SYSTEMD_UNIT_DIR ?= /lib/systemd/system
UDEV_RULES_DIR ?= /lib/udev/rules.d
OVERLAY_SRC := $(wildcard overlays/*.dts)
OVERLAY_OUT := .build/overlays
OVERLAYS := $(patsubst overlays/%.dts,$(OVERLAY_OUT)/%.dtbo,$(OVERLAY_SRC))
DEB_STAGE := .build/deb/root
DEB_FILE := .build/deb/meterext_$(DEB_VERSION)_$(DEB_ARCH).deb
CROSS_TRIPLE ?= aarch64-unknown-linux-gnu

.PHONY: overlays install uninstall deb cross board-check board-verify-unit

overlays: $(OVERLAYS)

# dtc prints warnings but exits 0; CI must fail on them, so any output on stderr is an error.
$(OVERLAY_OUT)/%.dtbo: overlays/%.dts
	@mkdir -p $(OVERLAY_OUT)
	@$(DTC) -@ -I dts -O dtb -o $@ $< 2> $@.log; rc=$$?; \
	  if [ $$rc -ne 0 ] || [ -s $@.log ]; then cat $@.log >&2; rm -f $@ $@.log; echo "dtc: $< must compile without warnings" >&2; exit 1; fi; \
	  rm -f $@.log; echo "dtc $< -> $@"

# $(1) = root to install into, $(2) = prefix. Shared by `install` and `deb` so the package holds exactly what
# `make install` puts on a board.
define board_install_tree
	@[ -x "$(METEREXT_BIN)" ] || { echo "no binary at $(METEREXT_BIN): build it (make release) or set METEREXT_BIN" >&2; exit 1; }
	install -D -m 0755 "$(METEREXT_BIN)" "$(1)$(2)/bin/meterext"
	install -d -m 0755 "$(1)$(2)/share/meterext/boards" "$(1)$(2)/share/meterext/overlays"
	install -m 0644 board/profiles/*.json "$(1)$(2)/share/meterext/boards/"
	install -m 0644 $(OVERLAYS) "$(1)$(2)/share/meterext/overlays/"
	install -m 0755 board/install-overlay.sh "$(1)$(2)/share/meterext/install-overlay.sh"
	install -D -m 0644 README.md "$(1)$(2)/share/doc/meterext/README.md"
	install -D -m 0644 board/polkit/50-meterext-networkmanager.rules "$(1)$(2)/share/polkit-1/rules.d/50-meterext-networkmanager.rules"
	install -D -m 0644 board/udev/60-meterext-gpio.rules "$(1)$(UDEV_RULES_DIR)/60-meterext-gpio.rules"
	sed 's|^ExecStart=/usr/bin/meterext|ExecStart=$(2)/bin/meterext|' board/systemd/meterext.service > "$(1).meterext.service.tmp"
	install -D -m 0644 "$(1).meterext.service.tmp" "$(1)$(SYSTEMD_UNIT_DIR)/meterext.service"
	rm -f "$(1).meterext.service.tmp"
endef

install: overlays
	$(call board_install_tree,$(DESTDIR),$(PREFIX))
	@# Never overwrite an installer's configuration.
	@if [ -e "$(DESTDIR)/etc/meterext/meterext.json" ]; then echo "keeping existing $(DESTDIR)/etc/meterext/meterext.json"; \
	  else install -D -m 0644 board/meterext.json "$(DESTDIR)/etc/meterext/meterext.json"; fi
	install -d -m 0750 "$(DESTDIR)/var/lib/meterext"
	@echo "installed. On a board: create the user (see README.md, "Installers"), then systemctl enable --now meterext"

uninstall:
	rm -f "$(DESTDIR)$(PREFIX)/bin/meterext" "$(DESTDIR)$(SYSTEMD_UNIT_DIR)/meterext.service" \
	  "$(DESTDIR)$(UDEV_RULES_DIR)/60-meterext-gpio.rules" \
	  "$(DESTDIR)$(PREFIX)/share/polkit-1/rules.d/50-meterext-networkmanager.rules"
	rm -rf "$(DESTDIR)$(PREFIX)/share/meterext" "$(DESTDIR)$(PREFIX)/share/doc/meterext"
	@echo "kept $(DESTDIR)/etc/meterext and $(DESTDIR)/var/lib/meterext (configuration and state); remove them by hand if wanted"

deb: overlays
	rm -rf $(DEB_STAGE) && mkdir -p $(DEB_STAGE)/DEBIAN
	$(call board_install_tree,$(DEB_STAGE),/usr)
	install -D -m 0644 board/meterext.json $(DEB_STAGE)/etc/meterext/meterext.json
	install -m 0755 board/debian/postinst board/debian/prerm board/debian/postrm $(DEB_STAGE)/DEBIAN/
	echo /etc/meterext/meterext.json > $(DEB_STAGE)/DEBIAN/conffiles
	board/deb-control.sh "$(METEREXT_BIN)" "$(DEB_VERSION)" "$(DEB_ARCH)" "$(DEB_MAINTAINER)" "$(DEB_STAGE)" \
	  > $(DEB_STAGE)/DEBIAN/control
	dpkg-deb --root-owner-group $(DEB_BUILD_FLAGS) --build $(DEB_STAGE) $(DEB_FILE)
	@echo "built $(DEB_FILE)"

cross:
	@sdk=$$($(SWIFT) sdk list 2>/dev/null | grep -i aarch64 | head -n 1); \
	if [ -z "$$sdk" ]; then \
	  echo "No Swift SDK for aarch64 is installed ('swift sdk list' shows none)." >&2; \
	  echo "Either install one (swift sdk install <bundle>, matching Swift $$($(SWIFT) --version 2>/dev/null | sed -n 's/.*version \([0-9.]*\).*/\1/p;q'))," >&2; \
	  echo "or build natively on the board: apt-get install libgpiod-dev, install Swift for aarch64, then" >&2; \
	  echo "  make release && make deb METEREXT_BIN=.build/release/meterext" >&2; \
	  exit 1; \
	fi; \
	echo "building with Swift SDK $$sdk"; \
	$(SWIFT) build -c release --swift-sdk "$$sdk" --static-swift-stdlib && \
	echo "binary: $$($(SWIFT) build -c release --swift-sdk "$$sdk" --show-bin-path)/meterext"

# systemd-analyze verify refuses a unit whose ExecStart binary is missing, and /usr/bin/meterext exists only on an
# installed board: verify a copy whose ExecStart points at the binary we just built (same unit text otherwise).
board-verify-unit:
	@[ -x "$(METEREXT_BIN)" ] || { echo "board-verify-unit needs METEREXT_BIN (a built meterext)" >&2; exit 1; }
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	  sed 's|^ExecStart=/usr/bin/meterext|ExecStart=$(abspath $(METEREXT_BIN))|' board/systemd/meterext.service > $$tmp/meterext.service && \
	  out=$$(systemd-analyze verify $$tmp/meterext.service 2>&1); rc=$$?; \
	  if [ $$rc -ne 0 ] || [ -n "$$out" ]; then echo "$$out" >&2; exit 1; fi; echo "systemd-analyze verify: meterext.service ok"

board-check: overlays board-verify-unit
	METEREXT_BIN=$(abspath $(METEREXT_BIN)) $(PYTHON) -m pytest -q Tests/integration/test_board_*.py
