// The attach part of the C++ wrapper (include/mtipc.hpp): mtipc::Advert,
// mtipc::attach and AttachOptions, mtipc::Conn, mtipc::list_tenants. The
// test starts its own mtipcd ($MTIPCD, else target/debug/mtipcd) on a
// scratch domain, advertises tenants in this process and attaches to them
// from this process. Covers RAII and moves, Error codes, the receive
// buffer's growth, timeouts, the end of a connection, exceptions thrown by
// handlers (reported, never crossing into C), and handler lifetimes after
// an Advert is gone.
#include <mtipc.hpp>

#include "mt_test.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <signal.h>
#include <spawn.h>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <type_traits>
#include <unistd.h>
#include <vector>

extern char **environ;

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// Polls `cond` every 5 ms for at most `limit`.
bool eventually(const std::function<bool()> &cond, std::chrono::milliseconds limit = 5s) {
    for (auto t0 = Clock::now(); Clock::now() - t0 < limit; std::this_thread::sleep_for(5ms)) {
        if (cond()) return true;
    }
    return cond();
}

bool listed(const mtipc::Domain &d, const std::string &id, std::uint32_t pid = 0) {
    for (const auto &t : mtipc::list_tenants(d)) {
        if (t.id == id && (pid == 0 || t.pid == pid)) return true;
    }
    return false;
}

// mtipcd on a domain, as a child process: started by the constructor
// (which waits until it advertises), stopped with SIGTERM by stop().
class Daemon {
public:
    explicit Daemon(const mtipc::Domain &d) {
        const char *env = std::getenv("MTIPCD");
        std::string exe = env && *env ? env : "target/debug/mtipcd";
        std::string dom = d.path();
        std::vector<char *> argv = {exe.data(), const_cast<char *>("--domain"), dom.data(),
                                    const_cast<char *>("--log"), const_cast<char *>("warn"),
                                    nullptr};
        int rc = posix_spawn(&pid_, exe.c_str(), nullptr, nullptr, argv.data(), environ);
        if (rc != 0) {
            pid_ = -1;
            throw std::runtime_error("cannot start " + exe + ": " + std::strerror(rc) +
                                     " (set MTIPCD)");
        }
        if (!eventually([&] { return listed(d, "@mtipcd", static_cast<std::uint32_t>(pid_)); },
                        10s)) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
            pid_ = -1;
            throw std::runtime_error(exe + " did not advertise within 10 s");
        }
    }
    Daemon(const Daemon &) = delete;
    Daemon &operator=(const Daemon &) = delete;
    ~Daemon() { stop(); }

    pid_t pid() const { return pid_; }

    // SIGTERM, then its exit status (-1: not a clean exit within 10 s, or not running).
    int stop() {
        if (pid_ <= 0) return -1;
        const pid_t pid = std::exchange(pid_, -1);
        kill(pid, SIGTERM);
        int status = 0;
        for (auto t0 = Clock::now(); Clock::now() - t0 < 10s; std::this_thread::sleep_for(10ms)) {
            if (waitpid(pid, &status, WNOHANG) == pid) {
                return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            }
        }
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
        return -1;
    }

private:
    pid_t pid_ = -1;
};

// Counters a tenant's handler keeps.
struct Stats {
    std::atomic<int> attached{0};
    std::atomic<int> closed{0};
};

// An echo handler: replies to every message with the same bytes; "close"
// closes the connection, "sleep:N" waits N ms first.
mtipc::Handler echo(std::shared_ptr<Stats> stats) {
    return [stats](mtipc::Conn c) {
        ++stats->attached;
        try {
            for (;;) {
                std::string m = c.recv();
                if (m == "close") return;
                if (m.rfind("sleep:", 0) == 0) {
                    std::this_thread::sleep_for(std::chrono::milliseconds(std::stoi(m.substr(6))));
                }
                c.send(m);
            }
        } catch (const mtipc::Error &e) {
            if (e.code() == MT_ERR_CLOSED) ++stats->closed;
            throw;
        }
    };
}

std::string pattern(std::size_t n) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 131 + (i >> 10));
    return s;
}

