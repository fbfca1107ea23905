// The C++ wrapper (include/mtipc.hpp): RAII and move semantics, Error with
// the right code and message, the semaphore operations, timeouts returning
// false, the path() size protocol, and a moved-from Domain being harmless.
#include <mtipc.hpp>

#include "mt_test.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <mutex>
#include <string>
#include <tuple>
#include <thread>
#include <type_traits>
#include <unistd.h>
#include <vector>

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// Compile-time properties of the wrapper.
static_assert(!std::is_copy_constructible_v<mtipc::Domain>, "Domain is move-only");
static_assert(!std::is_copy_assignable_v<mtipc::Domain>, "Domain is move-only");
static_assert(std::is_nothrow_move_constructible_v<mtipc::Domain>, "moves do not throw");
static_assert(std::is_nothrow_move_assignable_v<mtipc::Domain>, "moves do not throw");
static_assert(std::is_base_of_v<std::runtime_error, mtipc::Error>, "Error is a runtime_error");
static_assert(!std::is_convertible_v<const char *, mtipc::Domain>, "opening is explicit");

void version_matches_header() {
    CHECK(std::strcmp(mtipc::version(), MTIPC_VERSION_STRING) == 0);
}

void open_and_path() {
    Scratch s("open");
    const fs::path dom = s.dir / "dom";
    mtipc::Domain d(dom.string());
    CHECK(d.native_handle() != nullptr);
    CHECK(d.path() == dom.string());
    CHECK(fs::is_directory(dom));
    // Also from a const char *, and a second handle on the same domain.
    mtipc::Domain again(dom.c_str());
    CHECK(again.path() == dom.string());
    CHECK(again.native_handle() != d.native_handle());
}

void long_path_needs_the_size_protocol() {
    // Longer than the wrapper's first 256-byte buffer: path() must retry.
    Scratch s("longpath");
    fs::path dom = s.dir;
    for (int i = 0; i < 6; ++i) {
        dom /= std::string(60, static_cast<char>('a' + i));
        fs::create_directory(dom);
        fs::permissions(dom, fs::perms::owner_all, fs::perm_options::replace);
    }
    dom /= "dom";
    CHECK(dom.string().size() > 256);
    mtipc::Domain d(dom.string());
    CHECK(d.path() == dom.string());
}

void default_domain_from_environment() {
    Scratch s("env");
    const fs::path dom = s.dir / "env-dom";
    CHECK(setenv("MTIPC_DOMAIN", dom.c_str(), 1) == 0);
    {
        mtipc::Domain a;
        CHECK(a.path() == dom.string());
        mtipc::Domain b(nullptr);
        CHECK(b.path() == dom.string());
        mtipc::Domain c(std::nullopt);
        CHECK(c.path() == dom.string());
        mtipc::Domain e(static_cast<const char *>(nullptr));
        CHECK(e.path() == dom.string());
    }
    unsetenv("MTIPC_DOMAIN");
}

void move_semantics() {
    Scratch s("move");
    const std::string dom = (s.dir / "dom").string();
    mtipc::Domain a(dom);
    mt_domain *h = a.native_handle();

    mtipc::Domain b(std::move(a));
    CHECK(b.native_handle() == h);
    CHECK(a.native_handle() == nullptr); // NOLINT(bugprone-use-after-move): on purpose
    b.sem_post(2);
    CHECK(b.sem_value() == 2);

    // A moved-from Domain throws MT_ERR_INVALID for every call, never crashes.
    CHECK_THROWS(MT_ERR_INVALID, "NULL", a.sem_post(1));
    CHECK_THROWS(MT_ERR_INVALID, "NULL", a.sem_wait(0ms));
    CHECK_THROWS(MT_ERR_INVALID, "NULL", a.sem_wait());
    CHECK_THROWS(MT_ERR_INVALID, "NULL", a.sem_value());
    CHECK_THROWS(MT_ERR_INVALID, "NULL", a.sem_reset());
    CHECK_THROWS(MT_ERR_INVALID, "NULL", a.path());

    // Move assignment: the target's old handle is closed, the source emptied.
    mtipc::Domain c(dom);
    c = std::move(b);
    CHECK(c.native_handle() == h);
    CHECK(b.native_handle() == nullptr); // NOLINT(bugprone-use-after-move)
    CHECK(c.sem_value() == 2);
    // Into a moved-from object, and back.
    a = std::move(c);
    CHECK(a.native_handle() == h);
    CHECK(a.sem_reset() == 2);
    // Self-move leaves the handle in place.
    mtipc::Domain &alias = a;
    a = std::move(alias);
    CHECK(a.native_handle() == h);
    // Moved-from b and c are destroyed at the end of the scope: harmless.

    // Domains in a container survive reallocation (moves).
    std::vector<mtipc::Domain> v;
    for (int i = 0; i < 20; ++i) v.emplace_back(dom);
    v.front().sem_post(1);
    CHECK(v.back().sem_value() == 1);
    CHECK(v.back().sem_wait(0ms));
}

