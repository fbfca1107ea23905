# C and C++: tests against include/ and libmtipc.so, install, pkg-config.
# (filled in by the C/C++ work)
.PHONY: test-c test-cpp test-install install
test-c:
test-cpp:
test-install:
install:
