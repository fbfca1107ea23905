//! The HA hooks with real processes: this test binary re-executed as a
//! supervised application (the hooks of `mtipc::ha`), and the test as the
//! Monitor (`mtipc::internals::ha::Endpoint`): the role delivered at
//! registration and on change, `ready`, heartbeats, health polled and
//! answered, the Monitor going away (`Unavailable`, the role kept) and a
//! new Monitor at the same path (reconnection, `ready` replayed). Also the
//! hooks outside supervision, and a listener of another uid refused.

mod common;

use common::{role_command, say, Kids, Scratch};
use mtipc::ha::{self, Role};
use mtipc::internals::ha::{ConnId, Endpoint, Event, Health, Preconnect};
use std::io::BufRead;
use std::path::Path;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

const VAR: &str = "MTIPC_HA_TEST";

/// The child's side: `<VAR>_ROLE` says which.
#[test]
fn child_entry() {
    let Some((role, args)) = common::child_role(VAR) else {
        return;
    };
    match role.as_str() {
        "app" => app(Path::new(&args[0])),
        "plain" => plain(Path::new(&args[0])),
        "outside" => outside(),
        "probe" => say(&format!("ready {}", status(ha::ready()))),
        "listener" => listener(Path::new(&args[0])),
        r => panic!("unknown role {r}"),
    }
}

fn status(r: mtipc::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => e.kind().name().into(),
    }
}

