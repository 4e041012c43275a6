# meterext — see README.md. Two commands do all set-up on a fresh Debian / Raspberry Pi OS machine:
#   make run    build and run the gateway (against the built-in KPM33B simulator when no meter is attached)
#   make test   install what the tests need and run them all
SHELL := /bin/bash
SWIFT ?= swift
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN_DEBUG := .build/debug/meterext
BIN_RELEASE := .build/release/meterext
LISTEN ?= 127.0.0.1:8080
STATE_DIR ?= $(CURDIR)/.build/state
# Debian packages the build, the tests and the benchmarks need.
APT_BUILD := libgpiod-dev libcurl4-openssl-dev libsodium-dev pkg-config
APT_TEST := bubblewrap socat libmodbus-dev mbpoll device-tree-compiler curl systemd python3-venv dpkg-dev openssl chromium
APT_BENCH := wrk nginx-light gcc binutils
PYMODBUS_VERSION := 3.8.6

.PHONY: all build release run test unit-test integration-test bench deps-build deps-test deps-bench clean

all: build

include board/board.mk
include Tests/reliability.mk

# Installs missing Debian packages when running as root (CI, a fresh board); otherwise says what is missing.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing — run: sudo apt-get install$$missing" >&2; exit 1; fi; \
	fi
endef

deps-build:
	$(call apt_install,$(APT_BUILD))

deps-test: deps-build
	$(call apt_install,$(APT_TEST))
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import pymodbus, sys; sys.exit(pymodbus.__version__ != "$(PYMODBUS_VERSION)")' 2>/dev/null || \
	  $(PY) -m pip install -q "pymodbus[serial]==$(PYMODBUS_VERSION)" "pytest==8.3.5"

deps-bench: deps-test
	$(call apt_install,$(APT_BENCH))

build: deps-build
	$(SWIFT) build

release: deps-build
	$(SWIFT) build -c release --static-swift-stdlib

run: build
	mkdir -p $(STATE_DIR)
	$(BIN_DEBUG) run --simulate --listen $(LISTEN) --state-dir $(STATE_DIR) --wifi sim

unit-test: deps-build
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

integration-test: deps-test build
	METEREXT_BIN=$(CURDIR)/$(BIN_DEBUG) $(PY) -m pytest -q Tests/integration Tests/hostile

# Overlays first: CI must fail on any dtc warning before anything slower runs. Then the fuzz regressions, a short
# fuzz smoke of every target, the 60-second soak and 25 power cuts, with their goals asserted (Tests/reliability.mk).
test: overlays unit-test integration-test reliability-ci

# Figures, not tests: prints them and rewrites docs/benchmarks.md.
bench: deps-bench release
	$(PY) Tests/bench/run.py --bin $(CURDIR)/$(BIN_RELEASE) $(BENCH_ARGS)

clean:
	rm -rf .build
