//! The HA Master (watches the Server, the Monitor, the Spawner and the
//! Master Watcher, and restarts whichever ends) and the HA Master Watcher
//! (watches the Master and restarts it). One loop, with the list of roles
//! it keeps.
//!
//! A role is found by its lock's note (pid and start time) and watched
//! with a pidfd, so its end wakes the loop at once whoever its parent is
//! (a role started by a Master that has since been restarted is the node
//! process's child). A role started and not yet holding its lock is not
//! started again while it runs. Nothing is restarted once the node has
//! stopped (`<domain>/ha/stopped`).

use super::{log, Ctx, Pid, Role};
use mtipc::internals::sync::Ordering;
use mtipc::log::Level;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

struct Kept {
    role: Role,
    /// The running one and its pidfd.
    seen: Option<(Pid, OwnedFd)>,
    /// One this loop started that has not taken its lock yet.
    started: Option<(u32, Instant)>,
}

/// The loop of the Master (`me` = Master) or of the Master Watcher.
pub fn run(ctx: Ctx, me: Role) -> std::process::ExitCode {
    let wake = match super::begin(&ctx, me) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let (_lock, wake) = (wake.lock, wake.wake);
    let list: &[Role] = if me == Role::Master {
        &[Role::Spawner, Role::Monitor, Role::Server, Role::Watcher]
    } else {
        &[Role::Master]
    };
    let mut kept: Vec<Kept> = list
        .iter()
        .map(|&role| Kept {
            role,
            seen: None,
            started: None,
        })
        .collect();
    let mut first = true;
    loop {
        if super::STOPS.load(Ordering::Acquire) > 0 || !ctx.node_alive() {
            break;
        }
        super::reap_children();
        let stopped = super::stopped_marker(&ctx.domain).exists();
        for k in &mut kept {
            // Its pidfd says whether it ended (no /proc read each round).
            if k.seen
                .as_ref()
                .is_some_and(|(_, fd)| !crate::ha::readable_now(&[fd.as_fd()])[0])
            {
                continue;
            }
            k.seen =
                super::running(&ctx.domain, k.role).and_then(|p| super::pidfd(p).map(|fd| (p, fd)));
            if let Some((p, _)) = &k.seen {
                if k.started.is_some_and(|(pid, _)| pid == p.pid) {
                    k.started = None;
                }
                continue;
            }
            if stopped {
                continue;
            }
            // Started and still starting (not holding its lock yet).
            if let Some((pid, at)) = k.started {
                let alive = mtipc::internals::sys::ProcId::of(pid)
                    .ok()
                    .flatten()
                    .is_some()
                    && !super::zombie(pid);
                if alive && at.elapsed() < Duration::from_secs(5) {
                    continue;
                }
            }
            match super::start_role(&ctx, k.role) {
                Ok(pid) => {
                    if !first || k.role != Role::Master {
                        log(
                            if first { Level::Debug } else { Level::Warn },
                            &format!("{me}: {} is not running; started it (pid {pid})", k.role),
                        );
                    }
                    k.started = Some((pid, Instant::now()));
                }
                Err(e) => log(Level::Error, &format!("{me}: cannot start {}: {e}", k.role)),
            }
        }
        first = false;
        let starting = kept.iter().any(|k| k.started.is_some() && k.seen.is_none());
        let fds: Vec<BorrowedFd<'_>> = std::iter::once(wake.as_fd())
            .chain(ctx.node_fd.as_ref().map(|f| f.as_fd()))
            .chain(
                kept.iter()
                    .filter_map(|k| k.seen.as_ref().map(|(_, fd)| fd.as_fd())),
            )
            .collect();
        // A role's end, the node's end, a signal, or: while a role is
        // starting, soon (to find its lock); otherwise a slow look.
        let wait = if starting {
            Duration::from_millis(5)
        } else {
            Duration::from_secs(2)
        };
        crate::ha::poll_fds(&fds, wait);
        super::drain(&wake);
    }
    std::process::ExitCode::SUCCESS
}
