# meterext — see README.md ("Developers: make targets" lists every target). Two commands do all set-up on a fresh
# Debian / Raspberry Pi OS machine:
#   make run    build and run the gateway (against the built-in KPM33B simulator when no meter is attached)
#   make test   install what the tests need and run them all
# Every target that runs a tool depends on the deps-* target that installs it: `.ci/run` removes those packages and
# the .venv before `make test`, so a tool used before its install step fails CI.
SHELL := /bin/bash
SWIFT ?= swift
VENV := $(CURDIR)/.venv
# The one Python every recipe runs: the venv's (deps-venv makes it from the system's python3 and pins what the
# tests import).
PYTHON := $(VENV)/bin/python
BIN_DEBUG := .build/debug/meterext
BIN_RELEASE := .build/release/meterext
# The binary every test exercises (pytest, soak, power cuts): they read it from the environment as METEREXT_BIN.
# Packaging uses BOARD_BIN (board/board.mk), never this.
METEREXT_BIN ?= $(CURDIR)/$(BIN_DEBUG)
export METEREXT_BIN
LISTEN ?= 127.0.0.1:8080
STATE_DIR ?= $(CURDIR)/.build/state
# Extra `meterext run` flags for `make run`, e.g. RUN_ARGS="--address 1,2,3 --modbus-tcp 127.0.0.1:1502" (issue 17).
RUN_ARGS ?=
# Debian packages, one list per deps-* target.
APT_BUILD := libgpiod-dev libcurl4-openssl-dev libsodium-dev libsqlite3-dev pkg-config gcc binutils
# Issue 16 (fleet): the MQTT client library.
APT_BUILD += libmosquitto-dev
APT_BOARD := device-tree-compiler dpkg-dev
# What the board's dashboard serves itself (the .deb depends on it too: board/deb-control.sh); `make run` installs it.
APT_RUN := libjs-chart.js
APT_TEST := socat wrk libmodbus-dev mbpoll curl systemd python3-venv openssl chromium bubblewrap util-linux iproute2 passwd
# Issue 16 (fleet): a real broker and its clients for Tests/integration/test_mqtt.py and Tests/hostile/test_mqtt_faults.py.
APT_TEST += mosquitto mosquitto-clients
APT_LINT := lintian shellcheck
APT_GPIOD := debootstrap
APT_BENCH := nginx-light valgrind
PYMODBUS_VERSION := 3.8.6
PYTEST_VERSION := 8.3.5
# The dashboard test drives headless Chromium over the DevTools protocol.
WEBSOCKET_CLIENT_VERSION := 1.8.0
# Issue 16 (fleet): /metrics is parsed with Prometheus' own text parser.
PROMETHEUS_CLIENT_VERSION := 0.21.1

.PHONY: all build release run test unit-test integration-test lint shellcheck gpiod-compat bench clean print-apt-packages \
	deps-build deps-board deps-venv deps-test deps-lint deps-gpiod deps-bench deps-run

all: build

# Installs missing Debian packages when running as root (CI, a fresh board); otherwise says what is missing.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing — run: sudo apt-get install$$missing" >&2; exit 1; fi; \
	fi
endef

include board/board.mk
include Tests/reliability.mk

deps-build:
	$(call apt_install,$(APT_BUILD))

deps-board:
	$(call apt_install,$(APT_BOARD))

deps-venv:
	$(call apt_install,python3-venv)
	@[ -x $(PYTHON) ] || python3 -m venv $(VENV)
	@$(PYTHON) -c 'import pymodbus, pytest, websocket, sys; sys.exit(pymodbus.__version__ != "$(PYMODBUS_VERSION)" or pytest.__version__ != "$(PYTEST_VERSION)" or websocket.__version__ != "$(WEBSOCKET_CLIENT_VERSION)")' 2>/dev/null || \
	  $(PYTHON) -m pip install -q "pymodbus[serial]==$(PYMODBUS_VERSION)" "pytest==$(PYTEST_VERSION)" "websocket-client==$(WEBSOCKET_CLIENT_VERSION)"
	@$(PYTHON) -c 'import prometheus_client' 2>/dev/null || $(PYTHON) -m pip install -q "prometheus_client==$(PROMETHEUS_CLIENT_VERSION)"

deps-lint:
	$(call apt_install,$(APT_LINT))

deps-gpiod:
	$(call apt_install,$(APT_GPIOD))

deps-run:
	$(call apt_install,$(APT_RUN))

# Everything `make test` needs, in one go (each test target also names its own deps-* target).
deps-test: deps-build deps-board deps-venv deps-lint deps-gpiod deps-run
	$(call apt_install,$(APT_TEST))

