# C and C++: tests against include/ and libmtipc.so, install, pkg-config.
#
#   make test-c        C tests (tests/c/*.c), plain, then with ASan+UBSan
#   make test-cpp      C++ tests (tests/cpp/*.cpp), plain, then with ASan+UBSan
#   make c-examples    examples/*.c and *.cpp into target/c/ (c_waiter, c_tenant,
#                      cpp_tenant and c_worker are used by the demo; test_session
#                      runs c_worker)
#   make install       release build into $(DESTDIR)$(PREFIX) (default /usr/local)
#   make test-install  install into a temporary prefix, build the examples
#                      there with pkg-config (shared and static) and run them
#
# Test programs and examples link to the debug build in target/debug (with an
# rpath, so they run from anywhere); everything built here goes to target/c/.
# A test program is one executable that exits nonzero if any check failed;
# every program runs even if an earlier one failed, then the target fails
# and names them. Tests that need a daemon start $MTIPCD (the debug mtipcd)
# themselves.

CARGO      ?= cargo
PREFIX     ?= /usr/local
DEBUG_DIR  ?= target/debug
CC         ?= cc
CXX        ?= c++
# make's built-in defaults (cc, g++) are not a choice: use cc and c++.
ifeq ($(origin CC),default)
CC := cc
endif
ifeq ($(origin CXX),default)
CXX := c++
endif
READELF    ?= readelf
PKG_CONFIG ?= pkg-config
INSTALL    ?= install

LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig

# The package version (Cargo.toml) and the soname's number (its major).
MTIPC_VERSION := $(shell sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)
MTIPC_MAJOR   := $(firstword $(subst ., ,$(MTIPC_VERSION)))

C_OUT       := target/c
RELEASE_DIR := target/release
C_WARN      := -Wall -Wextra -Werror -pedantic
C_STD       := -std=c11 $(C_WARN) -g -Iinclude
CXX_STD     := -std=c++17 $(C_WARN) -g -Iinclude
SAN_FLAGS   := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
DEBUG_LINK  := -L$(DEBUG_DIR) -lmtipc -Wl,-rpath,$(abspath $(DEBUG_DIR)) -pthread
# Leaks are errors; UBSan findings abort (with -fno-sanitize-recover) and show a stack.
SAN_ENV     := ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1 \
               UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# A test program that runs longer than this (seconds) is killed and fails.
TEST_TIMEOUT ?= 120

