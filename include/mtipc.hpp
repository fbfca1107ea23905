/*
 * mtipc.hpp: a header-only C++17 wrapper over the C ABI in mtipc.h.
 *
 * Handles become move-only RAII classes, failing calls throw mtipc::Error
 * (which carries the mt_status code and the thread's mt_last_error()
 * message), and timeouts are std::chrono durations. Members forward to the
 * C functions of mtipc.h, so the C documentation (thread safety, lifetimes,
 * error codes) applies as is. Two things are the wrapper's own: Conn::recv
 * sizes its buffer to each message, and Advert keeps its handler alive for
 * as long as the library may call it (see Advert).
 *
 *     #include <mtipc.hpp>
 *
 *     mtipc::Domain d("/run/user/1000/mtipc");   // or mtipc::Domain d; for the default
 *     d.sem_post(1);
 *     if (!d.sem_wait(std::chrono::milliseconds(100))) { ... timed out ... }
 *
 *     // A tenant: the handler runs on a thread of its own per attacher.
 *     mtipc::Advert ad(d, "acme", [](mtipc::Conn c) { c.send("hello " + c.recv()); });
 *     // An attacher (another process, with mtipcd running on the domain).
 *     mtipc::Conn c = mtipc::attach(d, "acme");
 *     c.send("world");
 *     std::optional<std::string> reply = c.recv(std::chrono::seconds(1));
 *
 *     // Sessions: a worker of group 0 (one process) ...
 *     mtipc::SessionTable t = mtipc::SessionTable::open_or_create(d, "shop");
 *     mtipc::Worker w = t.register_worker(0);
 *     if (std::optional<mtipc::Request> r = w.next(std::chrono::milliseconds(200)))
 *         r->respond("got " + std::string(r->data()));
 *     // ... and a submitter (another process).
 *     std::string answer = t.submit(t.create_session("acme"), 0, "hi").get();
 *
 *     // HA hooks, in a process that mtipc-ha supervises (no-ops otherwise).
 *     mtipc::ha::on_role([](mt_ha_role r, std::uint64_t epoch) { ... });
 *     mtipc::ha::ready();
 *
 * Link with -lmtipc (pkg-config --cflags --libs mtipc).
 */

#ifndef MTIPC_HPP
#define MTIPC_HPP

#include <mtipc.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>
#if __cplusplus >= 202002L && __has_include(<span>)
#include <span>
#endif

namespace mtipc {

/**
 * The exception every failing mtipc call throws: the C status code and the
 * detailed message mt_last_error() gave for it. what() is
 * "<message> (<MT_ERR_NAME>)".
 */
class Error : public std::runtime_error {
public:
    /** An error with status `code` and detailed `message`. */
    Error(mt_status code, const std::string &message)
        : std::runtime_error(message + " (" + mt_status_str(code) + ")"), code_(code),
          message_(message) {}

    /** The status code (MT_ERR_INVALID, MT_ERR_TIMEOUT, ...). */
    mt_status code() const noexcept { return code_; }

    /** The symbolic name of the code ("MT_ERR_INVALID", ...), a static string. */
    const char *name() const noexcept { return mt_status_str(code_); }

    /** The detailed message alone, as mt_last_error() gave it. */
    const std::string &message() const noexcept { return message_; }

private:
    mt_status code_;
    std::string message_;
};

/**
 * Throws mtipc::Error for any status other than MT_OK, with this thread's
 * mt_last_error() message. Call it right after the failing C call.
 */
inline void check(mt_status status) {
    if (status != MT_OK) {
        throw Error(status, mt_last_error());
    }
}

/** The library's version ("MAJOR.MINOR.PATCH"), a static string. */
inline const char *version() noexcept { return mt_version(); }

/**
 * A log callback: the event's level, its target (the library module that
 * emitted it) and its message. Called on the thread that emitted the event,
 * possibly on several threads at once; it should return quickly and must
 * not throw (an exception it lets out is dropped).
 */
using LogFn = std::function<void(mt_log_level level, std::string_view target,
                                 std::string_view message)>;

namespace detail {

/** The process's C++ log callback; never destroyed (library threads may log at exit). */
struct LogSlot {
    std::mutex mutex;
    std::shared_ptr<const LogFn> fn;

    static LogSlot &get() {
        static LogSlot *const slot = new LogSlot; // never freed: see above
        return *slot;
    }
};

/** The C callback behind mtipc::set_log: calls the current std::function. */
inline void log_trampoline(void *, mt_log_level level, const char *target,
                           const char *message) noexcept {
    std::shared_ptr<const LogFn> fn;
    {
        LogSlot &slot = LogSlot::get();
        std::lock_guard<std::mutex> lock(slot.mutex);
        fn = slot.fn; // kept alive for this call even if replaced meanwhile
    }
    if (!fn) {
        return;
    }
    try {
        (*fn)(level, target, message);
    } catch (...) {
        // A logger that throws loses the event; nothing may unwind into C.
    }
}

} // namespace detail

/**
 * Sends the library's events up to `max_level` to `fn` (mt_log_set). An
 * empty `fn` removes the callback. There is one callback per process:
 * this replaces any other, also one installed with mt_log_set. Throws
 * Error(MT_ERR_INVALID) for a level out of range.
 */
inline void set_log(LogFn fn, mt_log_level max_level = MT_LOG_INFO) {
    detail::LogSlot &slot = detail::LogSlot::get();
    if (!fn) {
        check(mt_log_set(nullptr, nullptr, MT_LOG_ERROR));
        std::shared_ptr<const LogFn> gone; // destroyed after the unlock
        std::lock_guard<std::mutex> lock(slot.mutex);
        gone = std::move(slot.fn);
        return;
    }
    auto next = std::make_shared<const LogFn>(std::move(fn));
    std::shared_ptr<const LogFn> previous;
    {
        std::lock_guard<std::mutex> lock(slot.mutex);
        previous = std::exchange(slot.fn, std::move(next));
    }
    const mt_status st = mt_log_set(detail::log_trampoline, nullptr, max_level);
    if (st != MT_OK) {
        std::lock_guard<std::mutex> lock(slot.mutex);
        slot.fn = std::move(previous);
        throw Error(st, mt_last_error());
    }
}

namespace detail {

/** The C timeout for an optional duration: MT_WAIT_FOREVER for none, clamped below it. */
inline std::uint32_t timeout_ms(const std::optional<std::chrono::milliseconds> &timeout) {
    if (!timeout) {
        return MT_WAIT_FOREVER;
    }
    const auto ms = timeout->count();
    if (ms <= 0) {
        return 0;
    }
    constexpr std::uint32_t longest = MT_WAIT_FOREVER - 1;
    if (static_cast<std::uint64_t>(ms) >= longest) {
        return longest;
    }
    return static_cast<std::uint32_t>(ms);
}

} // namespace detail

/**
 * An open domain: the directory the cooperating processes of a host share,
 * with its notification semaphore.
 *
 * Move-only; the destructor closes the handle (mt_domain_free). A moved-from
 * Domain holds no handle: it may be destroyed or assigned to, and any other
 * call on it throws Error(MT_ERR_INVALID). One Domain may be used from
 * several threads at once (not while it is being moved or assigned).
 */
class Domain {
public:
    /**
     * Opens (creating if missing) the domain at `path`; std::nullopt, the
     * default, means the default domain ($MTIPC_DOMAIN, else
     * $XDG_RUNTIME_DIR/mtipc, else /tmp/mtipc-<uid>). Throws Error.
     */
    explicit Domain(const std::optional<std::string> &path = std::nullopt)
        : Domain(path ? path->c_str() : nullptr) {}

    /** Opens the domain at `path`; a NULL pointer means the default domain. Throws Error. */
    explicit Domain(const char *path) { check(mt_domain_open(path, &handle_)); }

    /** Opens the default domain (as Domain()). Throws Error. */
    explicit Domain(std::nullptr_t) : Domain(static_cast<const char *>(nullptr)) {}

    /** Takes over `other`'s handle; `other` is left without one. */
    Domain(Domain &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}

