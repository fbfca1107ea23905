# mtipc: every entry point a newcomer or CI needs.
#   make demo    end-to-end scenario of everything built so far
#   make test    every test (Rust, loom, C, C++ with and without ASan, Python, install)
#   make bench   benchmarks with their baselines (figures go to BENCHMARKS.md)
#   make install PREFIX=/usr/local
# Each target installs what it needs: Debian packages when missing
# (scripts/ensure-deps.sh), Python tools into ./.venv.

CARGO  ?= cargo
PREFIX ?= /usr/local
# Where cargo puts the debug build that the C/C++ tests and the demo use.
DEBUG_DIR := target/debug

.PHONY: all deps build header test test-rust test-loom demo bench fuzz-check clean

all: build

deps:
	@scripts/ensure-deps.sh

build: deps
	$(CARGO) build --all-targets

header:
	MTIPC_BLESS=1 $(CARGO) test --quiet --test header

test: deps test-rust test-loom test-c test-cpp test-python test-install
	@echo "make test: all passed"

test-rust: deps
	$(CARGO) test

# Loom models of the shared-memory logic: release build, bounded preemptions,
# separate target directory so the cfg(loom) build does not evict the normal one.
test-loom:
	RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 \
	  $(CARGO) test --release --lib --target-dir target/loom -- loom_models

demo: build
	@scripts/demo.sh

bench: deps
	$(CARGO) bench --bench wake_latency

clean:
	$(CARGO) clean
	rm -rf .venv build

include mk/c.mk
include mk/python.mk
