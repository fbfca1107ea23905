// A tiny test harness for the C++ tests of mtipc (header only; the C tests
// have tests/c/mt_test.h).
//
// Each tests/cpp/<name>.cpp is its own program: it calls its test functions
// with run(name, fn) and returns mt_test_exit(program) from main, which is
// nonzero if any CHECK failed. A failed CHECK prints file:line and the
// condition, then keeps going with the next statement; an exception that
// escapes a test function is a failure of that function.
//
// Also: scratch directories (mkdtemp under the temp directory) removed
// recursively at the end of their scope.
#ifndef MT_TEST_HPP
#define MT_TEST_HPP

#include <mtipc.hpp>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <iostream>
#include <string>
#include <system_error>
#include <vector>

#include <stdlib.h>

inline int mt_test_failures = 0;
inline int mt_test_checks = 0;

// CHECK(cond): records a failure and continues.
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        ++mt_test_checks;                                                                          \
        if (!(cond)) {                                                                             \
            ++mt_test_failures;                                                                    \
            std::cerr << __FILE__ << ":" << __LINE__ << ": CHECK failed: " #cond "\n";             \
        }                                                                                          \
    } while (0)

// CHECK_THROWS(code, needle, statement): the statement must throw mtipc::Error
// with `code` and a message containing `needle`.
#define CHECK_THROWS(code_, needle, ...)                                                           \
    do {                                                                                           \
        ++mt_test_checks;                                                                          \
        try {                                                                                      \
            __VA_ARGS__;                                                                           \
            ++mt_test_failures;                                                                    \
            std::cerr << __FILE__ << ":" << __LINE__ << ": no exception from " #__VA_ARGS__ "\n";  \
        } catch (const mtipc::Error &e) {                                                          \
            if (e.code() != (code_) || e.message().find(needle) == std::string::npos) {            \
                ++mt_test_failures;                                                                \
                std::cerr << __FILE__ << ":" << __LINE__ << ": " #__VA_ARGS__ " threw " << e.what() \
                          << ", expected " << mt_status_str(code_) << " mentioning \"" << (needle) \
                          << "\"\n";                                                               \
            }                                                                                      \
        }                                                                                          \
    } while (0)

// A scratch directory (mode 0700) removed (recursively) at the end of its scope.
struct Scratch {
    std::filesystem::path dir;
    explicit Scratch(const char *tag) {
        std::string tmpl = (std::filesystem::temp_directory_path() /
                            (std::string("mtipc-cpptest-") + tag + "-XXXXXX"))
                               .string();
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        if (mkdtemp(buf.data()) == nullptr) {
            std::perror("mkdtemp");
            std::abort();
        }
        dir = buf.data();
    }
    ~Scratch() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
    Scratch(const Scratch &) = delete;
    Scratch &operator=(const Scratch &) = delete;
};

// Runs one test function and says whether it passed.
inline void run(const char *name, const std::function<void()> &f) {
    int before = mt_test_failures;
    try {
        f();
    } catch (const std::exception &e) {
        ++mt_test_failures;
        std::cerr << name << ": unexpected exception: " << e.what() << "\n";
    }
    std::cout << (mt_test_failures == before ? "ok   " : "FAIL ") << name << std::endl;
}

// The exit status for main: 0 if every check passed.
inline int mt_test_exit(const char *program) {
    if (mt_test_failures) {
        std::cerr << program << ": " << mt_test_failures << " of " << mt_test_checks
                  << " checks FAILED\n";
        return 1;
    }
    std::cout << program << ": all " << mt_test_checks << " checks passed\n";
    return 0;
}

#endif // MT_TEST_HPP