    /** Closes this domain's handle, then takes over `other`'s. */
    Domain &operator=(Domain &&other) noexcept {
        if (this != &other) {
            mt_domain_free(handle_);
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }

    /** Not copyable: a handle has exactly one owner (move it instead). */
    Domain(const Domain &) = delete;
    /** Not copyable: a handle has exactly one owner (move it instead). */
    Domain &operator=(const Domain &) = delete;

    /** Closes the handle (nothing to do for a moved-from Domain). */
    ~Domain() { mt_domain_free(handle_); }

    /** The domain's directory, as it was opened. Throws Error. */
    std::string path() const {
        // mt_domain_path's protocol: a buffer too small gives MT_ERR_INVALID
        // with the path's length (without its NUL) in `len`; retry with room.
        std::string buf(256, '\0');
        for (int attempt = 0; attempt < 4; ++attempt) {
            std::size_t len = 0;
            mt_status st = mt_domain_path(handle_, buf.data(), buf.size(), &len);
            if (st == MT_OK) {
                buf.resize(len);
                return buf;
            }
            if (st != MT_ERR_INVALID || handle_ == nullptr || len < buf.size()) {
                check(st);
            }
            buf.assign(len + 1, '\0');
        }
        throw Error(MT_ERR_PANIC, "mt_domain_path: the path's length kept changing");
    }

    /**
     * Adds `n` to the notification semaphore and wakes up to `n` waiters in
     * any process. Throws Error (MT_ERR_INVALID if the count would pass
     * 2^31 - 1).
     */
    void sem_post(std::uint32_t n = 1) const { check(mt_sem_post(handle_, n)); }

    /**
     * Takes one unit of the notification semaphore, blocking while it is
     * zero for at most `timeout` (std::nullopt, the default: no limit; zero
     * or negative: do not block). Returns true if it took a unit, false if
     * the timeout passed. A timeout too long for the C call (2^32 - 1 ms or
     * more, about 49 days) is shortened to the longest finite one. Throws
     * Error for anything else.
     */
    bool sem_wait(std::optional<std::chrono::milliseconds> timeout = std::nullopt) const {
        mt_status st = mt_sem_wait(handle_, detail::timeout_ms(timeout));
        if (st == MT_ERR_TIMEOUT) {
            return false;
        }
        check(st);
        return true;
    }

    /**
     * Sets the notification semaphore to zero and returns the count it had.
     * Posts made after the call are kept. Throws Error.
     */
    std::uint32_t sem_reset() const {
        std::uint32_t previous = 0;
        check(mt_sem_reset(handle_, &previous));
        return previous;
    }

    /** The notification semaphore's current count. Throws Error. */
    std::uint32_t sem_value() const {
        std::uint32_t value = 0;
        check(mt_sem_value(handle_, &value));
        return value;
    }

    /**
     * The C handle, for calls this wrapper does not cover; NULL for a
     * moved-from Domain. It stays owned by this Domain: do not free it.
     */
    mt_domain *native_handle() const noexcept { return handle_; }

private:
    mt_domain *handle_ = nullptr;
};

/**
 * An attached connection: whole messages (at most 1 MiB each), both ways,
 * over TLS 1.3 through the domain's mtipcd.
 *
 * Move-only; the destructor closes it (mt_conn_free), and the peer's
 * receive then fails with MT_ERR_CLOSED. A moved-from or closed Conn holds
 * no handle: every call on it throws Error(MT_ERR_INVALID). As for
 * mt_conn, one thread may send while another receives; two senders (or two
 * receivers) are serialised. The members are const because they do not
 * change the handle, only the connection's state.
 *
 * The end of a connection (the peer closed it, its duration is over, the
 * daemon stopped) is Error(MT_ERR_CLOSED) from recv() and send(); a
 * timeout is not an error: recv(timeout) returns std::nullopt.
 */
class Conn {
public:
    /** A Conn without a connection (as a moved-from one). */
    Conn() noexcept = default;

    /** Takes ownership of `handle` (from mt_attach or a C handler); NULL gives an empty Conn. */
    explicit Conn(mt_conn *handle) noexcept : handle_(handle) {}

    /** Takes over `other`'s connection; `other` is left without one. */
    Conn(Conn &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}

    /** Closes this connection, then takes over `other`'s. */
    Conn &operator=(Conn &&other) noexcept {
        if (this != &other) {
            mt_conn_free(handle_);
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }

    /** Not copyable: a connection has exactly one owner (move it instead). */
    Conn(const Conn &) = delete;
    /** Not copyable: a connection has exactly one owner (move it instead). */
    Conn &operator=(const Conn &) = delete;

    /** Closes the connection (nothing to do for an empty Conn). */
    ~Conn() { mt_conn_free(handle_); }

    /**
     * Sends `msg` as one whole message (0 bytes is a valid message). Throws
     * Error: MT_ERR_CLOSED if the connection has ended, MT_ERR_INVALID for
     * more than 1 MiB.
     */
    void send(std::string_view msg) const { send(msg.data(), msg.size()); }

    /** Sends the `len` bytes at `data` as one whole message (as send(std::string_view)). */
    void send(const void *data, std::size_t len) const {
        check(mt_conn_send(handle_, static_cast<const std::uint8_t *>(data), len));
    }

#if defined(__cpp_lib_span)
    /** Sends the bytes of `msg` as one whole message (C++20; as send(std::string_view)). */
    void send(std::span<const std::byte> msg) const { send(msg.data(), msg.size()); }
#endif

    /**
     * Receives the next message, waiting as long as it takes. Throws
     * Error(MT_ERR_CLOSED) once the connection has ended (every message the
     * peer sent before is delivered first), Error for anything else.
     */
    std::string recv() const {
        // With no limit, MT_ERR_TIMEOUT cannot happen: there is always a message.
        std::optional<std::string> msg = receive(MT_WAIT_FOREVER);
        if (!msg) {
            throw Error(MT_ERR_TIMEOUT, "mt_conn_recv timed out without a limit");
        }
        return std::move(*msg);
    }

    /**
     * Receives the next message, waiting at most `timeout` (std::nullopt: no
     * limit; zero or negative: do not wait; a timeout of 2^32 - 1 ms or more
     * is shortened to the longest finite one). Returns std::nullopt if no
     * whole message arrived in time: nothing is lost, the next call gets
     * it. Throws Error(MT_ERR_CLOSED) once the connection has ended, Error
     * for anything else.
     */
    std::optional<std::string> recv(std::optional<std::chrono::milliseconds> timeout) const {
        return receive(detail::timeout_ms(timeout));
    }

    /**
     * Closes the connection now (as the destructor does); the Conn is left
     * empty. Nothing to do for an empty Conn.
     */
    void close() noexcept { mt_conn_free(std::exchange(handle_, nullptr)); }

    /** True if this Conn holds a connection (it may still have ended: see recv()). */
    explicit operator bool() const noexcept { return handle_ != nullptr; }

    /**
     * The C handle, for calls this wrapper does not cover; NULL for an
     * empty Conn. It stays owned by this Conn: do not free it.
     */
    mt_conn *native_handle() const noexcept { return handle_; }

    /** Gives up ownership: returns the C handle (the caller frees it) and leaves the Conn empty. */
    mt_conn *release() noexcept { return std::exchange(handle_, nullptr); }

private:
    /** The first buffer a receive tries; a longer message is received with its exact size. */
    static constexpr std::size_t first_buffer = 4096;

    std::optional<std::string> receive(std::uint32_t timeout_ms) const {
        // mt_conn_recv's protocol: a buffer too small gives MT_ERR_INVALID
        // with the message's length in `len` (the message stays queued);
        // retry with room, within what is left of the timeout.
        using clock = std::chrono::steady_clock;
        const auto start = clock::now();
        std::string buf(first_buffer, '\0');
        for (int attempt = 0; attempt < 4; ++attempt) {
            std::size_t len = 0;
            std::uint32_t left = timeout_ms;
            if (attempt > 0 && timeout_ms != MT_WAIT_FOREVER) {
                const auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(
                                       clock::now() - start)
                                       .count();
                left = spent >= timeout_ms ? 0 : timeout_ms - static_cast<std::uint32_t>(spent);
            }
            mt_status st = mt_conn_recv(handle_, reinterpret_cast<std::uint8_t *>(buf.data()),
                                        buf.size(), &len, left);
            if (st == MT_OK) {
                buf.resize(len);
                return buf;
            }
            if (st == MT_ERR_TIMEOUT) {
                return std::nullopt;
            }
            if (st != MT_ERR_INVALID || handle_ == nullptr || len <= buf.size()) {
                check(st);
            }
            buf.assign(len, '\0');
        }
        // Another thread's receive took the message each time (receives
        // are serialised, not reserved): give up rather than loop forever.
        throw Error(MT_ERR_INVALID, "mt_conn_recv: the next message's length kept changing");
    }

    mt_conn *handle_ = nullptr;
};

/**
 * What a tenant does with each attached connection: called on a thread of
 * its own per connection (several may run at once), it owns the Conn.
 */
using Handler = std::function<void(Conn)>;

namespace detail {

/**
 * The handlers of the live Advert objects, by a number that the C library
 * gets as its `user` pointer. A handler call looks its number up (and
 * holds the handler while it runs); an Advert removes its number when it is
 * withdrawn. So a connection whose handshake completes after the Advert is
 * gone finds nothing and is closed, and a handler still running keeps its
 * own std::function alive: neither touches freed memory. Never destroyed,
 * so library threads still running at exit find it.
 */
struct Handlers {
    std::mutex mutex;
    std::uintptr_t next = 1;
    std::unordered_map<std::uintptr_t, std::pair<std::string, std::shared_ptr<const Handler>>> live;