// Captures what this process writes to stderr (fd 2) while it lives.
class StderrCapture {
public:
    explicit StderrCapture(const fs::path &file) : file_(file) {
        std::fflush(stderr);
        saved_ = dup(2);
        std::FILE *f = std::fopen(file.c_str(), "w");
        if (f) {
            dup2(fileno(f), 2);
            std::fclose(f);
        }
    }
    ~StderrCapture() {
        std::fflush(stderr);
        dup2(saved_, 2);
        close(saved_);
    }
    std::string text() const {
        std::ifstream in(file_);
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
    }
    StderrCapture(const StderrCapture &) = delete;
    StderrCapture &operator=(const StderrCapture &) = delete;

private:
    fs::path file_;
    int saved_ = -1;
};

// Compile-time properties.
static_assert(!std::is_copy_constructible_v<mtipc::Conn>, "Conn is move-only");
static_assert(!std::is_copy_assignable_v<mtipc::Conn>, "Conn is move-only");
static_assert(std::is_nothrow_move_constructible_v<mtipc::Conn>, "moves do not throw");
static_assert(std::is_nothrow_move_assignable_v<mtipc::Conn>, "moves do not throw");
static_assert(!std::is_copy_constructible_v<mtipc::Advert>, "Advert is move-only");
static_assert(!std::is_copy_assignable_v<mtipc::Advert>, "Advert is move-only");
static_assert(std::is_nothrow_move_constructible_v<mtipc::Advert>, "moves do not throw");
static_assert(std::is_nothrow_move_assignable_v<mtipc::Advert>, "moves do not throw");
static_assert(!std::is_convertible_v<mt_conn *, mtipc::Conn>, "adopting a handle is explicit");
static_assert(std::is_same_v<decltype(std::declval<mtipc::Conn &>().recv()), std::string>,
              "recv() without a limit returns the message");
static_assert(std::is_same_v<decltype(std::declval<mtipc::Conn &>().recv(1ms)),
                             std::optional<std::string>>,
              "recv(timeout) returns std::nullopt on timeout");

struct Fixture {
    Scratch scratch{"attach"};
    mtipc::Domain d{(scratch.dir / "dom").string()};
    std::unique_ptr<Daemon> daemon;
    std::shared_ptr<Stats> echo_stats = std::make_shared<Stats>();
    mtipc::Advert echo_ad;
};

Fixture *fx = nullptr;

void without_daemon() {
    CHECK_THROWS(MT_ERR_UNAVAILABLE, "mtipcd is not running", mtipc::attach(fx->d, "cpp-anyone"));
    // The tenant list works without a daemon: it is just empty.
    CHECK(mtipc::list_tenants(fx->d).empty());
}

void errors_carry_codes() {
    auto stats = std::make_shared<Stats>();
    CHECK_THROWS(MT_ERR_INVALID, "handler is empty", mtipc::Advert(fx->d, "cpp-x", nullptr));
    CHECK_THROWS(MT_ERR_INVALID, "empty", mtipc::Advert(fx->d, "", echo(stats)));
    CHECK_THROWS(MT_ERR_INVALID, "", mtipc::Advert(fx->d, ".dot", echo(stats)));
    CHECK_THROWS(MT_ERR_INVALID, "", mtipc::Advert(fx->d, "@mtipcd", echo(stats)));
    CHECK_THROWS(MT_ERR_INVALID, "", mtipc::Advert(fx->d, std::string(65, 'x'), echo(stats)));
    CHECK_THROWS(MT_ERR_INVALID, "", mtipc::Advert(fx->d, "cpp-x", echo(stats), "Echo"));
    CHECK_THROWS(MT_ERR_INVALID, "", mtipc::Advert(fx->d, "cpp-x", echo(stats), ""));
    CHECK_THROWS(MT_ERR_EXISTS, "cpp-echo", mtipc::Advert(fx->d, "cpp-echo", echo(stats)));
    CHECK_THROWS(MT_ERR_NOT_FOUND, "cpp-nobody", mtipc::attach(fx->d, "cpp-nobody"));
    CHECK_THROWS(MT_ERR_INVALID, "", mtipc::attach(fx->d, "bad id"));
    mtipc::AttachOptions o;
    o.protocol = "xml";
    CHECK_THROWS(MT_ERR_NOT_FOUND, "xml", mtipc::attach(fx->d, "cpp-echo", o));
    o.protocol = std::string(33, 'p');
    CHECK_THROWS(MT_ERR_INVALID, "protocol", mtipc::attach(fx->d, "cpp-echo", o));
    // A moved-from (empty) Domain.
    mtipc::Domain moved((fx->scratch.dir / "dom").string());
    mtipc::Domain taker(std::move(moved));
    CHECK_THROWS(MT_ERR_INVALID, "NULL", mtipc::attach(moved, "cpp-echo"));
    CHECK_THROWS(MT_ERR_INVALID, "NULL", mtipc::list_tenants(moved));
    CHECK_THROWS(MT_ERR_INVALID, "NULL", mtipc::Advert(moved, "cpp-x", echo(stats)));
    CHECK(stats->attached == 0);
    // Failed constructions leave nothing registered or advertised.
    CHECK(!listed(fx->d, "cpp-x"));
}

