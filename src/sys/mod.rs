//! The foundation every capability builds on: process identity (and the
//! host's name), names, files opened without following links, atomic
//! publish and replace, `flock`, and the socket calls (`poll`, `send`
//! without `SIGPIPE`, peer credentials), a thread's scheduling policy. Each mechanism lives here once;
//! the capabilities (`attach`, `session`, `closure`, and those to come) use
//! it and never each other's internals.
//!
//! System calls go through `rustix` (io-safe descriptors as std's, `flock`
//! on a borrowed descriptor, the `*at` calls, `poll`, `MSG_NOSIGNAL`,
//! `SO_PEERCRED`), and `EINTR` is retried in one place ([`retry`]).

pub mod dir;
pub mod fs;
pub mod name;
pub mod net;
pub mod proc;
pub mod thread;

pub use dir::{Dir, FileId, Stamp};
pub use fs::{check_owner, make_dir, LockFile};
pub use name::{check_name, name_problem, shown, MAX_NAME};
pub use proc::{euid, host_name, ProcId};

/// Runs the system call `f` until it does not fail with `EINTR`; its error
/// as a `std::io::Error`.
pub fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> std::io::Result<T> {
    loop {
        match f() {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map_err(std::io::Error::from),
        }
    }
}

/// Fills `buf` from the kernel's random number generator (`getrandom(2)`,
/// blocking only until the generator is first seeded at boot).
pub fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        done += retry(|| {
            rustix::rand::getrandom(&mut buf[done..], rustix::rand::GetRandomFlags::empty())
        })?;
    }
    Ok(())
}

/// The system-wide monotonic clock (`CLOCK_MONOTONIC`), in ns. Unlike
/// `Instant`, its value means the same in every process of the host, so it
/// can be stored in shared memory (a permit's lease end).
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_fill_the_whole_buffer() {
        // Two draws of 32 bytes never agree (2^-256), and a large buffer is
        // filled to its end (getrandom may return less than asked).
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        random_bytes(&mut a).unwrap();
        random_bytes(&mut b).unwrap();
        assert_ne!(a, b);
        let mut big = vec![0u8; 1 << 20];
        random_bytes(&mut big).unwrap();
        // Each 4 KiB block got bytes: a zero block would be 2^-32768.
        assert!(big.chunks(4096).all(|c| c.iter().any(|&x| x != 0)));
        random_bytes(&mut []).unwrap();
    }
}
