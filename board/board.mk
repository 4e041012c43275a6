# Board support: overlays, install/uninstall, Debian package, cross-build hint, board checks.
# Included from the top-level Makefile (`include board/board.mk`); every path is relative to the repository root.
#
#   make overlays                 compile overlays/*.dts into .build/overlays/*.dtbo (fails on any dtc warning)
#   make install [DESTDIR=] [PREFIX=/usr] [BOARD_BIN=...]
#   make uninstall [DESTDIR=] [PREFIX=/usr]
#   make deb [BOARD_BIN=...] [DEB_VERSION=...]        -> .build/deb/meterext_VERSION_ARCH.deb
#   make lint-package [BOARD_BIN=...]                 make deb, then lintian: any error or warning fails
#   make lint-package-debug                           the same from the debug build (what `make test` runs)
#   make cross                    build for aarch64 with an installed Swift SDK, or say how to build on the board
#   make board-check              overlays + unit verification + the board's pytest files

PREFIX ?= /usr
DESTDIR ?=
# The binary `make install` and `make deb` put on the board (the tests never read this name: they use METEREXT_BIN).
BOARD_BIN ?= $(BIN_RELEASE)
# The binary whose --help the manual page is made from: BOARD_BIN, unless that one cannot run here (cross-built).
MANPAGE_BIN ?= $(BOARD_BIN)
DEB_VERSION ?= 0.1.0
DEB_ARCH ?= $(shell dpkg --print-architecture 2>/dev/null || echo unknown)
# Who made the commit being packaged, and when: the package's Maintainer and its changelog entry. Set
# DEB_MAINTAINER for a release built by someone else; lintian refuses an address without a real domain.
DEB_MAINTAINER ?= $(shell git log -1 --format='%an <%ae>' 2>/dev/null)
DEB_DATE ?= $(shell git log -1 --format=%cD 2>/dev/null || date -R)
DTC ?= dtc
# swift-argument-parser's manual generator, built from the local copy of the package the CLI already depends on.
GENERATE_MANUAL := .build/debug/generate-manual
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

.PHONY: overlays install uninstall deb lint-package lint-package-debug cross board-check board-verify-unit

overlays: $(OVERLAYS)

# dtc prints warnings but exits 0; CI must fail on them, so any output on stderr is an error. deps-board installs
# dtc (order-only: installing it does not make every overlay out of date).
$(OVERLAY_OUT)/%.dtbo: overlays/%.dts | deps-board
	@mkdir -p $(OVERLAY_OUT)
	@$(DTC) -@ -I dts -O dtb -o $@ $< 2> $@.log; rc=$$?; \
	  if [ $$rc -ne 0 ] || [ -s $@.log ]; then cat $@.log >&2; rm -f $@ $@.log; echo "dtc: $< must compile without warnings" >&2; exit 1; fi; \
	  rm -f $@.log; echo "dtc $< -> $@"