void echo_sizes_and_buffer_growth() {
    mtipc::Conn c = mtipc::attach(fx->d, "cpp-echo");
    CHECK(static_cast<bool>(c));
    // Around the wrapper's first 4 KiB buffer, and up to the 1 MiB limit.
    for (std::size_t n : {std::size_t(0), std::size_t(1), std::size_t(4095), std::size_t(4096),
                          std::size_t(4097), std::size_t(64 * 1024), std::size_t(1024 * 1024)}) {
        const std::string m = pattern(n);
        c.send(m);
        std::string back = c.recv();
        if (back != m) {
            std::cerr << "echo of " << n << " bytes came back as " << back.size() << " bytes\n";
            CHECK(false);
        }
    }
    // Binary data with NULs, through the pointer overload.
    const unsigned char raw[] = {0, 1, 0, 255, 0};
    c.send(raw, sizeof raw);
    CHECK(c.recv() == std::string("\0\1\0\xff\0", 5));
#if defined(__cpp_lib_span)
    // C++20: bytes as a span.
    const std::byte bytes[] = {std::byte{1}, std::byte{0}, std::byte{2}};
    c.send(std::span<const std::byte>(bytes));
    CHECK(c.recv() == std::string("\1\0\2", 3));
#endif
    // A big one polled with a zero timeout while it arrives: whole, once.
    const std::string big = pattern(1024 * 1024);
    c.send(big);
    std::optional<std::string> got;
    for (auto t0 = Clock::now(); !got && Clock::now() - t0 < 10s;) got = c.recv(0ms);
    CHECK(got && *got == big);
    CHECK(!c.recv(0ms));
    // Over the limit.
    CHECK_THROWS(MT_ERR_INVALID, "limit", c.send(std::string(1024 * 1024 + 1, 'x')));
    c.send("still fine");
    CHECK(c.recv(10s) == std::optional<std::string>("still fine"));
}

void recv_timeout_returns_nullopt() {
    mtipc::Conn c = mtipc::attach(fx->d, "cpp-echo");
    auto t0 = Clock::now();
    CHECK(!c.recv(0ms));
    CHECK(!c.recv(-5ms));
    CHECK(!c.recv(50ms));
    CHECK(Clock::now() - t0 >= 45ms);
    // The reply comes after 300 ms: nothing is lost by timing out before.
    c.send("sleep:300");
    CHECK(!c.recv(50ms));
    CHECK(c.recv(std::nullopt) == std::optional<std::string>("sleep:300"));
    c.send("sleep:100");
    CHECK(c.recv(std::chrono::seconds(5)) == std::optional<std::string>("sleep:100"));
}

void end_of_connection_is_closed() {
    // The tenant closes.
    mtipc::Conn c = mtipc::attach(fx->d, "cpp-echo");
    c.send("close");
    CHECK_THROWS(MT_ERR_CLOSED, "", c.recv());
    CHECK_THROWS(MT_ERR_CLOSED, "", c.recv(0ms));
    bool send_closed = eventually([&] {
        try {
            c.send("x");
            return false;
        } catch (const mtipc::Error &e) {
            return e.code() == MT_ERR_CLOSED;
        }
    });
    CHECK(send_closed);

    // The attacher closes (destructor, close(), move assignment): the tenant sees MT_ERR_CLOSED.
    const int closed = fx->echo_stats->closed;
    {
        mtipc::Conn a = mtipc::attach(fx->d, "cpp-echo");
        a.send("a");
        CHECK(a.recv() == "a");
    }
    CHECK(eventually([&] { return fx->echo_stats->closed >= closed + 1; }));
    mtipc::Conn b = mtipc::attach(fx->d, "cpp-echo");
    b.send("b");
    CHECK(b.recv() == "b");
    b.close();
    CHECK(!b);
    b.close(); // twice is fine
    CHECK(eventually([&] { return fx->echo_stats->closed >= closed + 2; }));
    CHECK_THROWS(MT_ERR_INVALID, "NULL", b.send("after close"));
}

