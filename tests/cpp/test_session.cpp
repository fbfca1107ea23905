// The C++ session types of include/mtipc.hpp: SessionTable, SessionInfo,
// Worker, Request, Ticket. Move-only RAII, Error with code and message,
// timeouts and "not yet" as std::nullopt / false, responses read in place,
// and, with real processes, a worker child that serves requests, is killed
// with SIGKILL in the middle of one, and is replaced by the other worker of
// its group.
#include <mtipc.hpp>

#include "mt_test.hpp"

#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

template <typename T> constexpr bool move_only() {
    return !std::is_copy_constructible_v<T> && !std::is_copy_assignable_v<T> &&
           std::is_nothrow_move_constructible_v<T> && std::is_nothrow_move_assignable_v<T>;
}
static_assert(move_only<mtipc::SessionTable>(), "SessionTable is move-only");
static_assert(move_only<mtipc::Worker>(), "Worker is move-only");
static_assert(move_only<mtipc::Request>(), "Request is move-only");
static_assert(move_only<mtipc::Ticket>(), "Ticket is move-only");

mtipc::SessionTableOptions small() {
    mtipc::SessionTableOptions o;
    o.capacity = 4;
    o.slots = 4;
    o.max_message = 100;
    o.workers = 4;
    return o;
}

void table_and_sessions() {
    Scratch s("stable");
    mtipc::Domain d((s.dir / "dom").string());
    CHECK_THROWS(MT_ERR_NOT_FOUND, "", mtipc::SessionTable::open(d, "shop"));
    CHECK_THROWS(MT_ERR_INVALID, "empty", mtipc::SessionTable::create(d, ""));
    CHECK_THROWS(MT_ERR_INVALID, "", mtipc::SessionTable::create(d, "../x"));
    mtipc::SessionTableOptions bad = small();
    bad.groups = 65;
    CHECK_THROWS(MT_ERR_INVALID, "2 to 64", mtipc::SessionTable::create(d, "shop", bad));

    mtipc::SessionTable t = mtipc::SessionTable::create(d, "shop", small());
    CHECK(t.capacity() == 4 && t.groups() == 2 && t.max_message() == 100);
    CHECK_THROWS(MT_ERR_EXISTS, "exists", mtipc::SessionTable::create(d, "shop", small()));
    mtipc::SessionTable again = mtipc::SessionTable::open_or_create(d, "shop");
    CHECK(again.capacity() == 4);

    const std::uint64_t id = t.create_session("acme", 3, std::string("u\0v", 3));
    std::optional<mtipc::SessionInfo> info = again.lookup(id);
    CHECK(info.has_value());
    if (info) {
        CHECK(info->id == id && info->tenant == "acme" && info->state == 3);
        CHECK(info->user == std::string("u\0v", 3));
        CHECK(info->worker == 0 && info->in_flight == 0);
        CHECK(info->created > std::chrono::system_clock::now() - 60s);
        CHECK(info->updated >= info->created);
    }
    t.update(id, 4);
    info = t.lookup(id);
    CHECK(info && info->state == 4 && info->user == std::string("u\0v", 3));
    t.update(id, 5, "");
    info = t.lookup(id);
    CHECK(info && info->state == 5 && info->user.empty());
    t.update(id, 5, "data");
    CHECK(t.lookup(id)->user == "data");
    CHECK_THROWS(MT_ERR_INVALID, "64", t.update(id, 5, std::string(65, 'x')));
    CHECK_THROWS(MT_ERR_INVALID, "64", t.create_session("acme", 0, std::string(65, 'x')));
    CHECK_THROWS(MT_ERR_INVALID, "", t.create_session("bad tenant"));

    mtipc::Worker w = t.register_worker(1);
    CHECK(w.id() != 0 && w.group() == 1);
    t.bind(id, w.id());
    CHECK(t.lookup(id)->worker == w.id());
    t.unbind(id);
    CHECK(t.lookup(id)->worker == 0);
    CHECK_THROWS(MT_ERR_INVALID, "mt_session_unbind", t.bind(id, 0));

    // Full, then a stale id after its slot is reused.
    std::vector<std::uint64_t> more;
    for (int i = 0; i < 3; ++i) more.push_back(t.create_session("acme"));
    CHECK_THROWS(MT_ERR_FULL, "", t.create_session("acme"));
    t.end(id);
    CHECK(!t.lookup(id));
    const std::uint64_t reused = t.create_session("other");
    CHECK(static_cast<std::uint32_t>(reused) == static_cast<std::uint32_t>(id));
    CHECK(!t.lookup(id));
    CHECK(t.lookup(reused)->tenant == "other");
    CHECK_THROWS(MT_ERR_NOT_FOUND, "", t.end(id));
    CHECK_THROWS(MT_ERR_NOT_FOUND, "", t.update(id, 1));

    // Moved-from objects are empty and refuse calls.
    mtipc::SessionTable moved = std::move(t);
    CHECK(!t && moved);
    CHECK(t.capacity() == 0);
    CHECK_THROWS(MT_ERR_INVALID, "NULL", t.create_session("acme"));
    CHECK(moved.lookup(reused).has_value());
    mtipc::Worker w2 = std::move(w);
    CHECK(!w && w2 && w2.id() != 0);
    CHECK_THROWS(MT_ERR_INVALID, "NULL", w.next(1ms));
}