    static Handlers &get() {
        static Handlers *const all = new Handlers; // never freed: see above
        return *all;
    }

    std::uintptr_t add(std::string tenant, Handler handler) {
        auto h = std::make_shared<const Handler>(std::move(handler));
        std::lock_guard<std::mutex> lock(mutex);
        const std::uintptr_t key = next++;
        live.emplace(key, std::make_pair(std::move(tenant), std::move(h)));
        return key;
    }

    void remove(std::uintptr_t key) noexcept {
        std::shared_ptr<const Handler> gone; // destroyed after the unlock
        std::lock_guard<std::mutex> lock(mutex);
        auto it = live.find(key);
        if (it != live.end()) {
            gone = std::move(it->second.second);
            live.erase(it);
        }
    }
};

/**
 * The C handler of every Advert: calls the C++ handler; no exception leaves
 * it (one that the handler lets out is reported on stderr, except
 * Error(MT_ERR_CLOSED): the end of a connection is the handler's normal
 * way out).
 */
inline void handler_trampoline(void *user, mt_conn *raw) noexcept {
    Conn conn(raw);
    std::string tenant = "?";
    try {
        std::shared_ptr<const Handler> h;
        {
            Handlers &all = Handlers::get();
            std::lock_guard<std::mutex> lock(all.mutex);
            auto it = all.live.find(reinterpret_cast<std::uintptr_t>(user));
            if (it != all.live.end()) {
                tenant = it->second.first;
                h = it->second.second;
            }
        }
        if (!h) {
            return; // withdrawn meanwhile: conn closes the connection
        }
        (*h)(std::move(conn));
    } catch (const Error &e) {
        if (e.code() != MT_ERR_CLOSED) {
            std::fprintf(stderr, "mtipc: the handler of tenant %s threw mtipc::Error: %s\n",
                         tenant.c_str(), e.what());
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "mtipc: the handler of tenant %s threw: %s\n", tenant.c_str(),
                     e.what());
    } catch (...) {
        std::fprintf(stderr, "mtipc: the handler of tenant %s threw an unknown exception\n",
                     tenant.c_str());
    }
}

} // namespace detail

/**
 * A live advertisement of a tenant: attachers (mtipc::attach, mt_attach,
 * `mtipc attach`) reach it through the domain's mtipcd, and each attached
 * connection is handed to the handler on a thread of its own.
 *
 * Move-only; the destructor withdraws it (mt_advert_free: at most about
 * 100 ms, or the end of a round in progress). After that no new
 * connection reaches the handler (one whose handshake ends only after it,
 * as with a distant start time, is closed unused); connections already
 * handed over live on, and the handler object stays alive until its last
 * call has returned.
 *
 * The handler must be safe to call from several threads at once. An
 * exception it lets out never crosses into the C library: it closes that
 * connection and is reported on stderr (Error(MT_ERR_CLOSED) silently, as
 * the normal end of a connection).
 */
class Advert {
public:
    /** An Advert without an advertisement (as a moved-from one). */
    Advert() noexcept = default;

    /**
     * Advertises `tenant` (1 to 64 bytes of A-Za-z0-9_.-, not starting with
     * '.' or '-') in `domain` and starts waiting for attachers. `protocols`:
     * comma-separated (1 to 16 names of 1 to 32 bytes of a-z0-9_.-, the
     * first is the default); std::nullopt: "msg". Throws Error:
     * MT_ERR_EXISTS if a live process advertises that id, MT_ERR_INVALID
     * for a bad id, protocol list or an empty handler. `domain` may be
     * destroyed before the Advert. The waiter thread runs as SCHED_BATCH
     * when it starts under SCHED_OTHER; the handler runs on a thread of its
     * own per connection with the policy the waiter started with (the
     * calling thread's, as any thread it starts gets it).
     */
    Advert(const Domain &domain, const std::string &tenant, Handler handler,
           const std::optional<std::string> &protocols = std::nullopt) {
        if (!handler) {
            throw Error(MT_ERR_INVALID, "the handler is empty");
        }
        key_ = detail::Handlers::get().add(tenant, std::move(handler));
        void *user = reinterpret_cast<void *>(key_);
        mt_status st =
            protocols ? mt_advertise_protocols(domain.native_handle(), tenant.c_str(),
                                               protocols->c_str(), detail::handler_trampoline,
                                               user, &handle_)
                      : mt_advertise(domain.native_handle(), tenant.c_str(),
                                     detail::handler_trampoline, user, &handle_);
        if (st != MT_OK) {
            Error e(st, mt_last_error());
            detail::Handlers::get().remove(std::exchange(key_, 0));
            throw e;
        }
    }

    /** Takes over `other`'s advertisement; `other` is left without one. */
    Advert(Advert &&other) noexcept
        : handle_(std::exchange(other.handle_, nullptr)), key_(std::exchange(other.key_, 0)) {}

    /** Withdraws this advertisement, then takes over `other`'s. */
    Advert &operator=(Advert &&other) noexcept {
        if (this != &other) {
            withdraw();
            handle_ = std::exchange(other.handle_, nullptr);
            key_ = std::exchange(other.key_, 0);
        }
        return *this;
    }

    /** Not copyable: an advertisement has exactly one owner (move it instead). */
    Advert(const Advert &) = delete;
    /** Not copyable: an advertisement has exactly one owner (move it instead). */
    Advert &operator=(const Advert &) = delete;

    /** Withdraws the advertisement (nothing to do for an empty Advert). */
    ~Advert() { withdraw(); }

    /**
     * Withdraws the advertisement now (as the destructor does); the Advert
     * is left empty. Nothing to do for an empty Advert.
     */
    void withdraw() noexcept {
        mt_advert_free(std::exchange(handle_, nullptr));
        if (key_ != 0) {
            detail::Handlers::get().remove(std::exchange(key_, 0));
        }
    }

    /** True if this Advert holds an advertisement. */
    explicit operator bool() const noexcept { return handle_ != nullptr; }

