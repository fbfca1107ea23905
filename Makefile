# mtipc: every entry point a newcomer or CI needs.
#   make demo    end-to-end scenario of everything built so far
#   make test    every test (Rust, loom, C, C++ with and without ASan, Python, install)
#   make bench   benchmarks with their baselines (figures go to BENCHMARKS.md)
#   make soak-permit  the permit fault campaign at full length (60 s)
#   make install PREFIX=/usr/local
# Each target installs what it needs: Debian packages when missing
# (scripts/ensure-deps.sh), Python tools into ./.venv.

CARGO  ?= cargo
PREFIX ?= /usr/local
# Where cargo puts the debug build that the C/C++ tests and the demo use.
DEBUG_DIR := target/debug

.PHONY: all deps build header lint test test-begin test-rust test-loom demo bench fuzz clean soak-permit

all: build

deps:
	@scripts/ensure-deps.sh

build: deps
	$(CARGO) build --all-targets

header:
	MTIPC_BLESS=1 $(CARGO) test --quiet --test header

# Every test that had to skip reports it in this file (one line each:
# Rust tests through skip() in tests/common, C tests through SKIP() in
# tests/c/mt_test.h, pytest through conftest.py), and `make test` ends with
# the list, so that no skip goes unseen. Under make, a test that lacks a
# tool or a build it needs (mypy, c_worker) fails instead of skipping.
SKIP_LOG := $(CURDIR)/target/test-skips.log
export MTIPC_SKIP_LOG := $(SKIP_LOG)
export MTIPC_TEST_STRICT := 1

test: test-begin lint test-rust test-loom test-c test-cpp test-python test-install
	@if [ -s $(SKIP_LOG) ]; then \
	   echo "make test: all passed; these tests did not run here (see why):"; \
	   sort -u $(SKIP_LOG) | sed 's/^/  SKIPPED /'; \
	 else \
	   echo "make test: all passed, nothing skipped"; \
	 fi

# (Before the others: make runs a target's prerequisites in order.)
test-begin: deps
	@mkdir -p $(dir $(SKIP_LOG)) && rm -f $(SKIP_LOG)

test-rust: deps
	$(CARGO) test

# Formatting and lints (clippy.toml keeps atomics inside the loom shim).
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Loom models of the shared-memory logic: release build, bounded preemptions,
# separate target directory so the cfg(loom) build does not evict the normal
# one; fails unless every model of src/**/loom_models*.rs ran.
test-loom:
	CARGO=$(CARGO) scripts/test-loom.sh

demo: build python c-examples
	@scripts/demo.sh

# attach_latency starts the release mtipcd (from the mtipc-cli crate), runs
# the release mtipc and a C client it compiles with cc, and jattach against an
# idle JVM when JATTACH=/path/to/jattach (or jattach on the PATH) and a JDK are there;
# permit_etcd starts an etcd (Debian's etcd-server, from ensure-deps);
# ha_restart starts the release mtipc-ha (MTIPC_HA_BENCH_CMD=run|up, default
# run; both are measured), links its test program to the release
# libmtipc.so, and runs s6 and runit (Debian's, from ensure-deps) as its
# baselines.
bench: deps
	$(CARGO) build --release --bins
	$(CARGO) build --release -p mtipc --lib
	$(CARGO) bench --bench wake_latency
	$(CARGO) bench --bench attach_latency
	$(CARGO) bench --bench closure_read
	$(CARGO) bench --bench session_rtt
	$(CARGO) bench --bench session_table
	$(CARGO) bench --bench permit
	$(CARGO) bench --bench permit_etcd
	$(CARGO) bench -p mtipc-cli --bench ha_restart
	MTIPC_HA_BENCH_CMD=up $(CARGO) bench -p mtipc-cli --bench ha_restart

clean:
	$(CARGO) clean
	rm -rf .venv build

include mk/c.mk
include mk/python.mk

# The permit fault campaign at full length, on each backend in turn
# (tests/permit_soak.rs: 8 instances, random kill -9 and restarts, stalled
# holders; shared memory, then a real etcd with two "hosts"), 60 s each;
# `make test` runs 6 s and 10 s. PERMIT_SOAK_SECONDS overrides the length.
PERMIT_SOAK_SECONDS ?= 60
soak-permit: deps
	PERMIT_SOAK_SECONDS=$(PERMIT_SOAK_SECONDS) $(CARGO) test -p mtipc --release --test permit_soak -- --nocapture

# Coverage-guided fuzzing of every parser of shared data (needs the nightly
# toolchain; installs cargo-fuzz when missing). FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := region_header domain_layout advert response relay_hello psk_identity session_region request_region closure volume arbiter_region etcd_record ha_message ha_roles
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  (cd fuzz && $(CARGO) +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS)) || exit 1; \
	done