void requests_in_one_process() {
    Scratch s("sreq");
    mtipc::Domain d((s.dir / "dom").string());
    mtipc::SessionTable t = mtipc::SessionTable::create(d, "shop", small());
    t.set_spin(50);
    const std::uint64_t id = t.create_session("acme");
    mtipc::Worker w = t.register_worker(0);
    CHECK(!w.try_next());
    CHECK(!w.next(20ms));

    mtipc::Ticket tk = t.submit(id, 0, std::string("he\0llo", 6));
    CHECK(!tk.poll());
    CHECK_THROWS(MT_ERR_INVALID, "no response yet", tk.response());
    {
        std::optional<mtipc::Request> r = w.next(5s);
        CHECK(r.has_value());
        if (r) {
            CHECK(r->session() == id);
            CHECK(r->data() == std::string("he\0llo", 6));
            CHECK(t.lookup(id)->worker == w.id());
            CHECK_THROWS(MT_ERR_INVALID, "still open", w.try_next());
            CHECK_THROWS(MT_ERR_INVALID, "100", r->respond(std::string(101, 'x')));
            std::string up(r->data());
            for (char &c : up) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            r->respond(up);
            CHECK_THROWS(MT_ERR_INVALID, "answered already", r->respond("twice"));
            CHECK_THROWS(MT_ERR_INVALID, "answered already", r->data());
            mtipc::Request moved = std::move(*r);
            CHECK(!*r && moved);
        }
    }
    CHECK(tk.wait(5s));
    CHECK(tk.response() == std::string("HE\0LLO", 6));
    CHECK(tk.poll());
    CHECK(tk.get() == std::string("HE\0LLO", 6));

    CHECK_THROWS(MT_ERR_INVALID, "100", t.submit(id, 0, std::string(101, 'x')));
    CHECK_THROWS(MT_ERR_INVALID, "group", t.submit(id, 7, "x"));

    // Destroyed unanswered: the submitter gets MT_ERR_UNAVAILABLE, again and again.
    mtipc::Ticket dropped = t.submit(id, 0, "x");
    w.next(5s);
    CHECK_THROWS(MT_ERR_UNAVAILABLE, "", dropped.wait(5s));
    CHECK_THROWS(MT_ERR_UNAVAILABLE, "", dropped.poll());
    // No worker in group 1: MT_ERR_UNAVAILABLE; a short timeout is false first.
    mtipc::Ticket lonely = t.submit(id, 1, "x");
    CHECK(!lonely.wait(10ms));
    CHECK_THROWS(MT_ERR_UNAVAILABLE, "no live worker", lonely.get(5s));
    // get() with a timeout that passes throws MT_ERR_TIMEOUT.
    mtipc::Ticket slow = t.submit(id, 0, "x");
    CHECK_THROWS(MT_ERR_TIMEOUT, "", slow.get(20ms));
    std::optional<mtipc::Request> r = w.try_next();
    CHECK(r.has_value());
    if (r) r->respond("done");
    CHECK(slow.get(5s) == "done");
    CHECK(t.lookup(id)->in_flight == 0);

    // A worker on its own thread answers a submitter on this one.
    std::thread server([&t] {
        mtipc::Worker tw = t.register_worker(1);
        for (int k = 0; k < 100; ++k) {
            std::optional<mtipc::Request> q = tw.next(5s);
            if (!q) return;
            q->respond("re:" + std::string(q->data()));
        }
    });
    const std::uint64_t id2 = t.create_session("acme");
    int ok = 0;
    for (int k = 0; k < 100; ++k) {
        const std::string msg = std::to_string(k);
        for (;;) {
            try {
                if (t.submit(id2, 1, msg).get(5s) == "re:" + msg) ++ok;
                break;
            } catch (const mtipc::Error &e) {
                // The worker thread may not have registered yet.
                if (e.code() != MT_ERR_UNAVAILABLE) throw;
            }
        }
    }
    server.join();
    CHECK(ok == 100);
}

// A Worker destroyed while its Request is open: the request stays
// answerable, and the worker is unregistered once it is answered (the
// behaviour of mt_worker_free, docs/session.md).
void request_outlives_its_worker() {
    Scratch s("sclose");
    mtipc::Domain d((s.dir / "dom").string());
    mtipc::SessionTable t = mtipc::SessionTable::create(d, "shop", small());
    const std::uint64_t id = t.create_session("acme");
    mtipc::Ticket tk = t.submit(id, 0, "held");
    std::optional<mtipc::Request> r;
    std::uint64_t wid = 0;
    {
        mtipc::Worker w = t.register_worker(0);
        wid = w.id();
        r = w.next(5s);
    }
    CHECK(r.has_value());
    if (!r) return;
    CHECK(t.lookup(id)->worker == wid); // still registered
    CHECK(r->data() == "held");
    r->respond("answered");
    CHECK(tk.get(5s) == "answered");
    CHECK(t.lookup(id)->worker == 0); // then unregistered
    r.reset();
    // Destroyed unanswered after its worker: it fails.
    mtipc::Ticket lost = t.submit(id, 0, "x");
    {
        mtipc::Worker w = t.register_worker(0);
        r = w.next(5s);
    }
    CHECK(r.has_value());
    r.reset();
    CHECK_THROWS(MT_ERR_UNAVAILABLE, "", lost.get(5s));
    CHECK(t.lookup(id)->in_flight == 0);
}