    /** The C handle; NULL for an empty Advert. It stays owned by this Advert: do not free it. */
    mt_advert *native_handle() const noexcept { return handle_; }

private:
    mt_advert *handle_ = nullptr;
    std::uintptr_t key_ = 0; // in detail::Handlers; 0: none
};

/** Options of attach(); every default is mt_attach's. */
struct AttachOptions {
    /**
     * Limit for the round, from the call until the tenant has answered.
     * Zero or negative is the shortest one (1 ms); longer than the C call
     * takes (2^32 - 1 ms) is shortened to it.
     */
    std::chrono::milliseconds timeout{5000};
    /** When the connection opens: the daemon passes no byte before. std::nullopt: at once. */
    std::optional<std::chrono::system_clock::time_point> start;
    /**
     * How long the connection stays open from its start (then both ends
     * get MT_ERR_CLOSED); zero or negative is the shortest one (1 ms).
     * std::nullopt: until an end closes.
     */
    std::optional<std::chrono::milliseconds> duration;
    /** The protocol to ask for; std::nullopt: the tenant's first. */
    std::optional<std::string> protocol;
};

/**
 * Attaches to `tenant` in `domain`: one attach round through the domain's
 * mtipcd, and a TLS 1.3 connection to the tenant. Throws Error:
 * MT_ERR_NOT_FOUND no live tenant of that id (or it does not accept the
 * protocol), MT_ERR_UNAVAILABLE no mtipcd running on the domain,
 * MT_ERR_TIMEOUT the tenant did not answer in time, MT_ERR_DENIED the
 * tenant's key does not match its advertisement or the daemon refused a
 * credential, MT_ERR_INVALID a bad id or protocol.
 */
inline Conn attach(const Domain &domain, const std::string &tenant,
                   const AttachOptions &options = AttachOptions()) {
    using std::chrono::milliseconds;
    // The C call's 0 means "the default" for each field: map ours around it.
    auto at_least_1ms = [](milliseconds d) -> std::uint64_t {
        return d.count() <= 0 ? 1 : static_cast<std::uint64_t>(d.count());
    };
    mt_attach_opts o = MT_ATTACH_OPTS_INIT;
    o.timeout_ms = static_cast<std::uint32_t>(
        std::min<std::uint64_t>(at_least_1ms(options.timeout), MT_WAIT_FOREVER));
    if (options.start) {
        const auto since_epoch =
            std::chrono::duration_cast<milliseconds>(options.start->time_since_epoch()).count();
        o.start_unix_ms = since_epoch <= 0 ? 0 : static_cast<std::uint64_t>(since_epoch);
    }
    if (options.duration) {
        o.duration_ms = at_least_1ms(*options.duration);
    }
    if (options.protocol) {
        o.protocol = options.protocol->c_str();
    }
    mt_conn *c = nullptr;
    check(mt_attach(domain.native_handle(), tenant.c_str(), &o, &c));
    return Conn(c);
}

/** One advertised tenant (or the daemon), as list_tenants() reports it. */
struct TenantInfo {
    /** Tenant id ("@mtipcd" for the daemon). */
    std::string id;
    /** "tenant" or "daemon". */
    std::string role;
    /** The protocols it accepts, the default first. */
    std::vector<std::string> protocols;
    /** Its key: hex of its raw X25519 public key, which attachers pin ("" for the daemon). */
    std::string fingerprint;
    /** The advertising process. */
    std::uint32_t pid = 0;
    /** Its uid. */
    std::uint32_t uid = 0;
    /** When it advertised. */
    std::chrono::system_clock::time_point since;
};

/**
 * The live advertisements of `domain` (tenants and the daemon), sorted by
 * id; stale ones are cleaned up on the way. Throws Error.
 */
inline std::vector<TenantInfo> list_tenants(const Domain &domain) {
    mt_tenant_list *raw = nullptr;
    check(mt_tenant_list_new(domain.native_handle(), &raw));
    const std::unique_ptr<mt_tenant_list, void (*)(mt_tenant_list *)> list(raw,
                                                                          mt_tenant_list_free);
    std::vector<TenantInfo> out;
    const std::size_t n = mt_tenant_list_len(list.get());
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        mt_tenant_info c{};
        check(mt_tenant_list_get(list.get(), i, &c));
        TenantInfo t;
        t.id = c.id;
        t.role = c.role;
        for (std::string_view rest = c.protocols; !rest.empty();) {
            const std::size_t comma = rest.find(',');
            t.protocols.emplace_back(rest.substr(0, comma));
            rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
        }
        t.fingerprint = c.fingerprint;
        t.pid = c.pid;
        t.uid = c.uid;
        const std::chrono::milliseconds since(c.since_unix_ms);
        t.since = std::chrono::system_clock::time_point(
            std::chrono::duration_cast<std::chrono::system_clock::duration>(since));
        out.push_back(std::move(t));
    }
    return out;
}

/**
 * A value inside an open Closure: a position in its read-only mapping, not
 * a copy (a thin wrapper of mt_value). Valid while the Closure it came from
 * is alive (moving a Closure keeps its values valid: the mapping does not
 * move). Strings and bytes are std::string_views into
 * the mapping. Failing calls (wrong kind, out of range) throw Error.
 */
class Value {
public:
    /** Wraps a value the C ABI gave. */
    explicit Value(const mt_value &v) noexcept : v_(v) {}

    /** Its kind (MT_VALUE_MAP, MT_VALUE_LIST, MT_VALUE_STR, ...). */
    mt_value_kind kind() const noexcept { return v_.kind; }

    /** The integer. Throws Error(MT_ERR_INVALID) for another kind. */
    std::int64_t as_int() const {
        std::int64_t out = 0;
        check(mt_value_int(v_, &out));
        return out;
    }

    /** The float. Throws Error(MT_ERR_INVALID) for another kind. */
    double as_float() const {
        double out = 0;
        check(mt_value_float(v_, &out));
        return out;
    }

    /** The string, in place (a NUL follows it in memory). Throws for another kind. */
    std::string_view as_str() const {
        const char *p = nullptr;
        std::size_t n = 0;
        check(mt_value_str(v_, &p, &n));
        return std::string_view(p, n);
    }

    /** The byte string, in place. Throws Error(MT_ERR_INVALID) for another kind. */
    std::string_view as_bytes() const {
        const std::uint8_t *p = nullptr;
        std::size_t n = 0;
        check(mt_value_bytes(v_, &p, &n));
        return std::string_view(reinterpret_cast<const char *>(p), n);
    }

    /** Items of a list, entries of a map, bytes of a string. Throws for a number. */
    std::size_t size() const {
        std::size_t n = 0;
        check(mt_value_len(v_, &n));
        return n;
    }

    /** Item `i` of a list. Throws Error(MT_ERR_INVALID) if not a list or out of range. */
    Value operator[](std::size_t i) const {
        mt_value out{};
        check(mt_value_list_get(v_, i, &out));
        return Value(out);
    }

    /** The value of `key` in a map, or std::nullopt if it has none. Throws if not a map. */
    std::optional<Value> find(std::string_view key) const {
        mt_value out{};
        const mt_status st = mt_value_map_get(v_, key.data(), key.size(), &out);
        if (st == MT_ERR_NOT_FOUND) {
            return std::nullopt;
        }
        check(st);
        return Value(out);
    }

    /** The value of `key` in a map. Throws Error(MT_ERR_NOT_FOUND) if absent. */
    Value operator[](std::string_view key) const {
        mt_value out{};
        check(mt_value_map_get(v_, key.data(), key.size(), &out));
        return Value(out);
    }

    /** Entry `i` of a map, in key order: its key (in place) and value. Throws. */
    std::pair<std::string_view, Value> entry(std::size_t i) const {
        const char *k = nullptr;
        std::size_t n = 0;
        mt_value out{};
        check(mt_value_map_at(v_, i, &k, &n, &out));
        return {std::string_view(k, n), Value(out)};
    }

    /** The C value, for calls this wrapper does not cover. */
    const mt_value &native() const noexcept { return v_; }

private:
    mt_value v_;
};

/**
 * One open version of a shared closure, mapped read-only with no copy
 * (mt_closure). Opening holds the version: newer ones may be published,
 * this one stays readable and unchanged until the Closure is destroyed.
 *
 * Move-only; the destructor lets go of the version (mt_closure_free). A
 * moved-from Closure holds none: calls on it throw Error(MT_ERR_INVALID).
 * One Closure (and its Values) may be read from several threads at once.
 */
class Closure {
public:
    /** Opens the current version of closure `name` in `domain`. Throws Error. */
    Closure(const Domain &domain, const std::string &name) {
        check(mt_closure_open(domain.native_handle(), name.c_str(), &handle_));
    }