void conn_moves() {
    mtipc::Conn a = mtipc::attach(fx->d, "cpp-echo");
    mt_conn *h = a.native_handle();
    CHECK(h != nullptr);
    mtipc::Conn b(std::move(a));
    CHECK(b.native_handle() == h);
    CHECK(!a); // NOLINT(bugprone-use-after-move): on purpose
    CHECK(a.native_handle() == nullptr);
    CHECK_THROWS(MT_ERR_INVALID, "NULL", a.send("x"));
    CHECK_THROWS(MT_ERR_INVALID, "NULL", a.recv());
    CHECK_THROWS(MT_ERR_INVALID, "NULL", a.recv(0ms));
    b.send("moved");
    CHECK(b.recv() == "moved");

    // Move assignment closes the target's connection (its tenant sees MT_ERR_CLOSED).
    const int closed = fx->echo_stats->closed;
    mtipc::Conn c = mtipc::attach(fx->d, "cpp-echo");
    c = std::move(b);
    CHECK(c.native_handle() == h);
    CHECK(eventually([&] { return fx->echo_stats->closed >= closed + 1; }));
    mtipc::Conn &alias = c;
    c = std::move(alias); // self-move keeps it
    CHECK(c.native_handle() == h);
    c.send("still");
    CHECK(c.recv() == "still");

    // Into a container (moves on reallocation), and a default-constructed one.
    std::vector<mtipc::Conn> v;
    v.push_back(std::move(c));
    v.emplace_back();
    v.push_back(mtipc::attach(fx->d, "cpp-echo"));
    CHECK(!v[1]);
    for (auto &x : v) {
        if (!x) continue;
        x.send("v");
        CHECK(x.recv() == "v");
    }

    // release(): the C handle changes hands.
    mt_conn *raw = v[2].release();
    CHECK(!v[2]);
    CHECK(mt_conn_send(raw, reinterpret_cast<const std::uint8_t *>("r"), 1) == MT_OK);
    mtipc::Conn adopted(raw);
    CHECK(adopted.recv() == "r");
}

void tenant_list() {
    const auto list = mtipc::list_tenants(fx->d);
    const auto now = std::chrono::system_clock::now();
    bool daemon = false, tenant = false;
    for (std::size_t i = 0; i < list.size(); ++i) {
        const auto &t = list[i];
        if (i > 0) CHECK(list[i - 1].id < t.id);
        CHECK(t.uid == geteuid());
        CHECK(t.since <= now + 1s && t.since > now - 10min);
        if (t.id == "@mtipcd") {
            daemon = true;
            CHECK(t.role == "daemon");
            CHECK(t.pid == static_cast<std::uint32_t>(fx->daemon->pid()));
            CHECK(t.fingerprint.empty());
            CHECK(t.protocols == std::vector<std::string>{"relay"});
        } else if (t.id == "cpp-echo") {
            tenant = true;
            CHECK(t.role == "tenant");
            CHECK(t.pid == static_cast<std::uint32_t>(getpid()));
            CHECK(t.fingerprint.size() == 64);
            CHECK(t.protocols == std::vector<std::string>{"msg"});
        }
    }
    CHECK(daemon);
    CHECK(tenant);
}

void protocols_and_options() {
    auto stats = std::make_shared<Stats>();
    mtipc::Advert ad(fx->d, "cpp-proto", echo(stats), "echo,json");
    bool found = false;
    for (const auto &t : mtipc::list_tenants(fx->d)) {
        if (t.id == "cpp-proto") found = t.protocols == std::vector<std::string>{"echo", "json"};
    }
    CHECK(found);
    for (const char *p : {"echo", "json"}) {
        mtipc::AttachOptions o;
        o.protocol = p;
        o.timeout = 10s;
        mtipc::Conn c = mtipc::attach(fx->d, "cpp-proto", o);
        c.send(p);
        CHECK(c.recv() == p);
    }
    mtipc::AttachOptions msg;
    msg.protocol = "msg";
    CHECK_THROWS(MT_ERR_NOT_FOUND, "msg", mtipc::attach(fx->d, "cpp-proto", msg));

    // duration: the connection ends after it.
    mtipc::AttachOptions o;
    o.duration = 400ms;
    auto t0 = Clock::now();
    mtipc::Conn c = mtipc::attach(fx->d, "cpp-echo", o);
    c.send("in time");
    CHECK(c.recv() == "in time");
    CHECK_THROWS(MT_ERR_CLOSED, "", c.recv(10s));
    CHECK(Clock::now() - t0 >= 350ms);

    // start: no byte passes before it.
    mtipc::AttachOptions later;
    later.start = std::chrono::system_clock::now() + 400ms;
    t0 = Clock::now();
    mtipc::Conn l = mtipc::attach(fx->d, "cpp-echo", later);
    l.send("later");
    CHECK(l.recv(10s) == std::optional<std::string>("later"));
    CHECK(Clock::now() - t0 >= 350ms);
    // A start in the past is at once.
    later.start = std::chrono::system_clock::time_point();
    mtipc::Conn now = mtipc::attach(fx->d, "cpp-echo", later);
    now.send("now");
    CHECK(now.recv() == "now");
}