void errors_carry_code_and_message() {
    Scratch s("errors");
    // A regular file where the directory should be.
    const fs::path file = s.dir / "file";
    { std::FILE *f = std::fopen(file.c_str(), "w"); CHECK(f != nullptr); if (f) std::fclose(f); }
    CHECK_THROWS(MT_ERR_INVALID, file.string(), mtipc::Domain d(file.string()));
    // Missing parent.
    CHECK_THROWS(MT_ERR_NOT_FOUND, "no/such", mtipc::Domain d((s.dir / "no/such/dom").string()));
    // Empty path.
    CHECK_THROWS(MT_ERR_INVALID, "empty", mtipc::Domain d{std::string()});
    // A symbolic link.
    const fs::path real = s.dir / "real";
    { mtipc::Domain d(real.string()); }
    fs::create_directory_symlink(real, s.dir / "link");
    CHECK_THROWS(MT_ERR_DENIED, "symbolic link", mtipc::Domain d((s.dir / "link").string()));
    // Group-writable.
    fs::permissions(real, fs::perms::owner_all | fs::perms::group_all, fs::perm_options::replace);
    CHECK_THROWS(MT_ERR_DENIED, "0770", mtipc::Domain d(real.string()));

    // The exception's parts.
    try {
        mtipc::Domain d(file.string());
        CHECK(false);
    } catch (const mtipc::Error &e) {
        CHECK(e.code() == MT_ERR_INVALID);
        CHECK(std::strcmp(e.name(), "MT_ERR_INVALID") == 0);
        CHECK(e.message() == mt_last_error());
        CHECK(std::string(e.what()) == e.message() + " (MT_ERR_INVALID)");
        // Catchable as std::runtime_error too.
        const std::runtime_error &base = e;
        CHECK(std::string(base.what()).find(file.string()) != std::string::npos);
    }

    // check() itself.
    try {
        mtipc::check(MT_OK);
        CHECK(true);
    } catch (...) {
        CHECK(false);
    }
    CHECK_THROWS(MT_ERR_FULL, "", mtipc::check(MT_ERR_FULL));
}

void semaphore_operations() {
    Scratch s("sem");
    mtipc::Domain d((s.dir / "dom").string());
    CHECK(d.sem_value() == 0);
    d.sem_post();
    d.sem_post(3);
    CHECK(d.sem_value() == 4);
    CHECK(d.sem_wait());      // no limit, but a unit is there
    CHECK(d.sem_wait(0ms));   // do not block
    CHECK(d.sem_wait(10s));   // returns at once
    CHECK(d.sem_value() == 1);
    CHECK(d.sem_reset() == 1);
    CHECK(d.sem_value() == 0);
    CHECK(d.sem_reset() == 0);

    // Timeouts return false, after about the time asked.
    auto t0 = std::chrono::steady_clock::now();
    CHECK(!d.sem_wait(0ms));
    CHECK(!d.sem_wait(-5ms)); // negative: do not block
    CHECK(!d.sem_wait(50ms));
    auto took = std::chrono::steady_clock::now() - t0;
    CHECK(took >= 49ms);
    CHECK(took < 5s);
    CHECK(d.sem_value() == 0);

    // The count limit is an Error, not a silent wrap.
    d.sem_post(0x7fffffffu);
    CHECK_THROWS(MT_ERR_INVALID, "", d.sem_post(1));
    CHECK(d.sem_reset() == 0x7fffffffu);

    // A timeout too long for the C call does not overflow (it is clamped to
    // the longest finite one), and a waiter blocked with it is woken by a
    // post from another thread.
    bool woke = false;
    std::thread t([&] {
        mtipc::Domain mine((s.dir / "dom").string());
        woke = mine.sem_wait(std::chrono::milliseconds::max());
    });
    std::this_thread::sleep_for(50ms);
    d.sem_post(1);
    t.join();
    CHECK(woke);
    CHECK(d.sem_value() == 0);

    // Durations of other units convert.
    d.sem_post(1);
    CHECK(d.sem_wait(std::chrono::seconds(1)));
    CHECK(!d.sem_wait(std::chrono::seconds(0)));
}

// mtipc::set_log: a std::function receives the library's events up to
// its level (a lambda with captures), an empty function removes it, a bad
// level throws and keeps the previous logger.
void log_callback() {
    Scratch s("cpp-log");
    mtipc::Domain d((s.dir / "dom").string());
    std::mutex m;
    std::vector<std::tuple<mt_log_level, std::string, std::string>> got;
    auto count = [&](const std::string &needle) {
        std::lock_guard<std::mutex> lock(m);
        int n = 0;
        for (auto &e : got) n += std::get<2>(e).find(needle) != std::string::npos;
        return n;
    };
    mtipc::set_log(
        [&](mt_log_level level, std::string_view target, std::string_view message) {
            std::lock_guard<std::mutex> lock(m);
            got.emplace_back(level, std::string(target), std::string(message));
        },
        MT_LOG_DEBUG);
    mtipc::publish_bytes(d, "cfg", "x");
    CHECK(count("published closure") == 1);
    {
        std::lock_guard<std::mutex> lock(m);
        CHECK(!got.empty() && std::get<0>(got.back()) == MT_LOG_DEBUG);
        CHECK(!got.empty() && std::get<1>(got.back()) == "mtipc::closure::store");
    }
    CHECK_THROWS(MT_ERR_INVALID, "max_level 9", mtipc::set_log([](auto, auto, auto) {},
                                                                static_cast<mt_log_level>(9)));
    mtipc::publish_bytes(d, "cfg", "y"); // the previous logger still runs
    CHECK(count("published closure") == 2);
    mtipc::set_log(nullptr);
    mtipc::publish_bytes(d, "cfg", "z");
    CHECK(count("published closure") == 2);
}

} // namespace

int main() {
    run("version_matches_header", version_matches_header);
    run("open_and_path", open_and_path);
    run("long_path_needs_the_size_protocol", long_path_needs_the_size_protocol);
    run("default_domain_from_environment", default_domain_from_environment);
    run("move_semantics", move_semantics);
    run("errors_carry_code_and_message", errors_carry_code_and_message);
    run("semaphore_operations", semaphore_operations);
    run("log_callback", log_callback);
    return mt_test_exit("test_wrapper");
}