/// A supervised application: registers its callbacks, says ready, then
/// heartbeats every 10 ms and says when the result changes, until the
/// file `stop` appears in `dir`. It is healthy while `dir/sick` is absent.
fn app(dir: &Path) {
    assert!(ha::supervised());
    let r = ha::on_role(Some(Arc::new(|role: Role, epoch| {
        say(&format!("role {role} {epoch}"))
    })));
    say(&format!("on_role {}", status(r)));
    let sick = dir.join("sick");
    let r = ha::set_health(Some(Arc::new(move || !sick.exists())));
    say(&format!("set_health {}", status(r)));
    say(&format!("ready {}", status(ha::ready())));
    let mut last = String::new();
    while !dir.join("stop").exists() {
        let now = status(ha::heartbeat());
        if now != last {
            let (role, epoch) = ha::role().unwrap();
            say(&format!("heartbeat {now} (role {role} {epoch})"));
            last = now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    say("done");
}

/// A supervised application without callbacks (what `sd_notify` users
/// write): says ready, then heartbeats every 10 ms and says when the
/// result changes, until `dir/stop` appears. Reports the threads of the
/// process before the first hook and after ready and a heartbeat.
fn plain(dir: &Path) {
    // Started with an inherited connection: its parent says when the
    // hello is said (the Spawner does it as soon as the process is
    // started; here the test waits, so that the first hook finds it).
    if std::env::var_os(ha::FD_ENV).is_some() {
        while !dir.join("go").exists() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let before = threads();
    say(&format!("ready {}", status(ha::ready())));
    let first = status(ha::heartbeat());
    say(&format!("threads {before} -> {}", threads()));
    let mut last = first.clone();
    say(&format!("heartbeat {first}"));
    while !dir.join("stop").exists() {
        let now = status(ha::heartbeat());
        if now != last {
            say(&format!("heartbeat {now}"));
            last = now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (role, epoch) = ha::role().unwrap();
    say(&format!(
        "done (role {role} {epoch}), threads {}",
        threads()
    ));
}

/// Every hook outside supervision: Ok, nothing done, nothing called.
fn outside() {
    assert!(!ha::supervised());
    let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let before = threads();
    let called = Arc::new(std::sync::Mutex::new(0));
    let c = Arc::clone(&called);
    ha::on_role(Some(Arc::new(move |_, _| *c.lock().unwrap() += 1))).unwrap();
    ha::set_health(Some(Arc::new(|| false))).unwrap();
    ha::ready().unwrap();
    ha::heartbeat().unwrap();
    assert_eq!(ha::role().unwrap(), (Role::None, 0));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        *called.lock().unwrap(),
        0,
        "no role delivered outside supervision"
    );
    say(&format!("outside ok, threads {before} -> {}", threads()));
}

/// A Monitor of another uid: listens at `path` and reports what it got.
fn listener(path: &Path) {
    let mut ep = Endpoint::bind(path, Role::Active, 1).unwrap();
    say("listening");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(e) = ep.next_event(Duration::from_millis(100)).unwrap() {
            say(&format!("event {e:?}"));
        }
    }
}

/// The child's "@@ " lines, as they come.
fn lines(child: &mut std::process::Child) -> Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if let Some(l) = line.strip_prefix("@@ ") {
                if tx.send(l.to_string()).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// The fake Monitor's view: pumps the endpoint while waiting for the
/// child's lines.
struct Monitor {
    ep: Option<Endpoint>,
    events: Vec<Event>,
    said: Vec<String>,
    rx: Receiver<String>,
}

impl Monitor {
    fn ep(&mut self) -> &mut Endpoint {
        self.ep.as_mut().unwrap()
    }

    /// Pumps until `done(self)` or 10 s pass (then fails, showing all).
    fn until(&mut self, what: &str, done: impl Fn(&Monitor) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "waited 10 s for {what}\nevents: {:#?}\nchild said: {:#?}",
                self.events,
                self.said
            );
            if let Some(ep) = self.ep.as_mut() {
                if let Some(e) = ep.next_event(Duration::from_millis(5)).unwrap() {
                    self.events.push(e);
                }
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
            while let Ok(l) = self.rx.try_recv() {
                self.said.push(l);
            }
        }
    }

    fn said(&self, line: &str) -> bool {
        self.said.iter().any(|l| l == line)
    }

    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }
}

/// A child running `role` under the test's Monitor (an endpoint at
/// `sock`, answering `active 1`), once it said `ready ok` and three
/// heartbeats came; its first event was its connection, checked by the
/// endpoint to be the child.
struct Started {
    dir: Scratch,
    sock: std::path::PathBuf,
    kids: Kids,
    pid: u32,
    m: Monitor,
    conn: ConnId,
}

/// How a child gets its connection to the Monitor.
#[derive(Clone, Copy, PartialEq)]
enum Inherit {
    /// It connects by the path.
    No,
    /// As the HA Spawner starts a process: a connection made by the
    /// parent, given to the child as its descriptor 3 (`MTIPC_HA_FD=3:<the
    /// parent's pid>`), the child's hello said by the parent
    /// (`Preconnect::introduce`) before the child's first hook.
    Introduced,
    /// The same, but the parent never says the hello (a Spawner slower
    /// than its child): the child says its own.
    Early,
}

fn start(role: &str) -> Started {
    start_with(role, Inherit::No)
}

/// [`start`], the connection got as `inherit` says.
fn start_with(role: &str, inherit: Inherit) -> Started {
    let dir = Scratch::create(role);
    let sock = dir.dir().join("ha.sock");
    let ep = Endpoint::bind(&sock, Role::Active, 1).unwrap();
    let mut kids = Kids::default();
    let mut cmd = role_command(VAR, role, &[dir.path()]);
    cmd.env(ha::SOCKET_ENV, &sock);
    let mut pre = None;
    if inherit != Inherit::No {
        use std::os::fd::AsRawFd;
        let c = Preconnect::connect(&sock).unwrap();
        let raw = c.fd().as_raw_fd();
        cmd.env(ha::FD_ENV, format!("3:{}", std::process::id()));
        common::give_as_fd3(&mut cmd, raw);
        pre = Some(c);
    }
    kids.0.push(cmd.spawn().unwrap());
    drop(cmd);
    if let Some(c) = pre {
        if inherit == Inherit::Introduced {
            let id = mtipc::internals::sys::ProcId::of(kids.0[0].id())
                .unwrap()
                .unwrap();
            c.introduce(id).unwrap();
        }
        std::fs::write(dir.dir().join("go"), "").unwrap();
    }
    let pid = kids.0[0].id();
    let rx = lines(&mut kids.0[0]);
    let mut m = Monitor {
        ep: Some(ep),
        events: Vec::new(),
        said: Vec::new(),
        rx,
    };
    m.until("ready and heartbeats", |m| {
        m.said("ready ok") && m.count(|e| matches!(e, Event::Heartbeat { .. })) >= 3
    });
    let conn = match &m.events[0] {
        Event::Connected { conn, proc } => {
            assert_eq!(proc.pid, pid, "the child, checked by the endpoint");
            *conn
        }
        e => panic!("first event {e:?}"),
    };
    Started {
        dir,
        sock,
        kids,
        pid,
        m,
        conn,
    }
}

#[test]
fn hooks_under_a_fake_monitor() {
    // The registration gets the role at once; ready and heartbeats arrive.
    let Started {
        dir,
        sock,
        mut kids,
        pid,
        mut m,
        conn,
        ..
    } = start("app");
    // set_health said the Monitor may poll it (on_role made the
    // connection), then ready.
    assert_eq!(m.events[1], Event::Polls { conn, on: true });
    assert_eq!(m.events[2], Event::Ready { conn });
    assert_eq!(
        m.said[..4],
        ["role active 1", "on_role ok", "set_health ok", "ready ok"]
    );
    assert_eq!(
        m.count(|e| matches!(e, Event::Connected { .. })),
        1,
        "one connection"
    );

    // Health, polled and answered by the callback.
    let health = |m: &mut Monitor, conn: ConnId| -> Health {
        let seq = m.ep().poll_health(conn).unwrap();
        m.until("a health answer", |m| {
            m.events
                .iter()
                .any(|e| matches!(e, Event::Health { seq: s, .. } if *s == seq))
        });
        m.events
            .iter()
            .find_map(|e| match e {
                Event::Health { seq: s, health, .. } if *s == seq => Some(*health),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(health(&mut m, conn), Health::Ok);
    std::fs::write(dir.dir().join("sick"), "").unwrap();
    assert_eq!(health(&mut m, conn), Health::Fail);
    std::fs::remove_file(dir.dir().join("sick")).unwrap();
    assert_eq!(health(&mut m, conn), Health::Ok);

    // A role change reaches the callback.
    m.ep().set_role(Role::Standby, 2);
    m.until("the new role", |m| m.said("role standby 2"));

    // The Monitor goes away: heartbeats fail, the role stays.
    m.ep = None;
    assert!(!sock.exists());
    m.until("heartbeats failing", |m| {
        m.said("heartbeat MT_ERR_UNAVAILABLE (role standby 2)")
    });

    // A new Monitor at the same path: the application reconnects by
    // itself, says ready again, heartbeats again; the same role is not
    // delivered twice, a new one is.
    let before = m.events.len();
    m.ep = Some(Endpoint::bind(&sock, Role::Standby, 2).unwrap());
    let t0 = Instant::now();
    m.until("a reconnection with ready and heartbeats", |m| {
        let new = &m.events[before..];
        new.iter().any(|e| matches!(e, Event::Ready { .. }))
            && new
                .iter()
                .filter(|e| matches!(e, Event::Heartbeat { .. }))
                .count()
                >= 2
    });
    let reconnect = t0.elapsed();
    let conn2 = match &m.events[before] {
        Event::Connected { conn, proc } => {
            assert_eq!(proc.pid, pid);
            *conn
        }
        e => panic!("first event after the restart: {e:?}"),
    };
    assert!(
        reconnect < Duration::from_secs(2),
        "reconnected after {reconnect:?}"
    );
    assert_eq!(m.events[before + 1], Event::Ready { conn: conn2 });
    m.until("heartbeats ok again", |m| {
        m.said("heartbeat ok (role standby 2)")
    });
    assert_eq!(health(&mut m, conn2), Health::Ok, "the callback is kept");
    m.ep().set_role(Role::Active, 3);
    m.until("the role after the restart", |m| m.said("role active 3"));
    let roles: Vec<&String> = m.said.iter().filter(|l| l.starts_with("role ")).collect();
    assert_eq!(roles, ["role active 1", "role standby 2", "role active 3"]);

    std::fs::write(dir.dir().join("stop"), "").unwrap();
    m.until("the child's end", |m| m.said("done"));
    let st = kids.0[0].wait().unwrap();
    assert!(st.success(), "{st:?}");
}

/// An application that registers no callback gets no library thread: its
/// hooks read what came on each call, and a lost connection is made again
/// by its next heartbeat (saying ready again). The Monitor is never told
/// to poll it.
#[test]
fn without_callbacks_no_thread_and_the_next_call_reconnects() {
    let Started {
        dir,
        sock,
        mut kids,
        pid,
        mut m,
        conn,
        ..
    } = start("plain");
    assert_eq!(m.events[1], Event::Ready { conn });
    let threads = m
        .said
        .iter()
        .find_map(|l| l.strip_prefix("threads "))
        .expect("the thread count")
        .to_string();
    let (a, b) = threads.split_once(" -> ").unwrap();
    assert_eq!(a, b, "no library thread: {threads}");

    // The Monitor goes away: the next heartbeat fails.
    m.ep = None;
    m.until("heartbeats failing", |m| {
        m.said("heartbeat MT_ERR_UNAVAILABLE")
    });
    // A new Monitor: the next heartbeats reconnect, saying ready again.
    let before = m.events.len();
    m.ep = Some(Endpoint::bind(&sock, Role::Standby, 2).unwrap());
    let t0 = Instant::now();
    m.until("a reconnection with ready and heartbeats", |m| {
        let new = &m.events[before..];
        new.iter().any(|e| matches!(e, Event::Ready { .. }))
            && new
                .iter()
                .filter(|e| matches!(e, Event::Heartbeat { .. }))
                .count()
                >= 2
    });
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "reconnected after {:?}",
        t0.elapsed()
    );
    match &m.events[before] {
        Event::Connected { proc, .. } => assert_eq!(proc.pid, pid),
        e => panic!("first event after the restart: {e:?}"),
    }
    m.until("heartbeats ok again", |m| m.said("heartbeat ok"));
    std::fs::write(dir.dir().join("stop"), "").unwrap();
    // The role of the new Monitor, read by the hooks without a thread.
    m.until("the child's end", |m| {
        m.said.iter().any(|l| l.starts_with("done "))
    });
    let done = m.said.iter().find(|l| l.starts_with("done ")).unwrap();
    assert!(
        done.starts_with("done (role standby 2), threads "),
        "{done}"
    );
    assert!(
        !m.events.iter().any(|e| matches!(e, Event::Polls { .. })),
        "never asked to be polled: {:#?}",
        m.events
    );
    let st = kids.0[0].wait().unwrap();
    assert!(st.success(), "{st:?}");
}

/// Started as the Spawner starts a process: the hooks take the connection
/// made before the exec (one connection, `ready` on it; moved to a
/// close-on-exec descriptor of their own, 3 closed, so that the process's
/// own children do not inherit it), and after the Monitor goes away the
/// next hook connects by the path as without it.
fn inherited_connection_is_taken(inherit: Inherit) {
    let Started {
        dir,
        sock,
        mut kids,
        pid,
        mut m,
        conn,
    } = start_with("plain", inherit);
    assert_eq!(m.events[1], Event::Ready { conn });
    assert_eq!(
        m.count(|e| matches!(e, Event::Connected { .. })),
        1,
        "one connection: {:#?}",
        m.events
    );
    let sockets = common::sockets_of(pid);
    // One socket, not at 3: the hooks made no connection of their own
    // (it would be another socket, beside the inherited one left at 3).
    assert_eq!(sockets.len(), 1, "the sockets of {pid}: {sockets:?}");
    let (fd, flags) = &sockets[0];
    assert_ne!(fd, "3", "moved off 3");
    assert_ne!(
        flags & libc::O_CLOEXEC as u32,
        0,
        "close-on-exec: {flags:o}"
    );

    // The Monitor goes away and comes back: the path, as without it.
    m.ep = None;
    m.until("heartbeats failing", |m| {
        m.said("heartbeat MT_ERR_UNAVAILABLE")
    });
    let before = m.events.len();
    m.ep = Some(Endpoint::bind(&sock, Role::Active, 1).unwrap());
    m.until("a reconnection with ready", |m| {
        m.events[before..]
            .iter()
            .any(|e| matches!(e, Event::Ready { .. }))
    });
    match &m.events[before] {
        Event::Connected { proc, .. } => assert_eq!(proc.pid, pid),
        e => panic!("first event after the restart: {e:?}"),
    }
    std::fs::write(dir.dir().join("stop"), "").unwrap();
    m.until("the child's end", |m| {
        m.said.iter().any(|l| l.starts_with("done "))
    });
    kids.0[0].wait().unwrap();
}

#[test]
fn the_connection_made_before_the_exec_is_taken() {
    inherited_connection_is_taken(Inherit::Introduced);
}

/// The Spawner slower than its process: the process says its own hello
/// on the inherited connection (the Monitor knows from the kernel that it
/// sent it), and takes it all the same.
#[test]
fn a_process_first_to_its_connection_says_its_own_hello() {
    inherited_connection_is_taken(Inherit::Early);
}

#[test]
fn outside_supervision_the_hooks_do_nothing() {
    let mut kids = Kids::default();
    let mut cmd = role_command(VAR, "outside", &[]);
    cmd.env_remove(ha::SOCKET_ENV);
    kids.0.push(cmd.spawn().unwrap());
    let out = common::read_all(kids.0[0].stdout.take());
    let st = kids.0[0].wait().unwrap();
    assert!(st.success(), "{out}");
    assert!(out.contains("@@ outside ok"), "{out}");
    // No thread of the library was started.
    let line = out
        .lines()
        .find(|l| l.starts_with("@@ outside ok"))
        .unwrap();
    let counts = line.split("threads ").nth(1).unwrap();
    let (a, b) = counts.split_once(" -> ").unwrap();
    assert_eq!(a, b, "{out}");
    // An empty variable is no supervision either.
    let mut cmd = role_command(VAR, "outside", &[]);
    cmd.env(ha::SOCKET_ENV, "");
    kids.0.push(cmd.spawn().unwrap());
    let out = common::read_all(kids.0[1].stdout.take());
    assert!(kids.0[1].wait().unwrap().success(), "{out}");
}

#[test]
fn no_monitor_is_unavailable() {
    let dir = Scratch::create("none");
    let mut kids = Kids::default();
    let mut cmd = role_command(VAR, "probe", &[]);
    cmd.env(ha::SOCKET_ENV, dir.dir().join("missing.sock"));
    kids.0.push(cmd.spawn().unwrap());
    let out = common::read_all(kids.0[0].stdout.take());
    assert!(kids.0[0].wait().unwrap().success(), "{out}");
    assert!(out.contains("@@ ready MT_ERR_UNAVAILABLE"), "{out}");
}

/// A listener that runs as another uid (and is not root) is refused before
/// anything is sent. Needs root, to run the listener as nobody.
#[test]
fn a_listener_of_another_uid_is_denied() {
    if mtipc::internals::domain::euid() != 0 {
        common::skip(
            "a_listener_of_another_uid_is_denied",
            "needs root (to run the listener as uid 65534)",
        );
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::create("uid");
    std::fs::set_permissions(dir.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let sock = dir.dir().join("ha.sock");
    let arg = [sock.display().to_string()];
    let (_bin, mut listener) = common::spawn_as_uid(65534, |exe| {
        common::role_command_at(exe, VAR, "listener", &arg)
    });
    let mut kids = Kids::default();
    let rx = lines(&mut listener);
    kids.0.push(listener);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        "listening"
    );
    let mut cmd = role_command(VAR, "probe", &[]);
    cmd.env(ha::SOCKET_ENV, &sock);
    let out = cmd.output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("@@ ready MT_ERR_DENIED"), "{out}");
    // The listener heard nothing but a connection (it refuses root's at
    // once, before any message: it saw no hello).
    let mut events = Vec::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(300)) {
        events.push(l);
    }
    assert!(
        events.iter().all(|e| !e.contains("Connected")),
        "{events:?}"
    );
}
