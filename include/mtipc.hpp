/*
 * mtipc.hpp: a header-only C++17 wrapper over the C ABI in mtipc.h.
 *
 * Handles become move-only RAII classes, failing calls throw mtipc::Error
 * (which carries the mt_status code and the thread's mt_last_error()
 * message), and timeouts are std::chrono durations. Nothing here has logic
 * of its own: every member forwards to one C function of mtipc.h, so the
 * C documentation (thread safety, lifetimes, error codes) applies as is.
 *
 *     #include <mtipc.hpp>
 *
 *     mtipc::Domain d("/run/user/1000/mtipc");   // or mtipc::Domain d; for the default
 *     d.sem_post(1);
 *     if (!d.sem_wait(std::chrono::milliseconds(100))) { ... timed out ... }
 *
 * Link with -lmtipc (pkg-config --cflags --libs mtipc).
 */

#ifndef MTIPC_HPP
#define MTIPC_HPP

#include <mtipc.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

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
        mt_status st = mt_sem_wait(handle_, timeout_ms(timeout));
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
    /** The C timeout for an optional duration: MT_WAIT_FOREVER for none, clamped below it. */
    static std::uint32_t timeout_ms(const std::optional<std::chrono::milliseconds> &timeout) {
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

    mt_domain *handle_ = nullptr;
};

} // namespace mtipc

#endif /* MTIPC_HPP */
