# Python: the package `mtipc` (bindings/python), a pyo3 crate that maturin
# builds into one abi3 wheel, tested with pytest and mypy.stubtest.
#
#   make venv          ./.venv with the pinned tools of bindings/python/requirements-dev.txt
#   make python        build the wheel into build/wheels, (re)install it into .venv
#   make test-python   python and the programs (mtipcd, which the attach tests
#                      start), then pytest (the stubs test runs mypy.stubtest)
#
# MATURIN_FLAGS=--release builds an optimised wheel (the default is the dev
# profile, which is what the tests and the demo need and builds faster).
.PHONY: venv python test-python

PY_DIR        := bindings/python
VENV          := .venv
VENV_PY       := $(VENV)/bin/python
# Rebuilt only when the pinned tools change (or the venv is missing).
VENV_STAMP    := $(VENV)/.mtipc-dev-tools
PY_WHEEL_DIR  := build/wheels
MATURIN_FLAGS ?=

venv: $(VENV_STAMP)

$(VENV_STAMP): $(PY_DIR)/requirements-dev.txt | deps
	test -x $(VENV_PY) || python3 -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check -r $(PY_DIR)/requirements-dev.txt
	touch $@

# Shares the workspace's target/ (the crate is a workspace member), so the
# core is not built twice. Old wheels are removed first so that exactly one
# is installed; --force-reinstall because the version does not change.
python: venv
	rm -f $(PY_WHEEL_DIR)/mtipc-*.whl
	CARGO_TARGET_DIR=$(CURDIR)/target $(VENV)/bin/maturin build --quiet \
	  --manifest-path $(PY_DIR)/Cargo.toml --interpreter $(VENV_PY) \
	  --out $(PY_WHEEL_DIR) $(MATURIN_FLAGS)
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check \
	  --force-reinstall --no-deps $(PY_WHEEL_DIR)/mtipc-*.whl

# Run from the repository root so that the installed wheel, not the source
# tree in bindings/python, is what `import mtipc` finds.
# The attach tests start target/debug/mtipcd (or $$MTIPCD).
test-python: python c-examples
	$(CARGO) build --bins
	$(VENV_PY) -m pytest -p no:cacheprovider $(PY_DIR)/tests