# $(1) = root to install into, $(2) = prefix. Shared by `install` and `deb` so the package holds exactly what
# `make install` puts on a board.
define board_install_tree
	@[ -x "$(BOARD_BIN)" ] || { echo "no binary at $(BOARD_BIN): build it (make release) or set BOARD_BIN" >&2; exit 1; }
	install -D -m 0755 "$(BOARD_BIN)" "$(1)$(2)/bin/meterext"
	install -d -m 0755 "$(1)$(2)/share/meterext/boards" "$(1)$(2)/share/meterext/overlays"
	install -m 0644 board/profiles/*.json "$(1)$(2)/share/meterext/boards/"
	install -m 0644 $(OVERLAYS) "$(1)$(2)/share/meterext/overlays/"
	install -m 0755 board/install-overlay.sh "$(1)$(2)/share/meterext/install-overlay.sh"
	install -D -m 0644 README.md "$(1)$(2)/share/doc/meterext/README.md"
	install -D -m 0644 board/polkit/50-meterext-networkmanager.rules "$(1)$(2)/share/polkit-1/rules.d/50-meterext-networkmanager.rules"
	install -D -m 0644 board/polkit/50-meterext-login1.rules "$(1)$(2)/share/polkit-1/rules.d/50-meterext-login1.rules"
	install -D -m 0644 board/udev/60-meterext-gpio.rules "$(1)$(UDEV_RULES_DIR)/60-meterext-gpio.rules"
	sed -e 's|^ExecStart=/usr/bin/meterext|ExecStart=$(2)/bin/meterext|' \
	  -e 's|^ExecStartPre=-+/usr/bin/meterext|ExecStartPre=-+$(2)/bin/meterext|' board/systemd/meterext.service > "$(1).meterext.service.tmp"
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
	  "$(DESTDIR)$(PREFIX)/share/polkit-1/rules.d/50-meterext-networkmanager.rules" \
	  "$(DESTDIR)$(PREFIX)/share/polkit-1/rules.d/50-meterext-login1.rules"
	rm -rf "$(DESTDIR)$(PREFIX)/share/meterext" "$(DESTDIR)$(PREFIX)/share/doc/meterext"
	@echo "kept $(DESTDIR)/etc/meterext and $(DESTDIR)/var/lib/meterext (configuration and state); remove them by hand if wanted"

# The package as Debian policy wants it (lintian: no error, no warning): a stripped binary (dh_strip's options), the
# copyright file, a changelog (native version: changelog.gz), a manual page made by swift-argument-parser's
# generate-manual from the binary's own --help, maintainer scripts that go through deb-systemd-helper/-invoke.
deb: deps-board overlays $(GENERATE_MANUAL)
	@[ -x "$(MANPAGE_BIN)" ] || { echo "no binary at $(MANPAGE_BIN) to make the manual page from: set MANPAGE_BIN" >&2; exit 1; }
	rm -rf $(DEB_STAGE) && mkdir -p $(DEB_STAGE)/DEBIAN
	$(call board_install_tree,$(DEB_STAGE),/usr)
	strip --remove-section=.comment --remove-section=.note $(DEB_STAGE)/usr/bin/meterext
	install -m 0644 board/debian/copyright $(DEB_STAGE)/usr/share/doc/meterext/copyright
	@[ -n "$(DEB_MAINTAINER)" ] || { echo "set DEB_MAINTAINER='Name <address>' (no git commit to take it from)" >&2; exit 1; }
	printf 'meterext (%s) unstable; urgency=medium\n\n  * Built from %s.\n\n -- %s  %s\n' "$(DEB_VERSION)" \
	  "$$(git describe --always --dirty 2>/dev/null || echo 'a source tree without git')" "$(DEB_MAINTAINER)" "$(DEB_DATE)" \
	  | gzip -9n > $(DEB_STAGE)/usr/share/doc/meterext/changelog.gz
	@# generate-manual reads the binary's --experimental-dump-help. It leaves blank lines between paragraphs of a
	@# command's discussion, which mdoc warns about (lintian: groff-message): they become paragraph macros.
	rm -rf $(DEB_STAGE).man && mkdir -p $(DEB_STAGE).man && $(GENERATE_MANUAL) "$(MANPAGE_BIN)" --date "$$(date -u -d '$(DEB_DATE)' +%F)" \
	  --output-directory $(DEB_STAGE).man
	install -d -m 0755 $(DEB_STAGE)/usr/share/man/man1
	sed 's/^$$/.Pp/' $(DEB_STAGE).man/meterext.1 | gzip -9n > $(DEB_STAGE)/usr/share/man/man1/meterext.1.gz
	rm -rf $(DEB_STAGE).man
	install -D -m 0644 board/meterext.json $(DEB_STAGE)/etc/meterext/meterext.json
	install -m 0755 board/debian/postinst board/debian/prerm board/debian/postrm $(DEB_STAGE)/DEBIAN/
	echo /etc/meterext/meterext.json > $(DEB_STAGE)/DEBIAN/conffiles
	cd $(DEB_STAGE) && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum > DEBIAN/md5sums
	board/deb-control.sh "$(BOARD_BIN)" "$(DEB_VERSION)" "$(DEB_ARCH)" "$(DEB_MAINTAINER)" "$(DEB_STAGE)" \
	  > $(DEB_STAGE)/DEBIAN/control
	dpkg-deb --root-owner-group $(DEB_BUILD_FLAGS) --build $(DEB_STAGE) $(DEB_FILE)
	@echo "built $(DEB_FILE)"

$(GENERATE_MANUAL): | deps-build
	$(SWIFT) build --product generate-manual

# Any lintian error or warning fails (info tags are printed, not fatal). LINTIAN_SUPPRESS is empty for the release
# package; `make test` lints the same package built from its debug binary (lint-package-debug), which links the
# toolchain's Swift runtime through RUNPATH /opt/swift/... — the one tag that only a debug build has.
LINTIAN_SUPPRESS ?=
lint-package: deps-lint deb
	lintian --info --fail-on error,warning $(if $(LINTIAN_SUPPRESS),--suppress-tags $(LINTIAN_SUPPRESS)) $(DEB_FILE)
	@echo "lintian: $(DEB_FILE) has no error and no warning$(if $(LINTIAN_SUPPRESS), (suppressed: $(LINTIAN_SUPPRESS)))"

lint-package-debug: build
	$(MAKE) --no-print-directory lint-package BOARD_BIN=$(BIN_DEBUG) DEB_BUILD_FLAGS="-Zgzip -z1" \
	  LINTIAN_SUPPRESS=custom-library-search-path

cross:
	@sdk=$$($(SWIFT) sdk list 2>/dev/null | grep -i aarch64 | head -n 1); \
	if [ -z "$$sdk" ]; then \
	  echo "No Swift SDK for aarch64 is installed ('swift sdk list' shows none)." >&2; \
	  echo "Either install one (swift sdk install <bundle>, matching Swift $$($(SWIFT) --version 2>/dev/null | sed -n 's/.*version \([0-9.]*\).*/\1/p;q'))," >&2; \
	  echo "or build natively on the board: apt-get install libgpiod-dev, install Swift for aarch64, then" >&2; \
	  echo "  make release && make deb" >&2; \
	  exit 1; \
	fi; \
	echo "building with Swift SDK $$sdk"; \
	$(SWIFT) build -c release --swift-sdk "$$sdk" --static-swift-stdlib $(RELEASE_LDFLAGS) && \
	echo "binary: $$($(SWIFT) build -c release --swift-sdk "$$sdk" --static-swift-stdlib $(RELEASE_LDFLAGS) --show-bin-path)/meterext"

# systemd-analyze verify refuses a unit whose ExecStart binary is missing, and /usr/bin/meterext exists only on an
# installed board: verify a copy whose ExecStart points at the binary we just built (same unit text otherwise).
board-verify-unit:
	@[ -x "$(METEREXT_BIN)" ] || { echo "board-verify-unit needs METEREXT_BIN (a built meterext)" >&2; exit 1; }
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	  sed 's|^ExecStart=/usr/bin/meterext|ExecStart=$(abspath $(METEREXT_BIN))|' board/systemd/meterext.service > $$tmp/meterext.service && \
	  out=$$(systemd-analyze verify $$tmp/meterext.service 2>&1); rc=$$?; \
	  if [ $$rc -ne 0 ] || [ -n "$$out" ]; then echo "$$out" >&2; exit 1; fi; echo "systemd-analyze verify: meterext.service ok"

board-check: deps-venv overlays build board-verify-unit
	$(PYTHON) -m pytest -q Tests/integration/test_board_*.py