    /** Takes over `other`'s version; `other` is left without one. */
    Closure(Closure &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}

    /** Lets go of this version, then takes over `other`'s. */
    Closure &operator=(Closure &&other) noexcept {
        if (this != &other) {
            mt_closure_free(handle_);
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }

    /** Not copyable (open it again for a second hold). */
    Closure(const Closure &) = delete;
    /** Not copyable (open it again for a second hold). */
    Closure &operator=(const Closure &) = delete;

    /** Lets go of the version. */
    ~Closure() { mt_closure_free(handle_); }

    /** The version number. Throws Error. */
    std::uint64_t version() const {
        std::uint64_t v = 0;
        check(mt_closure_version(handle_, &v));
        return v;
    }

    /** The value. Throws Error. */
    Value root() const {
        mt_value v{};
        check(mt_closure_root(handle_, &v));
        return Value(v);
    }

    /** The bytes of a bytes closure, in place. Throws Error(MT_ERR_INVALID) for a tree. */
    std::string_view bytes() const {
        const std::uint8_t *p = nullptr;
        std::size_t n = 0;
        check(mt_closure_bytes(handle_, &p, &n));
        return std::string_view(reinterpret_cast<const char *>(p), n);
    }

    /** The C handle (owned by this Closure: do not free it); NULL if moved from. */
    mt_closure *native_handle() const noexcept { return handle_; }

private:
    mt_closure *handle_ = nullptr;
};

/**
 * Builds a value to publish (mt_closure_builder): add_* for scalars,
 * begin_list()/begin_map() ... end(), and key() before each value in a map.
 * Each call returns *this, so calls chain. Misuse throws
 * Error(MT_ERR_INVALID). Move-only; use it from one thread at a time.
 *
 *     mtipc::ClosureBuilder b;
 *     b.begin_map().key("id").add_int(7).key("tags").begin_list().add_str("a").end().end();
 *     std::uint64_t v = b.publish(domain, "routing");
 */
class ClosureBuilder {
public:
    /** An empty builder. Throws Error. */
    ClosureBuilder() { check(mt_closure_builder_new(&handle_)); }
    /** Takes over `other`'s builder. */
    ClosureBuilder(ClosureBuilder &&other) noexcept
        : handle_(std::exchange(other.handle_, nullptr)) {}
    /** Frees this builder, then takes over `other`'s. */
    ClosureBuilder &operator=(ClosureBuilder &&other) noexcept {
        if (this != &other) {
            mt_closure_builder_free(handle_);
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }
    /** Not copyable. */
    ClosureBuilder(const ClosureBuilder &) = delete;
    /** Not copyable. */
    ClosureBuilder &operator=(const ClosureBuilder &) = delete;
    /** Frees the builder and any value in it. */
    ~ClosureBuilder() { mt_closure_builder_free(handle_); }

    /** Adds an integer. */
    ClosureBuilder &add_int(std::int64_t v) {
        check(mt_closure_builder_add_int(handle_, v));
        return *this;
    }
    /** Adds a float. */
    ClosureBuilder &add_float(double v) {
        check(mt_closure_builder_add_float(handle_, v));
        return *this;
    }
    /** Adds a UTF-8 string (copied). */
    ClosureBuilder &add_str(std::string_view s) {
        check(mt_closure_builder_add_str(handle_, s.data(), s.size()));
        return *this;
    }
    /** Adds a byte string (copied). */
    ClosureBuilder &add_bytes(const void *p, std::size_t n) {
        check(mt_closure_builder_add_bytes(handle_, static_cast<const std::uint8_t *>(p), n));
        return *this;
    }
    /** Opens a list. */
    ClosureBuilder &begin_list() {
        check(mt_closure_builder_begin_list(handle_));
        return *this;
    }
    /** Opens a map. */
    ClosureBuilder &begin_map() {
        check(mt_closure_builder_begin_map(handle_));
        return *this;
    }
    /** The key of the next value in the open map. */
    ClosureBuilder &key(std::string_view k) {
        check(mt_closure_builder_key(handle_, k.data(), k.size()));
        return *this;
    }
    /** Closes the innermost list or map. */
    ClosureBuilder &end() {
        check(mt_closure_builder_end(handle_));
        return *this;
    }

    /**
     * Publishes the value as the new current version of closure `name` and
     * returns its version; the builder is then empty. Throws Error (the
     * builder keeps its value then).
     */
    std::uint64_t publish(const Domain &domain, const std::string &name) {
        std::uint64_t v = 0;
        check(mt_closure_publish(domain.native_handle(), name.c_str(), handle_, &v));
        return v;
    }

    /** The C handle (owned by this builder). */
    mt_closure_builder *native_handle() const noexcept { return handle_; }

private:
    mt_closure_builder *handle_ = nullptr;
};

/** Publishes `bytes` as the new current version of closure `name`; returns the version. Throws Error. */
inline std::uint64_t publish_bytes(const Domain &domain, const std::string &name,
                                   std::string_view bytes) {
    std::uint64_t v = 0;
    check(mt_closure_publish_bytes(domain.native_handle(), name.c_str(),
                                   reinterpret_cast<const std::uint8_t *>(bytes.data()),
                                   bytes.size(), &v));
    return v;
}

// ---------------------------------------------------------------------------
// Sessions and request dispatch (mt_session_*, mt_worker_*, mt_request_*,
// mt_ticket_*): see those functions in mtipc.h for the full contract.

/**
 * Capacities of a new session set (SessionTable::create); a field left 0
 * takes its default: 4096 sessions, 2 groups, 256 request slots, 64 KiB
 * messages, 64 workers.
 */
struct SessionTableOptions {
    /** Sessions the table holds (1 to 16,777,215). */
    std::uint32_t capacity = 0;
    /** Worker groups (2 to 64), numbered from 0. */
    std::uint32_t groups = 0;
    /** Requests queued or being served at once, over all submitters (1 to 65536). */
    std::uint32_t slots = 0;
    /** Largest request and largest response in bytes (1 to 16 MiB). */
    std::uint32_t max_message = 0;
    /** Workers registered at once (1 to 4095). */
    std::uint32_t workers = 0;
};

/** One session, as SessionTable::lookup reads it (a consistent snapshot). */
struct SessionInfo {
    /** Its id. */
    std::uint64_t id = 0;
    /** The tenant it belongs to. */
    std::string tenant;
    /** The high-level state (the application's; opaque to mtipc). */
    std::uint32_t state = 0;
    /** The worker it is bound to (Worker::id()); 0: unbound. */
    std::uint64_t worker = 0;
    /** Requests of this session queued or being served. */
    std::uint32_t in_flight = 0;
    /** Creation time. */
    std::chrono::system_clock::time_point created;
    /** Time of the last create or update. */
    std::chrono::system_clock::time_point updated;
    /** The user data (at most MT_SESSION_USER_MAX bytes). */
    std::string user;
};

namespace detail {

inline std::chrono::system_clock::time_point from_unix_ns(std::uint64_t ns) {
    return std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::nanoseconds(ns)));
}

inline const std::uint8_t *bytes(std::string_view s) noexcept {
    return reinterpret_cast<const std::uint8_t *>(s.data());
}

/** A move-only owner of one C handle, freed with `Free`. */
template <typename T, void (*Free)(T *)> class Owned {
public:
    Owned() noexcept = default;
    explicit Owned(T *h) noexcept : h_(h) {}
    Owned(Owned &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    Owned &operator=(Owned &&o) noexcept {
        if (this != &o) {
            Free(h_);
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    Owned(const Owned &) = delete;
    Owned &operator=(const Owned &) = delete;
    ~Owned() { Free(h_); }
    T *get() const noexcept { return h_; }
    T *release() noexcept { return std::exchange(h_, nullptr); }
    void reset() noexcept { Free(std::exchange(h_, nullptr)); }

private:
    T *h_ = nullptr;
};

} // namespace detail

/**
 * A request taken by a Worker: its bytes in place in the shared slot.
 *
 * Move-only; the destructor frees it (mt_request_free). A request
 * destroyed unanswered fails: its submitter gets Error(MT_ERR_UNAVAILABLE).
 * It stays answerable after its Worker is destroyed (the worker is then
 * unregistered once the request is answered or destroyed). Used from one
 * thread at a time. A moved-from Request holds nothing: every call on it
 * throws Error(MT_ERR_INVALID).
 */
class Request {
public:
    /** An empty Request (as a moved-from one). */
    Request() noexcept = default;

    /** Takes ownership of `handle` (from mt_worker_next). */
    explicit Request(mt_request *handle) noexcept : h_(handle) {}

    /** The session the request belongs to (0 for an empty Request). */
    std::uint64_t session() const noexcept { return mt_request_session(h_.get()); }

    /**
     * The request's bytes, in place (no copy): valid until respond() or
     * the Request's end. Throws Error(MT_ERR_INVALID) once answered.
     */
    std::string_view data() const {
        const std::uint8_t *p = nullptr;
        std::size_t n = 0;
        check(mt_request_data(h_.get(), &p, &n));
        return std::string_view(reinterpret_cast<const char *>(p), n);
    }

    /**
     * Answers with `response` (at most SessionTable::max_message() bytes);
     * the submitter wakes, and the Worker may take its next request.
     * Throws Error: MT_ERR_INVALID for too long a response (the message
     * gives the limit; answer again with a shorter one) or a second
     * answer.
     */
    void respond(std::string_view response) {
        check(mt_request_respond(h_.get(), detail::bytes(response), response.size()));
    }

    /** True if this Request holds a request. */
    explicit operator bool() const noexcept { return h_.get() != nullptr; }

    /** The C handle; NULL for an empty Request. It stays owned by this Request. */
    mt_request *native_handle() const noexcept { return h_.get(); }

private:
    detail::Owned<mt_request, mt_request_free> h_;
};

/**
 * A registered worker of one group (SessionTable::register_worker).
 *
 * Move-only; the destructor frees it (mt_worker_free), which unregisters
 * it (requests queued to it go to another worker of its group, its
 * sessions are unbound); with a Request still open, once that request is
 * answered or destroyed. One thread at a time takes requests; one request
 * at a time (next() throws Error(MT_ERR_INVALID) while the previous one is
 * neither answered nor destroyed).
 */
class Worker {
public:
    /** An empty Worker (as a moved-from one). */
    Worker() noexcept = default;

    /** Takes ownership of `handle` (from mt_worker_register). */
    explicit Worker(mt_worker *handle) noexcept : h_(handle) {}

    /** The worker's id, as SessionInfo::worker and SessionTable::bind use it (0 if empty). */
    std::uint64_t id() const noexcept { return mt_worker_id(h_.get()); }

    /** The worker's group. */
    std::uint32_t group() const noexcept { return mt_worker_group(h_.get()); }

    /**
     * The next request for this worker, waiting at most `timeout`
     * (std::nullopt, the default: no limit; a timeout of 2^32 - 1 ms or
     * more is shortened to the longest finite one); std::nullopt if none
     * came in time. Throws Error.
     */
    std::optional<Request> next(std::optional<std::chrono::milliseconds> timeout = std::nullopt) {
        mt_request *r = nullptr;
        mt_status st = mt_worker_next(h_.get(), detail::timeout_ms(timeout), &r);
        if (st == MT_ERR_TIMEOUT) {
            return std::nullopt;
        }
        check(st);
        return Request(r);
    }

    /** The next request if one is queued for this worker, without waiting. Throws Error. */
    std::optional<Request> try_next() {
        mt_request *r = nullptr;
        mt_status st = mt_worker_try_next(h_.get(), &r);
        if (st == MT_ERR_DEFERRED) {
            return std::nullopt;
        }
        check(st);
        return Request(r);
    }

    /** True if this Worker holds a worker. */
    explicit operator bool() const noexcept { return h_.get() != nullptr; }

    /** The C handle; NULL for an empty Worker. It stays owned by this Worker. */
    mt_worker *native_handle() const noexcept { return h_.get(); }

private:
    detail::Owned<mt_worker, mt_worker_free> h_;
};

/**
 * A submitted request on the submitter's side (SessionTable::submit): wait
 * for its response, then read it in place.
 *
 * Move-only; the destructor frees it (mt_ticket_free): a request not yet
 * answered is withdrawn. One thread at a time.
 */
class Ticket {
public:
    /** An empty Ticket (as a moved-from one). */
    Ticket() noexcept = default;

    /** Takes ownership of `handle` (from mt_request_submit). */
    explicit Ticket(mt_ticket *handle) noexcept : h_(handle) {}

    /**
     * Waits at most `timeout` (std::nullopt, the default: no limit) for the
     * response: true when it is there (see response()), false if the
     * timeout passed (wait again, or drop the ticket). Throws
     * Error(MT_ERR_UNAVAILABLE) when no live worker of the group could
     * serve the request (for good: every later call throws it again).
     */
    bool wait(std::optional<std::chrono::milliseconds> timeout = std::nullopt) {
        mt_status st = mt_ticket_wait(h_.get(), detail::timeout_ms(timeout));
        if (st == MT_ERR_TIMEOUT) {
            return false;
        }
        check(st);
        return true;
    }

    /** As wait() without waiting: false if the response is not there yet. */
    bool poll() {
        mt_status st = mt_ticket_poll(h_.get());
        if (st == MT_ERR_DEFERRED) {
            return false;
        }
        check(st);
        return true;
    }

    /**
     * The response, in place (no copy), valid as long as the Ticket.
     * Throws Error(MT_ERR_INVALID) before wait() or poll() returned true.
     */
    std::string_view response() const {
        const std::uint8_t *p = nullptr;
        std::size_t n = 0;
        check(mt_ticket_response(h_.get(), &p, &n));
        return std::string_view(reinterpret_cast<const char *>(p), n);
    }

    /**
     * wait(timeout), then a copy of the response; throws
     * Error(MT_ERR_TIMEOUT) if it did not come in time.
     */
    std::string get(std::optional<std::chrono::milliseconds> timeout = std::nullopt) {
        if (!wait(timeout)) {
            throw Error(MT_ERR_TIMEOUT, "no response within the timeout");
        }
        return std::string(response());
    }

    /** True if this Ticket holds a ticket. */
    explicit operator bool() const noexcept { return h_.get() != nullptr; }

    /** The C handle; NULL for an empty Ticket. It stays owned by this Ticket. */
    mt_ticket *native_handle() const noexcept { return h_.get(); }

private:
    detail::Owned<mt_ticket, mt_ticket_free> h_;
};

/**
 * An open session set: a session table and the request area of the same
 * name in a domain.
 *
 * Move-only; the destructor frees the handle (mt_session_table_free).
 * Workers and tickets made from it may outlive it, and so may it outlive
 * the Domain. One SessionTable may be used from several threads at once.
 * A moved-from SessionTable holds nothing: calls on it throw
 * Error(MT_ERR_INVALID).
 *
 *     mtipc::SessionTable t = mtipc::SessionTable::open(domain, "shop");
 *     std::uint64_t s = t.create_session("acme");
 *     mtipc::Ticket tk = t.submit(s, 0, "hello");   // a worker of group 0 answers
 *     std::string reply = tk.get(std::chrono::seconds(5));
 */
class SessionTable {
public:
    /** An empty SessionTable (as a moved-from one). */
    SessionTable() noexcept = default;

    /** Takes ownership of `handle` (from mt_session_table_open and the like). */
    explicit SessionTable(mt_session_table *handle) noexcept : h_(handle) {}

    /**
     * Creates the session set `name` (the tenant-id rule) with `options`.
     * Throws Error: MT_ERR_EXISTS, MT_ERR_INVALID (a bad name or capacity).
     */
    static SessionTable create(const Domain &domain, const std::string &name,
                               const SessionTableOptions &options = SessionTableOptions()) {
        mt_session_table_opts o = opts(options);
        mt_session_table *t = nullptr;
        check(mt_session_table_create(domain.native_handle(), name.c_str(), &o, &t));
        return SessionTable(t);
    }

    /** Opens the existing session set `name`. Throws Error (MT_ERR_NOT_FOUND, ...). */
    static SessionTable open(const Domain &domain, const std::string &name) {
        mt_session_table *t = nullptr;
        check(mt_session_table_open(domain.native_handle(), name.c_str(), &t));
        return SessionTable(t);
    }

    /** Opens `name`, creating it with `options` if missing (an existing one keeps its own). */
    static SessionTable open_or_create(const Domain &domain, const std::string &name,
                                       const SessionTableOptions &options = SessionTableOptions()) {
        mt_session_table_opts o = opts(options);
        mt_session_table *t = nullptr;
        check(mt_session_table_open_or_create(domain.native_handle(), name.c_str(), &o, &t));
        return SessionTable(t);
    }

    /** Sessions the table holds. */
    std::uint32_t capacity() const noexcept { return mt_session_table_capacity(h_.get()); }
    /** Worker groups, numbered from 0. */
    std::uint32_t groups() const noexcept { return mt_session_table_groups(h_.get()); }
    /** Largest request and largest response in bytes. */
    std::uint32_t max_message() const noexcept { return mt_session_table_max_message(h_.get()); }

    /** Spins of a wait before it sleeps (0: sleep at once), in this process. */
    void set_spin(std::uint32_t iterations) const {
        check(mt_session_table_set_spin(h_.get(), iterations));
    }

    /**
     * Creates a session of `tenant` and returns its id. Throws Error:
     * MT_ERR_FULL, MT_ERR_INVALID (a bad tenant id, more than
     * MT_SESSION_USER_MAX bytes of `user`).
     */
    std::uint64_t create_session(const std::string &tenant, std::uint32_t state = 0,
                                 std::string_view user = {}) const {
        std::uint64_t id = 0;
        check(mt_session_create(h_.get(), tenant.c_str(), state, detail::bytes(user), user.size(),
                                &id));
        return id;
    }

    /** Session `id`, or std::nullopt if it does not exist (ended, stale). Throws Error otherwise. */
    std::optional<SessionInfo> lookup(std::uint64_t id) const {
        mt_session_info c{};
        mt_status st = mt_session_lookup(h_.get(), id, &c);
        if (st == MT_ERR_NOT_FOUND) {
            return std::nullopt;
        }
        check(st);
        SessionInfo s;
        s.id = c.id;
        s.tenant = c.tenant;
        s.state = c.state;
        s.worker = c.worker;
        s.in_flight = c.in_flight;
        s.created = detail::from_unix_ns(c.created_ns);
        s.updated = detail::from_unix_ns(c.updated_ns);
        s.user.assign(reinterpret_cast<const char *>(c.user),
                      std::min<std::size_t>(c.user_len, sizeof c.user));
        return s;
    }

    /** Sets the session's state, keeping its user data. Throws Error (MT_ERR_NOT_FOUND, ...). */
    void update(std::uint64_t id, std::uint32_t state) const {
        check(mt_session_update(h_.get(), id, state, nullptr, 0));
    }

    /** Sets the session's state and user data. Throws Error. */
    void update(std::uint64_t id, std::uint32_t state, std::string_view user) const {
        // A non-NULL pointer even for empty data: that empties it.
        static const std::uint8_t none = 0;
        check(mt_session_update(h_.get(), id, state, user.empty() ? &none : detail::bytes(user),
                                user.size()));
    }

    /** Binds the session to the worker `worker` (Worker::id()). Throws Error. */
    void bind(std::uint64_t id, std::uint64_t worker) const {
        check(mt_session_bind(h_.get(), id, worker));
    }

    /** Removes the session's binding. Throws Error. */
    void unbind(std::uint64_t id) const { check(mt_session_unbind(h_.get(), id)); }

    /** Ends the session: its id never resolves again. Throws Error. */
    void end(std::uint64_t id) const { check(mt_session_end(h_.get(), id)); }

    /** Registers a worker of `group` in this process. Throws Error (MT_ERR_FULL, ...). */
    Worker register_worker(std::uint32_t group) const {
        mt_worker *w = nullptr;
        check(mt_worker_register(h_.get(), group, &w));
        return Worker(w);
    }

    /**
     * Submits `request` for session `session` to worker group `group`.
     * Throws Error: MT_ERR_INVALID (too long, no such group),
     * MT_ERR_NOT_FOUND (no such session), MT_ERR_FULL (no free slot).
     */
    Ticket submit(std::uint64_t session, std::uint32_t group, std::string_view request) const {
        mt_ticket *t = nullptr;
        check(mt_request_submit(h_.get(), session, group, detail::bytes(request), request.size(),
                                &t));
        return Ticket(t);
    }

    /** True if this SessionTable holds a handle. */
    explicit operator bool() const noexcept { return h_.get() != nullptr; }

    /** The C handle; NULL for an empty SessionTable. It stays owned by this SessionTable. */
    mt_session_table *native_handle() const noexcept { return h_.get(); }

private:
    static mt_session_table_opts opts(const SessionTableOptions &o) {
        mt_session_table_opts c = MT_SESSION_TABLE_OPTS_INIT;
        c.capacity = o.capacity;
        c.groups = o.groups;
        c.slots = o.slots;
        c.max_message = o.max_message;
        c.workers = o.workers;
        return c;
    }

    detail::Owned<mt_session_table, mt_session_table_free> h_;
};

/* ---------------------------------------------------------------------- */
/* Permits for gateway volumes (mt_volume_*, mt_permit_*, mt_transfer_*)   */
/* ---------------------------------------------------------------------- */

/** What a permit allows (MT_PERMIT_READ / MT_PERMIT_WRITE). */
enum class PermitMode : std::uint32_t { Read = MT_PERMIT_READ, Write = MT_PERMIT_WRITE };

/** How create_volume records a volume (mt_volume_opts). */
struct VolumeOptions {
    /** Cap on concurrent transfers; 0: no cap. */
    std::uint32_t max_transfers = 0;
    /** A permit's lease; 0: 30 s. */
    std::chrono::milliseconds lease{0};
    /** etcd endpoints ("http://h:p,..."); empty: this host's shared memory. */
    std::string etcd;
};

/**
 * Records the gateway volume `name` with its directory `dir` (absolute, of
 * this uid, writable by nobody else). Throws Error: MT_ERR_EXISTS,
 * MT_ERR_INVALID, MT_ERR_DENIED.
 */
inline void create_volume(const Domain &domain, const std::string &name, const std::string &dir,
                          const VolumeOptions &options = VolumeOptions()) {
    mt_volume_opts o = MT_VOLUME_OPTS_INIT;
    o.max_transfers = options.max_transfers;
    o.lease_ms = static_cast<std::uint32_t>(options.lease.count());
    o.etcd = options.etcd.empty() ? nullptr : options.etcd.c_str();
    check(mt_volume_create(domain.native_handle(), name.c_str(), dir.c_str(), &o));
}

/**
 * A granted permit (RAII): the right to transfer one path of a volume in
 * one mode. The destructor gives it back (mt_permit_free). Move-only; a
 * moved-from Permit holds nothing and its calls throw Error(MT_ERR_INVALID).
 * May be used from several threads at once.
 */
class Permit {
public:
    /** An empty Permit (as a moved-from one). */
    Permit() noexcept = default;

    /** Takes ownership of `handle` (from mt_permit_request). */
    explicit Permit(mt_permit *handle) noexcept : h_(handle) {}

    /**
     * Asks for a permit on `path` of `volume` in `mode`, waiting at most
     * `wait` (0: do not wait). Throws Error: MT_ERR_DEFERRED (wait 0 and
     * the request must wait), MT_ERR_TIMEOUT, MT_ERR_INVALID (bad path or
     * mode), MT_ERR_NOT_FOUND (no such volume), MT_ERR_UNAVAILABLE (etcd).
     */
    static Permit request(const Domain &domain, const std::string &volume,
                          const std::string &path, PermitMode mode,
                          std::chrono::milliseconds wait = std::chrono::milliseconds(0)) {
        mt_permit *p = nullptr;
        check(mt_permit_request(domain.native_handle(), volume.c_str(), path.c_str(),
                                static_cast<std::uint32_t>(mode), detail::timeout_ms(wait), &p));
        return Permit(p);
    }

    /** The fencing token: strictly increasing per volume (0 when empty). */
    std::uint64_t token() const noexcept { return mt_permit_token(h_.get()); }

    /** Extends the lease. Throws Error(MT_ERR_FENCED) if the permit was lost. */
    void renew() { check(mt_permit_renew(h_.get())); }

    /**
     * Copies the local file `src` to the permit's path (needs a write
     * permit). Throws Error: MT_ERR_FENCED (the volume is unchanged),
     * MT_ERR_INVALID, MT_ERR_DENIED, MT_ERR_IO.
     */
    void put(const std::string &src) { check(mt_transfer_put(h_.get(), src.c_str())); }

    /** Copies the permit's path to the local file `dst`. Throws Error as put(). */
    void get(const std::string &dst) { check(mt_transfer_get(h_.get(), dst.c_str())); }

    /** Gives the permit back now (the destructor does it otherwise). */
    void release() noexcept { h_.reset(); }

    /** Whether this Permit holds a permit. */
    explicit operator bool() const noexcept { return h_.get() != nullptr; }

    /** The C handle; NULL for an empty Permit. It stays owned by this Permit. */
    mt_permit *native_handle() const noexcept { return h_.get(); }

private:
    detail::Owned<mt_permit, mt_permit_free> h_;
};

/* ---------------------------------------------------------------------- */
/* HA hooks of a supervised application (mt_ha_*)                         */
/* ---------------------------------------------------------------------- */

/**
 * The HA hooks (docs/ha.md): how an application supervised by mtipc-ha
 * tells the Monitor that it is ready, alive and healthy, and learns its
 * node's role. Outside supervision (no $MTIPC_HA_SOCKET) every call
 * succeeds and does nothing, and role() is {MT_HA_NONE, 0}.
 *
 *     mtipc::ha::on_role([](mt_ha_role r, std::uint64_t epoch) { serve(r == MT_HA_ACTIVE); });
 *     mtipc::ha::set_health([] { return queue_depth() < 1000; });
 *     mtipc::ha::ready();
 *     for (;;) { work(); mtipc::ha::heartbeat(); }
 *
 * Calls that fail throw mtipc::Error: MT_ERR_UNAVAILABLE while no Monitor
 * is connected (the library reconnects by itself), MT_ERR_DENIED for a
 * socket of another uid. The callbacks run on a thread of the library.
 */
namespace ha {

/** A health callback: true when the application is healthy. */
using HealthFn = std::function<bool()>;

/** A role callback: the node's role and the epoch of its term. */
using RoleFn = std::function<void(mt_ha_role role, std::uint64_t epoch)>;

namespace detail {

/** The process's C++ callbacks; never destroyed (the library's thread may call them at exit). */
struct Slots {
    std::mutex mutex;
    std::shared_ptr<const HealthFn> health;
    std::shared_ptr<const RoleFn> role;

    static Slots &get() {
        static Slots *const slots = new Slots; // never freed: see above
        return *slots;
    }
};

/** The C health callback behind set_health: 0 healthy; an exception is unhealthy. */
inline int health_trampoline(void *) noexcept {
    std::shared_ptr<const HealthFn> fn;
    {
        Slots &s = Slots::get();
        std::lock_guard<std::mutex> lock(s.mutex);
        fn = s.health;
    }
    if (!fn || !*fn) {
        return 0;
    }
    try {
        return (*fn)() ? 0 : 1;
    } catch (...) {
        return 1;
    }
}

/** The C role callback behind on_role; an exception it lets out is dropped. */
inline void role_trampoline(void *, mt_ha_role role, std::uint64_t epoch) noexcept {
    std::shared_ptr<const RoleFn> fn;
    {
        Slots &s = Slots::get();
        std::lock_guard<std::mutex> lock(s.mutex);
        fn = s.role;
    }
    if (!fn || !*fn) {
        return;
    }
    try {
        (*fn)(role, epoch);
    } catch (...) {
        // Nothing may unwind into C.
    }
}

} // namespace detail

/** Whether this process runs under the HA supervisor (mt_ha_supervised). */
inline bool supervised() noexcept { return mt_ha_supervised() != 0; }

/**
 * Tells the Monitor that the application is ready (mt_ha_ready); kept and
 * told again to a Monitor that restarts. Returns once sent, without waiting
 * for the Monitor; starts no thread (only a set_health or on_role callback
 * does). A process the HA Spawner started with its connection already made
 * (MTIPC_HA_FD) sends on that one. Throws Error(MT_ERR_UNAVAILABLE) while
 * no Monitor is connected.
 */
inline void ready() { check(mt_ha_ready()); }

/** Tells the Monitor that the application is alive (mt_ha_heartbeat). Throws Error. */
inline void heartbeat() { check(mt_ha_heartbeat()); }

/**
 * Registers the health callback the Monitor polls (mt_ha_set_health),
 * replacing any other; an empty `fn` removes it. It returns true when
 * healthy; an exception counts as unhealthy. Throws
 * Error(MT_ERR_UNAVAILABLE) while no Monitor is connected (the callback is
 * kept all the same).
 */
inline void set_health(HealthFn fn) {
    detail::Slots &s = detail::Slots::get();
    std::shared_ptr<const HealthFn> next;
    if (fn) {
        next = std::make_shared<const HealthFn>(std::move(fn));
    }
    const bool set = next != nullptr;
    {
        std::lock_guard<std::mutex> lock(s.mutex);
        std::swap(s.health, next); // `next` now holds the old one, freed after the unlock
    }
    check(mt_ha_set_health(set ? detail::health_trampoline : nullptr, nullptr));
}

/**
 * Registers the role callback (mt_ha_on_role), replacing any other; an
 * empty `fn` removes it. Under supervision it is called at once, before
 * this returns, with the current role, then on every change (on the
 * library's thread). Calling on_role from inside the callback throws
 * Error(MT_ERR_INVALID) and changes nothing. Throws
 * Error(MT_ERR_UNAVAILABLE) if no Monitor has ever answered (the callback
 * is kept and called once one does).
 */
inline void on_role(RoleFn fn) {
    detail::Slots &s = detail::Slots::get();
    std::shared_ptr<const RoleFn> next;
    if (fn) {
        next = std::make_shared<const RoleFn>(std::move(fn));
    }
    const bool set = next != nullptr;
    {
        std::lock_guard<std::mutex> lock(s.mutex);
        std::swap(s.role, next);
    }
    const mt_status st = mt_ha_on_role(set ? detail::role_trampoline : nullptr, nullptr);
    if (st == MT_ERR_INVALID) {
        std::lock_guard<std::mutex> lock(s.mutex);
        std::swap(s.role, next); // refused: the previous callback stays
    }
    check(st);
}

/**
 * The node's role and epoch as the Monitor last said them
 * (mt_ha_role_get); {MT_HA_NONE, 0} outside supervision. Throws
 * Error(MT_ERR_UNAVAILABLE) if no Monitor has ever answered.
 */
inline std::pair<mt_ha_role, std::uint64_t> role() {
    mt_ha_role r = MT_HA_NONE;
    std::uint64_t epoch = 0;
    check(mt_ha_role_get(&r, &epoch));
    return {r, epoch};
}

} // namespace ha

} // namespace mtipc

/** The short name the issue tracker and examples use: mt::Permit and friends. */
namespace mt = mtipc;

#endif /* MTIPC_HPP */