C_TESTS     := $(sort $(basename $(notdir $(wildcard tests/c/*.c))))
CXX_TESTS   := $(sort $(basename $(notdir $(wildcard tests/cpp/*.cpp))))
C_PLAIN     := $(C_TESTS:%=$(C_OUT)/tests/c/%)
C_ASAN      := $(C_TESTS:%=$(C_OUT)/tests/c-asan/%)
CXX_PLAIN   := $(CXX_TESTS:%=$(C_OUT)/tests/cpp/%)
CXX_ASAN    := $(CXX_TESTS:%=$(C_OUT)/tests/cpp-asan/%)
C_EXAMPLES  := $(C_OUT)/c_waiter $(C_OUT)/c_domain $(C_OUT)/c_tenant $(C_OUT)/c_worker $(C_OUT)/c_closure $(C_OUT)/c_gateway $(C_OUT)/c_ha_app
CXX_EXAMPLES := $(C_OUT)/cpp_domain $(C_OUT)/cpp_tenant $(C_OUT)/cpp_ha_app
# The daemon the attach tests start (as a child process).
TEST_ENV    := MTIPCD=$(abspath $(DEBUG_DIR))/mtipcd C_WORKER=$(abspath $(C_OUT))/c_worker

.PHONY: c-lib c-bins test-c test-cpp c-examples install test-install

# The debug library the tests link to. Its soname is libmtipc.so.N (build.rs)
# but cargo only writes libmtipc.so: add the libmtipc.so.N link next to it, or
# nothing linked with -L$(DEBUG_DIR) -lmtipc could be loaded.
c-lib:
	$(CARGO) build -p mtipc --lib
	@soname=$$($(READELF) -d $(DEBUG_DIR)/libmtipc.so | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p'); \
	 test -n "$$soname" || { echo "c-lib: $(DEBUG_DIR)/libmtipc.so has no soname" >&2; exit 1; }; \
	 ln -sfn libmtipc.so $(DEBUG_DIR)/$$soname

# The debug programs (mtipcd, mtipc) the tests run.
c-bins:
	$(CARGO) build --bins

$(C_OUT)/tests/c/%: tests/c/%.c $(wildcard tests/c/*.h) include/mtipc.h | c-lib
	@mkdir -p $(@D)
	$(CC) $(C_STD) $(CFLAGS) $< -o $@ $(DEBUG_LINK) $(LDFLAGS)

$(C_OUT)/tests/c-asan/%: tests/c/%.c $(wildcard tests/c/*.h) include/mtipc.h | c-lib
	@mkdir -p $(@D)
	$(CC) $(C_STD) $(SAN_FLAGS) $(CFLAGS) $< -o $@ $(DEBUG_LINK) $(LDFLAGS)

$(C_OUT)/tests/cpp/%: tests/cpp/%.cpp $(wildcard tests/cpp/*.hpp) include/mtipc.hpp include/mtipc.h | c-lib
	@mkdir -p $(@D)
	$(CXX) $(CXX_STD) $(CXXFLAGS) $< -o $@ $(DEBUG_LINK) $(LDFLAGS)

$(C_OUT)/tests/cpp-asan/%: tests/cpp/%.cpp $(wildcard tests/cpp/*.hpp) include/mtipc.hpp include/mtipc.h | c-lib
	@mkdir -p $(@D)
	$(CXX) $(CXX_STD) $(SAN_FLAGS) $(CXXFLAGS) $< -o $@ $(DEBUG_LINK) $(LDFLAGS)

$(C_EXAMPLES): $(C_OUT)/%: examples/%.c include/mtipc.h | c-lib
	@mkdir -p $(@D)
	$(CC) $(C_STD) $(CFLAGS) $< -o $@ $(DEBUG_LINK) $(LDFLAGS)

$(CXX_EXAMPLES): $(C_OUT)/%: examples/%.cpp include/mtipc.hpp include/mtipc.h | c-lib
	@mkdir -p $(@D)
	$(CXX) $(CXX_STD) $(CXXFLAGS) $< -o $@ $(DEBUG_LINK) $(LDFLAGS)

c-examples: $(C_EXAMPLES) $(CXX_EXAMPLES)

# $(call run-tests,WHAT,PROGRAMS,ENV): runs every program (ENV set, at most
# TEST_TIMEOUT s each), then fails naming each one that failed.
define run-tests
	@failed=""; \
	for t in $(2); do \
	  echo "== $(1): $$t"; \
	  $(3) timeout -k 5 $(TEST_TIMEOUT) $$t || { echo "** $$t FAILED (exit status $$?)" >&2; failed="$$failed $$t"; }; \
	done; \
	if [ -n "$$failed" ]; then echo "$(1): FAILED:$$failed" >&2; exit 1; fi; \
	echo "== $(1): all $(words $(2)) programs passed"
endef

test-c: c-lib c-bins $(C_PLAIN) $(C_ASAN) $(C_EXAMPLES)
	$(call run-tests,C tests,$(C_PLAIN),$(TEST_ENV))
	$(call run-tests,C tests with ASan+UBSan,$(C_ASAN),$(TEST_ENV) $(SAN_ENV))

test-cpp: c-lib c-bins $(CXX_PLAIN) $(CXX_ASAN) $(CXX_EXAMPLES)
	$(call run-tests,C++ tests,$(CXX_PLAIN),$(TEST_ENV))
	$(call run-tests,C++ tests with ASan+UBSan,$(CXX_ASAN),$(TEST_ENV) $(SAN_ENV))

# Installs the release build:
#   $(LIBDIR)/libmtipc.so.X.Y.Z, libmtipc.so.X -> it, libmtipc.so -> libmtipc.so.X
#   $(LIBDIR)/libmtipc.a, $(INCLUDEDIR)/mtipc.h and mtipc.hpp, $(PKGCONFIGDIR)/mtipc.pc
# The release build is `cargo rustc -p mtipc --release --lib` with --print
# native-static-libs, which is the same build as `cargo build -p mtipc --release --lib`
# and also says what a program linked to libmtipc.a needs besides it: that
# list goes into mtipc.pc's Libs.private (cargo repeats it when up to date).
install:
	@mkdir -p $(C_OUT)
	@echo "== release build: $(CARGO) rustc -p mtipc --release --lib -- --print native-static-libs"
	@if ! $(CARGO) rustc -p mtipc --release --lib -- --print native-static-libs > $(C_OUT)/release-build.log 2>&1; then \
	   cat $(C_OUT)/release-build.log >&2; echo "install: the release build failed" >&2; exit 1; \
	 fi; \
	 libs=$$(sed -n 's/^note: native-static-libs: //p' $(C_OUT)/release-build.log | tail -n 1); \
	 test -n "$$libs" || { cat $(C_OUT)/release-build.log >&2; echo "install: cargo did not print native-static-libs" >&2; exit 1; }; \
	 test -n "$(MTIPC_VERSION)" || { echo "install: no version in Cargo.toml" >&2; exit 1; }; \
	 soname=$$($(READELF) -d $(RELEASE_DIR)/libmtipc.so | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p'); \
	 test "$$soname" = "libmtipc.so.$(MTIPC_MAJOR)" || \
	   { echo "install: $(RELEASE_DIR)/libmtipc.so has soname '$$soname', expected libmtipc.so.$(MTIPC_MAJOR)" >&2; exit 1; }; \
	 sed -e 's|@PREFIX@|$(PREFIX)|g' \
	     -e 's|@LIBDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))|g' \
	     -e 's|@INCLUDEDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))|g' \
	     -e 's|@VERSION@|$(MTIPC_VERSION)|g' \
	     -e "s|@LIBS_PRIVATE@|$$libs|g" mtipc.pc.in > $(C_OUT)/mtipc.pc
	$(INSTALL) -d "$(DESTDIR)$(LIBDIR)" "$(DESTDIR)$(INCLUDEDIR)" "$(DESTDIR)$(PKGCONFIGDIR)"
	$(INSTALL) -m 0755 $(RELEASE_DIR)/libmtipc.so "$(DESTDIR)$(LIBDIR)/libmtipc.so.$(MTIPC_VERSION)"
	ln -sfn libmtipc.so.$(MTIPC_VERSION) "$(DESTDIR)$(LIBDIR)/libmtipc.so.$(MTIPC_MAJOR)"
	ln -sfn libmtipc.so.$(MTIPC_MAJOR) "$(DESTDIR)$(LIBDIR)/libmtipc.so"
	$(INSTALL) -m 0644 $(RELEASE_DIR)/libmtipc.a "$(DESTDIR)$(LIBDIR)/libmtipc.a"
	$(INSTALL) -m 0644 include/mtipc.h include/mtipc.hpp "$(DESTDIR)$(INCLUDEDIR)/"
	$(INSTALL) -m 0644 $(C_OUT)/mtipc.pc "$(DESTDIR)$(PKGCONFIGDIR)/mtipc.pc"
	@echo "== installed mtipc $(MTIPC_VERSION) into $(DESTDIR)$(PREFIX) (run ldconfig if $(LIBDIR) is a system library directory)"

# Installs into a temporary prefix and uses it the way an application would:
# the examples are compiled with `pkg-config --cflags --libs mtipc` (C and
# C++) and run with LD_LIBRARY_PATH (the tenants advertise, then stop on
# SIGTERM: no daemon is needed for that); c_domain is also linked statically
# (`pkg-config --static`, libmtipc.a) and runs without the shared library.
# Then a staged install (DESTDIR) is checked to put the same files under
# DESTDIR with a pkg-config file naming the real prefix. (deps: pkg-config.)
test-install: deps
	@set -eu; \
	tmp=$$(mktemp -d "$${TMPDIR:-/tmp}/mtipc-install.XXXXXX"); \
	trap 'rm -rf "$$tmp"' EXIT; \
	prefix="$$tmp/prefix"; \
	fail() { echo "test-install: $$*" >&2; exit 1; }; \
	$(MAKE) --no-print-directory install DESTDIR= PREFIX="$$prefix" LIBDIR="$$prefix/lib" \
	  INCLUDEDIR="$$prefix/include" PKGCONFIGDIR="$$prefix/lib/pkgconfig"; \
	echo "== installed files"; \
	(cd "$$prefix" && find . \( -type f -o -type l \) | sort | sed 's/^/   /'); \
	lib="$$prefix/lib"; \
	for f in libmtipc.so.$(MTIPC_VERSION) libmtipc.a pkgconfig/mtipc.pc; do test -f "$$lib/$$f" || fail "missing lib/$$f"; done; \
	for f in mtipc.h mtipc.hpp; do cmp -s "include/$$f" "$$prefix/include/$$f" || fail "include/$$f not installed as is"; done; \
	test "$$(readlink "$$lib/libmtipc.so.$(MTIPC_MAJOR)")" = libmtipc.so.$(MTIPC_VERSION) || fail "bad link libmtipc.so.$(MTIPC_MAJOR)"; \
	test "$$(readlink "$$lib/libmtipc.so")" = libmtipc.so.$(MTIPC_MAJOR) || fail "bad link libmtipc.so"; \
	$(READELF) -d "$$lib/libmtipc.so.$(MTIPC_VERSION)" | grep -q 'Library soname: \[libmtipc.so.$(MTIPC_MAJOR)\]' || fail "wrong soname"; \
	export PKG_CONFIG_PATH="$$lib/pkgconfig"; \
	echo "== PKG_CONFIG_PATH=$$PKG_CONFIG_PATH"; \
	echo "   pkg-config --modversion mtipc: $$($(PKG_CONFIG) --modversion mtipc)"; \
	echo "   pkg-config --cflags --libs mtipc: $$($(PKG_CONFIG) --cflags --libs mtipc)"; \
	echo "   pkg-config --static --libs mtipc: $$($(PKG_CONFIG) --static --libs mtipc)"; \
	test "$$($(PKG_CONFIG) --modversion mtipc)" = "$(MTIPC_VERSION)" || fail "pkg-config version is not $(MTIPC_VERSION)"; \
	echo "== C example, shared library"; \
	( set -x; $(CC) $(C_WARN) -std=c11 examples/c_domain.c $$($(PKG_CONFIG) --cflags --libs mtipc) -o "$$tmp/c_domain" ); \
	$(READELF) -d "$$tmp/c_domain" | grep -q 'NEEDED.*\[libmtipc.so.$(MTIPC_MAJOR)\]' || fail "c_domain does not need libmtipc.so.$(MTIPC_MAJOR)"; \
	LD_LIBRARY_PATH="$$lib" "$$tmp/c_domain" "$$tmp/domain-c" > "$$tmp/out" || { cat "$$tmp/out"; fail "c_domain failed"; }; \
	sed 's/^/   | /' "$$tmp/out"; \
	grep -qx "domain $$tmp/domain-c, semaphore 0" "$$tmp/out" || fail "unexpected output from c_domain"; \
	grep -qx "mtipc $(MTIPC_VERSION)" "$$tmp/out" || fail "c_domain did not load mtipc $(MTIPC_VERSION)"; \
	echo "== C++ example, shared library"; \
	( set -x; $(CXX) $(C_WARN) -std=c++17 examples/cpp_domain.cpp $$($(PKG_CONFIG) --cflags --libs mtipc) -o "$$tmp/cpp_domain" ); \
	LD_LIBRARY_PATH="$$lib" "$$tmp/cpp_domain" "$$tmp/domain-cpp" > "$$tmp/out" || { cat "$$tmp/out"; fail "cpp_domain failed"; }; \
	sed 's/^/   | /' "$$tmp/out"; \
	grep -qx "domain $$tmp/domain-cpp, semaphore 0" "$$tmp/out" || fail "unexpected output from cpp_domain"; \
	echo "== C and C++ tenants, shared library: advertise, then stop on SIGTERM"; \
	for t in c_tenant.c cpp_tenant.cpp; do \
	  case $$t in *.c) comp="$(CC) -std=c11";; *) comp="$(CXX) -std=c++17";; esac; \
	  ( set -x; $$comp $(C_WARN) examples/$$t $$($(PKG_CONFIG) --cflags --libs mtipc) -o "$$tmp/$${t%.*}" ); \
	  LD_LIBRARY_PATH="$$lib" "$$tmp/$${t%.*}" "$$tmp/domain-tenants" > "$$tmp/out" 2>&1 & pid=$$!; \
	  for i in $$(seq 100); do grep -q "advertised" "$$tmp/out" && break; sleep 0.05; done; \
	  kill -TERM $$pid; wait $$pid || { cat "$$tmp/out"; fail "$${t%.*} did not stop cleanly"; }; \
	  sed 's/^/   | /' "$$tmp/out"; \
	  grep -q "withdrawn" "$$tmp/out" || fail "$${t%.*} was not advertised and withdrawn"; \
	done; \
	echo "== C example, static library (-lmtipc becomes -l:libmtipc.a so the linker takes the archive)"; \
	static_libs=$$($(PKG_CONFIG) --static --libs mtipc | sed 's/\(^\| \)-lmtipc\( \|$$\)/\1-l:libmtipc.a\2/'); \
	( set -x; $(CC) $(C_WARN) -std=c11 examples/c_domain.c $$($(PKG_CONFIG) --cflags mtipc) $$static_libs -o "$$tmp/c_domain_static" ); \
	if $(READELF) -d "$$tmp/c_domain_static" | grep -q 'NEEDED.*libmtipc'; then fail "c_domain_static still needs libmtipc.so"; fi; \
	env -u LD_LIBRARY_PATH "$$tmp/c_domain_static" "$$tmp/domain-static" > "$$tmp/out" || { cat "$$tmp/out"; fail "c_domain_static failed"; }; \
	sed 's/^/   | /' "$$tmp/out"; \
	grep -qx "domain $$tmp/domain-static, semaphore 0" "$$tmp/out" || fail "unexpected output from c_domain_static"; \
	echo "== staged install: DESTDIR=$$tmp/stage PREFIX=/opt/mtipc"; \
	$(MAKE) --no-print-directory install DESTDIR="$$tmp/stage" PREFIX=/opt/mtipc LIBDIR=/opt/mtipc/lib \
	  INCLUDEDIR=/opt/mtipc/include PKGCONFIGDIR=/opt/mtipc/lib/pkgconfig > /dev/null; \
	(cd "$$prefix" && find . \( -type f -o -type l \) | sort) > "$$tmp/want"; \
	(cd "$$tmp/stage/opt/mtipc" && find . \( -type f -o -type l \) | sort) > "$$tmp/got"; \
	cmp -s "$$tmp/want" "$$tmp/got" || { diff "$$tmp/want" "$$tmp/got" >&2 || true; fail "the staged install has other files"; }; \
	grep -qx 'prefix=/opt/mtipc' "$$tmp/stage/opt/mtipc/lib/pkgconfig/mtipc.pc" || fail "staged mtipc.pc does not name prefix /opt/mtipc"; \
	echo "== test-install: passed"