void handler_exceptions_do_not_crash() {
    // Each kind of exception out of a handler: the connection closes, the
    // process lives on, and it is reported on stderr (MT_ERR_CLOSED is not).
    std::atomic<int> calls{0};
    mtipc::Advert ad(fx->d, "cpp-throw", [&calls](mtipc::Conn c) {
        ++calls;
        const std::string m = c.recv();
        if (m == "runtime") throw std::runtime_error("boom from the handler");
        if (m == "int") throw 42;
        if (m == "mtipc") throw mtipc::Error(MT_ERR_FULL, "full from the handler");
        if (m == "closed") throw mtipc::Error(MT_ERR_CLOSED, "quiet end");
        c.send("no throw");
    });
    StderrCapture capture(fx->scratch.dir / "stderr");
    for (const char *what : {"runtime", "int", "mtipc", "closed"}) {
        mtipc::Conn c = mtipc::attach(fx->d, "cpp-throw");
        c.send(what);
        CHECK_THROWS(MT_ERR_CLOSED, "", c.recv(10s));
    }
    mtipc::Conn c = mtipc::attach(fx->d, "cpp-throw");
    c.send("fine");
    CHECK(c.recv() == "no throw");
    CHECK(calls == 5);
    CHECK(eventually([&] {
        const std::string err = capture.text();
        return err.find("the handler of tenant cpp-throw threw: boom from the handler") !=
                   std::string::npos &&
               err.find("the handler of tenant cpp-throw threw an unknown exception") !=
                   std::string::npos &&
               err.find("threw mtipc::Error: full from the handler (MT_ERR_FULL)") !=
                   std::string::npos;
    }));
    CHECK(capture.text().find("quiet end") == std::string::npos);
}

void advert_moves_and_withdraw() {
    auto stats = std::make_shared<Stats>();
    mtipc::Advert a(fx->d, "cpp-move", echo(stats));
    mt_advert *h = a.native_handle();
    mtipc::Advert b(std::move(a));
    CHECK(!a); // NOLINT(bugprone-use-after-move)
    CHECK(b.native_handle() == h);
    {
        mtipc::Conn c = mtipc::attach(fx->d, "cpp-move");
        c.send("after the move");
        CHECK(c.recv() == "after the move");
    }
    // Into containers (reallocation moves them), the handler keeps working.
    std::vector<mtipc::Advert> v;
    v.push_back(std::move(b));
    v.emplace_back();
    v.emplace_back(fx->d, "cpp-move2", echo(stats));
    for (const char *id : {"cpp-move", "cpp-move2"}) {
        mtipc::Conn c = mtipc::attach(fx->d, id);
        c.send(id);
        CHECK(c.recv() == id);
    }
    // Move assignment withdraws the target's advertisement.
    v[0] = std::move(v[2]);
    CHECK(!listed(fx->d, "cpp-move"));
    CHECK(listed(fx->d, "cpp-move2"));
    CHECK_THROWS(MT_ERR_NOT_FOUND, "", mtipc::attach(fx->d, "cpp-move"));
    // withdraw(), twice.
    v[0].withdraw();
    v[0].withdraw();
    CHECK(!v[0]);
    CHECK(!listed(fx->d, "cpp-move2"));
    CHECK(stats->attached == 3);
}

void handler_outlives_its_advert() {
    // An open connection keeps working after its Advert is destroyed, and
    // so does the handler object it runs (captured state included).
    auto stats = std::make_shared<Stats>();
    auto advert = std::make_unique<mtipc::Advert>(fx->d, "cpp-gone", echo(stats));
    std::weak_ptr<Stats> weak = stats;
    stats.reset(); // only the handler holds it now
    mtipc::Conn c = mtipc::attach(fx->d, "cpp-gone");
    c.send("one");
    CHECK(c.recv() == "one");
    advert.reset();
    CHECK(!listed(fx->d, "cpp-gone"));
    c.send("two");
    CHECK(c.recv() == "two");
    c.send(std::string(1024 * 1024, 'b'));
    CHECK(c.recv().size() == 1024 * 1024);
    CHECK(!weak.expired()); // the running handler still holds its state
    c.close();
    // Once the last call returned, the handler and its state are freed.
    CHECK(eventually([&] { return weak.expired(); }));
}

