# Reliability checks (issue 8): fuzzing, soak, power cuts. Included from the main Makefile; see docs/reliability.md.
#   make fuzz              every fuzz target for FUZZ_SECONDS each (default 180)
#   make fuzz-smoke        every fuzz target for FUZZ_SMOKE_SECONDS each (default 15)       [make test]
#   make fuzz-regressions  replay committed seeds and regression inputs, no fuzzing         [make test]
#   make soak              SOAK_SECONDS (default 600) of faults, meter outages, wrk load and config writes
#   make soak-ci           the 60-second soak, goals asserted                              [make test]
#   make powercut          POWERCUT_KILLS (default 200) SIGKILLs during config writes
#   make powercut-ci       25 kills                                                          [make test]
FUZZ_SECONDS ?= 180
FUZZ_SMOKE_SECONDS ?= 15
SOAK_SECONDS ?= 600
SOAK_CI_SECONDS ?= 60
POWERCUT_KILLS ?= 200
POWERCUT_CI_KILLS ?= 25
# The soak and power-cut runs exercise $(METEREXT_BIN) (the main Makefile's: the debug build `build` makes), with
# the main Makefile's $(PYTHON).
FUZZ_BUILD := Tests/fuzz/build.sh
FUZZ_RUN := Tests/fuzz/run.sh

.PHONY: fuzz fuzz-build fuzz-smoke fuzz-regressions soak soak-ci soak-deps powercut powercut-ci reliability-ci

# The fuzzers link the Swift toolchain's own libFuzzer and ASan runtimes (-sanitize=fuzzer,address): no Debian
# package; deps-build brings the C libraries the modules link and nm (binutils), which build.sh checks with.
fuzz-build: deps-build
	$(FUZZ_BUILD)

fuzz: fuzz-build
	$(FUZZ_RUN) fuzz $(FUZZ_SECONDS)

fuzz-smoke: fuzz-build
	$(FUZZ_RUN) fuzz $(FUZZ_SMOKE_SECONDS)

fuzz-regressions: fuzz-build
	$(FUZZ_RUN) regressions

# socat makes the bus's pty pair, wrk the API load; the scripts run with the venv's Python.
soak-deps: deps-venv
	$(call apt_install,socat wrk)

soak: soak-deps build
	$(PYTHON) Tests/soak/soak.py --seconds $(SOAK_SECONDS)

soak-ci: soak-deps build
	$(PYTHON) Tests/soak/soak.py --seconds $(SOAK_CI_SECONDS) --ci

powercut: deps-venv build
	$(PYTHON) Tests/soak/powercut.py --kills $(POWERCUT_KILLS)

powercut-ci: deps-venv build
	$(PYTHON) Tests/soak/powercut.py --kills $(POWERCUT_CI_KILLS)

# What `make test` runs from this file.
reliability-ci: fuzz-regressions fuzz-smoke soak-ci powercut-ci
