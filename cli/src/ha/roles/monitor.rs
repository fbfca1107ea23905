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
use mtipc::internals::sys::Epoll;
use mtipc::log::Level;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// The Monitor's main.
pub fn run(ctx: Ctx) -> std::process::ExitCode {
    const ME: super::Role = super::Role::Monitor;
    let (_lock, wake) = match super::begin(&ctx, ME) {
        Ok(b) => (b.lock, b.wake),
        Err(code) => return code,
    };
    let mut endpoint = match Endpoint::bind(&socket_path(&ctx.domain), HaRole::Active, 1) {
        Ok(ep) => ep,
        Err(e) => return super::failed(ME, "hooks socket: ", e),
    };
    let listener = match wire::listen(&super::monitor_socket(&ctx.domain)) {
        Ok(l) => l,
        Err(e) => return super::failed(ME, "socket: ", e),
    };
    // The endpoint's wait also ends when the wake pipe is poked (a
    // signal), a Server connects or sends: one descriptor for all three,
    // an epoll set, which it polls beside its own sockets.
    let ep_fd = match Epoll::new() {
        Ok(e) => e,
        Err(e) => return super::failed(ME, "epoll: ", e),
    };
    if let Err(e) = ep_fd.add(&wake, 0).and_then(|()| ep_fd.add(&listener, 1)) {
        return super::failed(ME, "epoll: ", e);
    }
    match ep_fd.as_fd().try_clone_to_owned() {
        Ok(fd) => endpoint.set_wake(fd),
        Err(e) => return super::failed(ME, "", e),
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
        // What was seen goes out first (a readiness is waited for), then
        // the wake pipe, a new Server and the Server's messages.
        if let Some(s) = &mut server {
            for x in seen.drain(..) {
                broadcast(s, &peers, &x);
            }
        }
        super::drain(&wake);
        while let Ok((s, _)) = listener.accept() {
            if !wire::peer_allowed(&s, "monitor socket") {
                continue;
            }
            match Conn::new(s) {
                Ok(c) => {
                    if let Some(old) = &server {
                        ep_fd.remove(old.fd());
                    }
                    if let Err(e) = ep_fd.add(c.fd(), 2) {
                        log(Level::Warn, &format!("monitor: epoll: {e}"));
                    }
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
                ep_fd.remove(s.fd());
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