void late_connection_after_withdraw_is_closed() {
    // The C library may hand over a connection whose handshake ends after
    // mt_advert_free returned (here: its start is 1.5 s away when the
    // Advert goes). The wrapper must not call the handler of an Advert that
    // is gone: the connection is closed instead.
    auto stats = std::make_shared<Stats>();
    auto advert = std::make_unique<mtipc::Advert>(fx->d, "cpp-late", echo(stats));
    mtipc::AttachOptions o;
    o.start = std::chrono::system_clock::now() + 1500ms;
    o.timeout = 10s;
    std::optional<mtipc::Conn> conn;
    std::string error;
    std::thread t([&] {
        try {
            conn = mtipc::attach(fx->d, "cpp-late", o);
        } catch (const std::exception &e) {
            error = e.what();
        }
    });
    std::this_thread::sleep_for(500ms); // the round is over, the handshake waits for the start
    advert.reset();
    t.join();
    if (conn) {
        // Attached (the C library completed it): the wrapper closed it unused.
        CHECK_THROWS(MT_ERR_CLOSED, "", conn->recv(10s));
    } else {
        std::cerr << "late attach failed (acceptable): " << error << "\n";
    }
    CHECK(stats->attached == 0);
}

void concurrent_attachers() {
    std::vector<std::thread> threads;
    std::atomic<int> ok{0};
    for (int i = 0; i < 4; ++i) {
        threads.emplace_back([i, &ok] {
            try {
                mtipc::AttachOptions o;
                o.timeout = 20s;
                mtipc::Conn c = mtipc::attach(fx->d, "cpp-echo", o);
                for (int k = 0; k < 20; ++k) {
                    const std::string m = "thread " + std::to_string(i) + " #" + std::to_string(k);
                    c.send(m);
                    if (c.recv() != m) return;
                }
                ++ok;
            } catch (const std::exception &e) {
                std::cerr << "attacher " << i << ": " << e.what() << "\n";
            }
        });
    }
    for (auto &t : threads) t.join();
    CHECK(ok == 4);
}

void daemon_stop_then_unavailable() {
    mtipc::Conn c = mtipc::attach(fx->d, "cpp-echo");
    c.send("before");
    CHECK(c.recv() == "before");
    CHECK(fx->daemon->stop() == 0);
    CHECK_THROWS(MT_ERR_UNAVAILABLE, "mtipcd is not running", mtipc::attach(fx->d, "cpp-echo"));
    CHECK_THROWS(MT_ERR_CLOSED, "", c.recv(10s));
    CHECK(listed(fx->d, "cpp-echo"));
    CHECK(!listed(fx->d, "@mtipcd"));
}

} // namespace

int main() {
    try {
        Fixture f;
        fx = &f;
        run("without_daemon", without_daemon);
        f.daemon = std::make_unique<Daemon>(f.d);
        f.echo_ad = mtipc::Advert(f.d, "cpp-echo", echo(f.echo_stats));
        run("errors_carry_codes", errors_carry_codes);
        run("echo_sizes_and_buffer_growth", echo_sizes_and_buffer_growth);
        run("recv_timeout_returns_nullopt", recv_timeout_returns_nullopt);
        run("end_of_connection_is_closed", end_of_connection_is_closed);
        run("conn_moves", conn_moves);
        run("tenant_list", tenant_list);
        run("protocols_and_options", protocols_and_options);
        run("handler_exceptions_do_not_crash", handler_exceptions_do_not_crash);
        run("advert_moves_and_withdraw", advert_moves_and_withdraw);
        run("handler_outlives_its_advert", handler_outlives_its_advert);
        run("late_connection_after_withdraw_is_closed", late_connection_after_withdraw_is_closed);
        run("concurrent_attachers", concurrent_attachers);
        run("daemon_stop_then_unavailable", daemon_stop_then_unavailable);
        fx = nullptr;
    } catch (const std::exception &e) {
        ++mt_test_failures;
        std::cerr << "test_attach: " << e.what() << "\n";
    }
    return mt_test_exit("test_attach");
}