deps-bench: deps-test
	$(call apt_install,$(APT_BENCH))

# Every Debian package a deps-* target installs (.ci/run removes those the base image lacks before `make test`).
print-apt-packages:
	@echo $(APT_BUILD) $(APT_BOARD) $(APT_RUN) python3-venv $(APT_LINT) $(APT_GPIOD) $(APT_TEST) $(APT_BENCH)

build: deps-build
	$(SWIFT) build

# Static Swift runtime (the board needs no toolchain); -z now: full RELRO, as Debian's hardening flags ask.
# Issue 18 (binary size): no dynamic export of every symbol (SwiftPM exports them for executables; nothing here
# looks them up), so --gc-sections can drop what is unused, and identical code is folded (gold's --icf=all):
# stripped 22.4 MB -> 20.7 MB. Linked by lld (the toolchain's) with packed relative relocations (DT_RELR, glibc >= 2.36:
# Debian 12, Raspberry Pi OS bookworm): the 1.4 MB .rela.dyn table ld.so read at every start becomes 12 kB;
# stripped 21.7 -> 20.2 MB, 2 MB less resident. RELEASE_LTO: full LTO across every module built from source (ours
# and the packages'): 20.1 -> 18.5 MB and 8 % fewer instructions per Modbus transaction, but the link needs about
# 12 GB of memory and several minutes; on a board (or any machine with less memory) build with `RELEASE_LTO=`.
# RELEASE_ORDER: the functions a running gateway executes are laid out first (board/meterext.order, made by
# Tests/bench/order_file.py), so the code it touches fills a few contiguous pages instead of faulting in 64 kB
# blocks all over .text: less resident memory and page cache; a stale list only costs memory.
# See docs/benchmarks.md ("Binary size", "Memory"). board/board.mk's `cross` builds with the same flags.
RELEASE_LTO ?= --experimental-lto-mode=full
RELEASE_ORDER ?= -Xlinker --symbol-ordering-file=$(CURDIR)/board/meterext.order -Xlinker --no-warn-symbol-ordering
RELEASE_LDFLAGS := -Xlinker -z -Xlinker now -Xlinker --no-export-dynamic -Xlinker --gc-sections -Xlinker --icf=all \
	-Xswiftc -use-ld=lld -Xlinker -z -Xlinker pack-relative-relocs $(RELEASE_ORDER) $(RELEASE_LTO)
release: deps-build
	$(SWIFT) build -c release --static-swift-stdlib $(RELEASE_LDFLAGS)

run: build deps-run
	mkdir -p $(STATE_DIR)
	$(BIN_DEBUG) run --simulate --listen $(LISTEN) --state-dir $(STATE_DIR) --wifi sim $(RUN_ARGS)

unit-test: deps-test
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

integration-test: deps-test build $(GENERATE_MANUAL)
	$(PYTHON) -m pytest -q Tests/integration Tests/hostile

# Every shell script in the repository (found by its #! line, so new ones are never missed).
shellcheck: deps-lint
	@files=$$(git ls-files -z --cached --others --exclude-standard | xargs -0 grep -lIE '^#!.*(/|env )(ba|da)?sh( |$$)' 2>/dev/null); \
	  shellcheck $$files && echo "shellcheck: clean ($$(echo $$files | wc -w) scripts)"

# The libgpiod shim against both APIs it claims: the host's 1.6 and Debian 13's 2.x in a debootstrap chroot kept in
# .build/trixie-root (about 4 minutes to make the first time, seconds after). Needs root.
gpiod-compat: deps-build deps-gpiod
	Tests/libgpiod/compile-both.sh

# Static checks first: shellcheck, the overlays (any dtc warning fails), the libgpiod shim against 1.6 and 2.x, and
# lintian on the package (built from the debug binary: see lint-package in board/board.mk). Then the XCTest and
# pytest suites (integration and hostile), the fuzz regressions, a short fuzz smoke of every target, the 60-second soak and 25 power cuts, with their goals asserted (Tests/reliability.mk).
lint: shellcheck overlays gpiod-compat lint-package-debug

test: lint unit-test integration-test reliability-ci

# Figures, not tests: prints them and rewrites docs/benchmarks.md.
bench: deps-bench release
	$(PYTHON) Tests/bench/run.py --bin $(CURDIR)/$(BIN_RELEASE) $(BENCH_ARGS)

# --one-file-system: a debootstrap interrupted mid-way can leave /proc mounted inside .build/trixie-root.
clean:
	rm -rf --one-file-system .build