// What a worker child says on its pipe: 'R' ready, 'H' holding a request.
bool read_byte(int fd, char want, int ms) {
    struct pollfd p = {fd, POLLIN, 0};
    char c = 0;
    return poll(&p, 1, ms) == 1 && read(fd, &c, 1) == 1 && c == want;
}

// A worker of group 0 in a child process: answers "<pid>:<request>",
// except that the first worker to take "hold:<name>" (a marker file
// <dir>/<name> made with O_EXCL) never answers it: it says 'H' and waits to
// be killed.
pid_t spawn_worker(const fs::path &dir, int fds[2]) {
    std::cout.flush();
    std::fflush(nullptr);
    pid_t pid = fork();
    if (pid != 0) return pid;
    close(fds[0]);
    try {
        mtipc::Domain d((dir / "dom").string());
        mtipc::SessionTable t = mtipc::SessionTable::open(d, "shop");
        mtipc::Worker w = t.register_worker(0);
        const pid_t parent = getppid();
        if (write(fds[1], "R", 1) != 1) _exit(3);
        for (;;) {
            std::optional<mtipc::Request> r = w.next(200ms);
            if (!r) {
                if (getppid() != parent) _exit(0);
                continue;
            }
            const std::string_view data = r->data();
            if (data.substr(0, 5) == "hold:") {
                const fs::path marker = dir / std::string(data.substr(5));
                const int fd = open(marker.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
                if (fd >= 0) {
                    close(fd);
                    if (write(fds[1], "H", 1) != 1) _exit(3);
                    for (;;) pause();
                }
            }
            r->respond(std::to_string(getpid()) + ":" + std::string(data));
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "worker %d: %s\n", static_cast<int>(getpid()), e.what());
    }
    _exit(2);
}

void worker_killed_mid_request() {
    Scratch s("skill");
    mtipc::Domain d((s.dir / "dom").string());
    mtipc::SessionTableOptions o = small();
    o.slots = 8;
    mtipc::SessionTable t = mtipc::SessionTable::create(d, "shop", o);
    int fds[2];
    CHECK(pipe(fds) == 0);
    const pid_t a = spawn_worker(s.dir, fds);
    CHECK(read_byte(fds[0], 'R', 10000));
    const pid_t b = spawn_worker(s.dir, fds);
    CHECK(read_byte(fds[0], 'R', 10000));

    const std::uint64_t id = t.create_session("acme");
    const std::string first = t.submit(id, 0, "hi").get(5s);
    const int owner = std::atoi(first.c_str());
    CHECK(owner == a || owner == b);
    CHECK(first == std::to_string(owner) + ":hi");
    const pid_t survivor = owner == a ? b : a;
    // Sticky: the session's requests keep going to its worker.
    for (int k = 0; k < 5; ++k) CHECK(std::atoi(t.submit(id, 0, "x").get(5s).c_str()) == owner);

    // Its worker is killed holding a request, with another queued behind:
    // the survivor answers both, once.
    mtipc::Ticket held = t.submit(id, 0, "hold:one");
    CHECK(read_byte(fds[0], 'H', 5000));
    mtipc::Ticket queued = t.submit(id, 0, "after");
    CHECK(t.lookup(id)->in_flight == 2);
    CHECK(kill(owner, SIGKILL) == 0);
    int status = 0;
    CHECK(waitpid(owner, &status, 0) == owner);
    CHECK(held.get(5s) == std::to_string(survivor) + ":hold:one");
    CHECK(queued.get(5s) == std::to_string(survivor) + ":after");
    CHECK(t.lookup(id)->worker != 0);
    CHECK(t.lookup(id)->in_flight == 0);

    // The last worker of the group dies holding one: MT_ERR_UNAVAILABLE.
    mtipc::Ticket last = t.submit(id, 0, "hold:two");
    CHECK(read_byte(fds[0], 'H', 5000));
    CHECK(kill(survivor, SIGKILL) == 0);
    CHECK(waitpid(survivor, &status, 0) == survivor);
    CHECK_THROWS(MT_ERR_UNAVAILABLE, "no live worker", last.wait(5s));
    std::optional<mtipc::SessionInfo> info = t.lookup(id);
    CHECK(info && info->in_flight == 0 && info->worker == 0);
    close(fds[0]);
    close(fds[1]);
}

} // namespace

int main() {
    std::signal(SIGPIPE, SIG_IGN);
    run("table_and_sessions", table_and_sessions);
    run("requests_in_one_process", requests_in_one_process);
    run("request_outlives_its_worker", request_outlives_its_worker);
    run("worker_killed_mid_request", worker_killed_mid_request);
    return mt_test_exit("test_session");
}
