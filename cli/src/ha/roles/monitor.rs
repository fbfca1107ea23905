//! The HA Monitor: the hooks' socket (`<domain>/ha/monitor.sock`, what
//! `MTIPC_HA_SOCKET` names) and the watching of each running process at
//! its `monitor_ms` ([`crate::ha::monitor::Monitoring`]). The Server tells
//! it what runs (`<domain>/ha/monitor-server.sock`: the whole list on
//! every connection, then each change); it sends the Server everything it
//! sees, and the same to the broadcast list of the duplex pair (no peer on
//! a single node, so the list is empty).
//!
//! A Monitor that is restarted starts with no connection: the supervised
//! applications' hooks reconnect by themselves (within 2 s) and say
//! `ready` again; the Server sends the list again; the watchdogs count
//! from the new watch.

use super::wire::{self, Conn, ToMonitor};
use super::{log, Ctx};
use crate::ha::monitor::{Monitoring, Seen};
use crate::ha::supervisor::socket_path;
use mtipc::ha::Role as HaRole;
use mtipc::internals::ha::Endpoint;
use mtipc::internals::sync::Ordering;
use mtipc::log::Level;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The Monitor's main.
pub fn run(ctx: Ctx) -> std::process::ExitCode {
    let Some(_lock) = super::take_lock(&ctx.domain, super::Role::Monitor) else {
        return std::process::ExitCode::SUCCESS;
    };
    let wake = match super::signals() {
        Ok(w) => w,
        Err(e) => {
            log(Level::Error, &format!("monitor: signals: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut endpoint = match Endpoint::bind(&socket_path(&ctx.domain), HaRole::Active, 1) {
        Ok(ep) => ep,
        Err(e) => {
            log(Level::Error, &format!("monitor: hooks socket: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    // The endpoint's wait also returns when the wake pipe is poked: a
    // signal, or the Server's connection (a thread below pokes it).
    let listener = match wire::listen(&super::monitor_socket(&ctx.domain)) {
        Ok(l) => l,
        Err(e) => {
            log(Level::Error, &format!("monitor: socket: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    let listen_fd = listener.as_raw_fd();
    let wake_fd = wake.as_raw_fd();
    // One descriptor for the endpoint to wait on besides its sockets: an
    // epoll set of the wake pipe, the listener and the Server's connection.
    let ep_fd = match Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            log(Level::Error, &format!("monitor: epoll: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    ep_fd.add(wake_fd);
    ep_fd.add(listen_fd);
    match ep_fd.dup() {
        Ok(fd) => endpoint.set_wake(fd),
        Err(e) => {
            log(Level::Error, &format!("monitor: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    }
    let mut mon = Monitoring::new(Some(endpoint));
    // The broadcast list of the duplex pair: no peer on a single node.
    let peers: Vec<Conn> = Vec::new();
    let mut server: Option<Conn> = None;
    let mut last_node_check = Instant::now();
    loop {
        if super::STOPS.load(Ordering::Acquire) > 0 {
            break;
        }
        if last_node_check.elapsed() > Duration::from_millis(200) {
            last_node_check = Instant::now();
            if !ctx.node_alive() {
                break;
            }
        }
        let mut seen = Vec::new();
        mon.step(Duration::from_millis(200), &mut seen);
        super::drain(&wake);
        while let Ok((s, _)) = listener.accept() {
            if !wire::peer_allowed(&s, "monitor socket") {
                continue;
            }
            match Conn::new(s) {
                Ok(c) => {
                    if let Some(old) = &server {
                        ep_fd.del(old.fd().as_raw_fd());
                    }
                    ep_fd.add(c.fd().as_raw_fd());
                    server = Some(c);
                    // What still holds goes to the new Server first.
                    seen.splice(0..0, mon.current());
                }
                Err(e) => log(Level::Warn, &format!("monitor: {e}")),
            }
        }
        if let Some(s) = &mut server {
            for l in s.lines() {
                match wire::parse::<ToMonitor>(&l) {
                    Ok(ToMonitor::WatchAll { list }) => {
                        for pid in mon.pids() {
                            if !list.iter().any(|w| w.pid == pid) {
                                mon.unwatch(pid);
                            }
                        }
                        for w in list {
                            mon.watch(w);
                        }
                    }
                    Ok(ToMonitor::Watch(w)) => mon.watch(w),
                    Ok(ToMonitor::Unwatch { pid }) => mon.unwatch(pid),
                    Err(e) => log(Level::Warn, &format!("monitor: from the Server: {e}")),
                }
            }
            for x in &seen {
                broadcast(s, &peers, x);
            }
            if s.closed() {
                ep_fd.del(s.fd().as_raw_fd());
                server = None;
            }
        }
    }
    let _ = std::fs::remove_file(super::monitor_socket(&ctx.domain));
    std::process::ExitCode::SUCCESS
}

/// Sends what was seen to the Server and to every peer.
fn broadcast(server: &mut Conn, peers: &[Conn], x: &Seen) {
    server.send(x);
    debug_assert!(peers.is_empty(), "no peer on a single node");
}

/// A small epoll set: one descriptor that is readable when any of its
/// members is (what the endpoint's wait takes besides its own sockets).
struct Epoll(std::os::fd::OwnedFd);

impl Epoll {
    fn new() -> std::io::Result<Epoll> {
        use std::os::fd::FromRawFd;
        // SAFETY: a system call with an integer flag.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        Ok(Epoll(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    fn add(&self, fd: i32) {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: ev is valid for the call.
        unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
    }

    fn del(&self, fd: i32) {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
    }

    fn dup(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        self.0.try_clone()
    }
}
