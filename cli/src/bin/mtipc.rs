//! `mtipc`: the operator's command line.
//!
//! ```text
//! mtipc info [--domain PATH] [--json]      the domain: path, layout, owner, semaphore
//! mtipc sem value|post N|wait|reset         the domain's notification semaphore
//! mtipc ls [--json]                         the live advertised tenants
//! mtipc attach TENANT [--send MSG]          attach; send stdin's lines, print replies
//! mtipc sessions [--name NAME] [--json]     session tables, workers, closures
//! mtipc volume add NAME DIR [--max-transfers N] [--lease-ms MS] [--etcd URLS]
//! mtipc volume ls [--json]                  the gateway volumes
//! mtipc permits [VOLUME] [--json]           holders, queue, grants, reclaimed permits
//! mtipc ha status [--json]                  the HA supervisor's processes
//! mtipc ha start|stop|restart NAME|@GROUP [--timeout-ms MS]
//! mtipc ha log NAME [--lines N]             a supervised process's recent output
//! ```
//!
//! Exit status: 0 on success, 1 on an error (message on stderr with its
//! `MT_ERR_*` name), 2 on bad usage, 3 when a wait or an attach timed out.

#[path = "mtipc/sessions.rs"]
mod sessions;

#[path = "mtipc/permits.rs"]
mod permits;

#[path = "mtipc/ha.rs"]
mod ha;

mod cli {
    use clap::{Parser, Subcommand};
    use mtipc::{Domain, ErrorKind};
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::time::Duration;

    /// Operate an mtipc domain.
    #[derive(Parser)]
    #[command(name = "mtipc", version, about)]
    struct Cli {
        /// Domain directory (default: $MTIPC_DOMAIN, else $XDG_RUNTIME_DIR/mtipc, else /tmp/mtipc-$UID).
        #[arg(long, global = true, value_name = "PATH")]
        domain: Option<PathBuf>,
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Subcommand)]
    enum Cmd {
        /// Show the domain: path, layout version, owner, semaphore value.
        Info {
            /// Print one JSON object instead of text.
            #[arg(long)]
            json: bool,
        },
        /// Use the domain's notification semaphore.
        Sem {
            #[command(subcommand)]
            op: SemOp,
        },
        /// List the live advertised tenants (stale advertisements are cleaned up).
        Ls {
            /// Print a JSON array instead of a table.
            #[arg(long)]
            json: bool,
        },
        /// Attach to a tenant: send each line of stdin as a message and print
        /// each reply, or send one message with --send.
        Attach {
            /// The tenant id.
            tenant: String,
            /// Send this one message, print the reply, and close.
            #[arg(long, value_name = "MSG")]
            send: Option<String>,
            /// Limit for the attach round, in milliseconds.
            #[arg(long, value_name = "MS", default_value_t = 5000)]
            timeout_ms: u64,
            /// Open the connection this many milliseconds from now.
            #[arg(long, value_name = "MS")]
            start_in_ms: Option<u64>,
            /// Close the connection this many milliseconds after it opens.
            #[arg(long, value_name = "MS")]
            duration_ms: Option<u64>,
            /// The protocol to ask for (default: the tenant's first).
            #[arg(long)]
            protocol: Option<String>,
            /// How long to wait for each reply, in milliseconds.
            #[arg(long, value_name = "MS", default_value_t = 10000)]
            reply_timeout_ms: u64,
        },
        /// Show the session tables (capacity, sessions by state and by
        /// worker, requests in flight, workers by group with their
        /// liveness, request slots) and the shared closures (current
        /// version, versions on disk, readers). Dead workers found are then
        /// reaped, and slots of dead submitters freed (unless --no-reap).
        Sessions {
            /// Only the session table of this name.
            #[arg(long)]
            name: Option<String>,
            /// Print one JSON object instead of text.
            #[arg(long)]
            json: bool,
            /// Only look: leave dead workers and dead submitters' slots.
            #[arg(long)]
            no_reap: bool,
        },
        /// Record or list the gateway volumes of the domain (directories
        /// whose transfers need permits).
        Volume {
            #[command(subcommand)]
            op: VolumeOp,
        },
        /// Show the permits of each volume (or of VOLUME): holders (instance,
        /// mode, path, token, lease left), the queue in grant order, grants
        /// per instance, reclaimed permits, last token, lease. Permits of
        /// dead holders and run-out leases are reclaimed first.
        Permits {
            /// Only this volume.
            volume: Option<String>,
            /// Print one JSON object instead of text.
            #[arg(long)]
            json: bool,
        },
        /// Ask the node's HA supervisor (mtipc-ha run on this domain): the
        /// processes' status, start, stop, restart, a process's log.
        Ha {
            #[command(subcommand)]
            op: HaOp,
        },
    }

    #[derive(Subcommand)]
    enum HaOp {
        /// Show the supervised processes: state (and why), pid, uptime,
        /// restarts, last exit, tenant group; and the supervisor's pid.
        Status {
            /// Print one JSON object (the status file's, plus `roles`).
            #[arg(long)]
            json: bool,
        },
        /// Start a process, or a tenant group's members in order (@GROUP);
        /// wait until they run (ready, for notify processes).
        Start {
            /// NAME or @GROUP.
            target: String,
            /// Give up waiting after this many milliseconds (exit 3).
            #[arg(long, value_name = "MS", default_value_t = 60000)]
            timeout_ms: u64,
        },
        /// Stop a process, or a tenant group's members in reverse order
        /// (@GROUP), leaving other groups alone; wait until they exited.
        Stop {
            /// NAME or @GROUP.
            target: String,
            /// Give up waiting after this many milliseconds (exit 3).
            #[arg(long, value_name = "MS", default_value_t = 60000)]
            timeout_ms: u64,
        },
        /// Restart a process (a new one runs when this returns); @GROUP:
        /// stop the group in reverse order, then start it in order.
        Restart {
            /// NAME or @GROUP.
            target: String,
            /// Give up waiting after this many milliseconds (exit 3).
            #[arg(long, value_name = "MS", default_value_t = 60000)]
            timeout_ms: u64,
        },
        /// Print a process's recent output (its log file; the rotated .1
        /// too when the current file has fewer lines).
        Log {
            /// The process's name.
            name: String,
            /// How many lines.
            #[arg(long, value_name = "N", default_value_t = 50)]
            lines: usize,
        },
    }

    #[derive(Subcommand)]
    enum VolumeOp {
        /// Record a gateway volume: its directory (owned by you, writable by
        /// nobody else), its cap on concurrent transfers, its lease and
        /// where its permits are kept. Prints what was recorded.
        Add {
            /// The volume's name.
            name: String,
            /// Its directory (a relative path is taken from the current
            /// directory).
            dir: PathBuf,
            /// Cap on concurrent transfers (0: no cap).
            #[arg(long, value_name = "N", default_value_t = 0)]
            max_transfers: u32,
            /// The lease of a permit, in milliseconds (default 30000).
            #[arg(long, value_name = "MS")]
            lease_ms: Option<u64>,
            /// Keep the permits in etcd at these endpoints
            /// (http://host:port, comma separated) instead of this host's
            /// shared memory.
            #[arg(long, value_name = "URLS")]
            etcd: Option<String>,
        },
        /// List the volumes: directory, cap, lease, backend.
        Ls {
            /// Print a JSON array instead of a table.
            #[arg(long)]
            json: bool,
        },
    }

    #[derive(Subcommand)]
    enum SemOp {
        /// Print the current count.
        Value,
        /// Add N to the count, waking up to N waiters.
        Post {
            /// How many units to add.
            n: u32,
        },
        /// Take one unit, waiting while the count is zero.
        Wait {
            /// Give up after this many milliseconds (exit status 3); default: wait forever.
            #[arg(long, value_name = "MS")]
            timeout_ms: Option<u64>,
        },
        /// Set the count to zero; print what it was.
        Reset,
    }

    fn user_name(uid: u32) -> Option<String> {
        // SAFETY: getpwuid returns NULL or a pointer to static storage that
        // stays valid until the next getpw* call; we copy the name at once
        // and this program is single-threaded here.
        unsafe {
            let pw = libc::getpwuid(uid);
            if pw.is_null() {
                return None;
            }
            Some(
                std::ffi::CStr::from_ptr((*pw).pw_name)
                    .to_string_lossy()
                    .into_owned(),
            )
        }
    }

    /// "3s", "2m", "5h", "4d": how long ago `ms` (Unix ms) was.
    fn age(ms: u64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let s = now.saturating_sub(ms) / 1000;
        match s {
            0..=119 => format!("{s}s"),
            120..=7199 => format!("{}m", s / 60),
            7200..=172_799 => format!("{}h", s / 3600),
            _ => format!("{}d", s / 86400),
        }
    }

    fn ls(domain: &Domain, json: bool) -> mtipc::Result<()> {
        let (tenants, cleaned) = mtipc::attach::list(domain)?;
        if json {
            println!(
                "{}",
                serde_json::to_string(&tenants).expect("tenants serialize")
            );
            return Ok(());
        }
        println!(
            "{:<24} {:<7} {:>8} {:>6} {:>6}  PROTOCOLS",
            "TENANT", "ROLE", "PID", "UID", "SINCE"
        );
        for t in &tenants {
            println!(
                "{:<24} {:<7} {:>8} {:>6} {:>6}  {}",
                t.id,
                t.role,
                t.pid,
                t.uid,
                age(t.since_ms),
                t.protocols.join(",")
            );
        }
        if cleaned > 0 {
            eprintln!("({cleaned} stale advertisement(s) of dead processes removed)");
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn attach(
        domain: &Domain,
        tenant: &str,
        send: Option<String>,
        timeout_ms: u64,
        start_in_ms: Option<u64>,
        duration_ms: Option<u64>,
        protocol: Option<String>,
        reply_timeout_ms: u64,
    ) -> mtipc::Result<()> {
        use std::io::{BufRead, IsTerminal, Write};
        let opts = mtipc::attach::AttachOptions {
            timeout: Duration::from_millis(timeout_ms),
            start: start_in_ms.map(|ms| std::time::SystemTime::now() + Duration::from_millis(ms)),
            duration: duration_ms.map(Duration::from_millis),
            protocol,
        };
        let tty = std::io::stderr().is_terminal();
        if tty {
            eprint!("attaching to {tenant}...");
        }
        let t0 = std::time::Instant::now();
        let conn = mtipc::attach::attach(domain, tenant, &opts);
        if tty {
            eprintln!();
        }
        let conn = conn?;
        eprintln!(
            "attached to {tenant} in {:.1} ms ({})",
            t0.elapsed().as_secs_f64() * 1e3,
            conn.tls_version()
        );
        let reply_timeout = Some(Duration::from_millis(reply_timeout_ms));
        let mut out = std::io::stdout().lock();
        let mut exchange = |msg: &[u8]| -> mtipc::Result<()> {
            conn.send(msg)?;
            let reply = conn.recv(reply_timeout)?;
            out.write_all(&reply)
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush())
                .map_err(|e| mtipc::Error::io("stdout", e))
        };
        match send {
            Some(msg) => exchange(msg.as_bytes())?,
            None => {
                for line in std::io::stdin().lock().lines() {
                    let line = line.map_err(|e| mtipc::Error::io("stdin", e))?;
                    exchange(line.as_bytes())?;
                }
            }
        }
        conn.close();
        Ok(())
    }

    /// `mtipc ha ...`: the domain's directory only (the supervisor has
    /// made it), not the domain opened.
    fn ha(domain: Option<PathBuf>, op: HaOp) -> mtipc::Result<()> {
        use crate::ha::{act, log, status, Action};
        let d = domain.unwrap_or_else(mtipc::internals::domain::default_path);
        match op {
            HaOp::Status { json } => status(&d, json),
            HaOp::Start { target, timeout_ms } => act(&d, Action::Start, &target, timeout_ms),
            HaOp::Stop { target, timeout_ms } => act(&d, Action::Stop, &target, timeout_ms),
            HaOp::Restart { target, timeout_ms } => act(&d, Action::Restart, &target, timeout_ms),
            HaOp::Log { name, lines } => log(&d, &name, lines),
        }
    }

    fn run(cli: Cli) -> mtipc::Result<()> {
        if let Cmd::Ha { op } = cli.cmd {
            return ha(cli.domain, op);
        }
        let domain = Domain::open(cli.domain.as_deref())?;
        match cli.cmd {
            Cmd::Info { json } => {
                let info = domain.info();
                if json {
                    let mut v = serde_json::to_value(&info).expect("info serializes");
                    v["owner"] = user_name(info.owner_uid).into();
                    println!("{v}");
                } else {
                    println!("domain:          {}", info.path.display());
                    println!("layout version:  {}", info.layout_version);
                    let name = user_name(info.owner_uid).unwrap_or_else(|| "?".into());
                    println!("owner:           {name} (uid {})", info.owner_uid);
                    println!("semaphore value: {}", info.semaphore_value);
                }
            }
            Cmd::Sem { op } => {
                let sem = domain.semaphore();
                match op {
                    SemOp::Value => {
                        let v = sem.value();
                        sem.check()?;
                        println!("{v}");
                    }
                    SemOp::Post { n } => {
                        sem.post(n)?;
                        println!("posted {n}");
                    }
                    SemOp::Wait { timeout_ms } => {
                        sem.wait(timeout_ms.map(Duration::from_millis))?;
                        println!("woken (pid {})", std::process::id());
                    }
                    SemOp::Reset => {
                        sem.check()?;
                        println!("{}", sem.reset());
                    }
                }
            }
            Cmd::Ls { json } => ls(&domain, json)?,
            Cmd::Attach {
                tenant,
                send,
                timeout_ms,
                start_in_ms,
                duration_ms,
                protocol,
                reply_timeout_ms,
            } => attach(
                &domain,
                &tenant,
                send,
                timeout_ms,
                start_in_ms,
                duration_ms,
                protocol,
                reply_timeout_ms,
            )?,
            Cmd::Sessions {
                name,
                json,
                no_reap,
            } => sessions(&domain, name, json, no_reap)?,
            Cmd::Volume {
                op:
                    VolumeOp::Add {
                        name,
                        dir,
                        max_transfers,
                        lease_ms,
                        etcd,
                    },
            } => crate::permits::add(&domain, &name, &dir, max_transfers, lease_ms, etcd)?,
            Cmd::Volume {
                op: VolumeOp::Ls { json },
            } => crate::permits::ls(&domain, json)?,
            Cmd::Permits { volume, json } => crate::permits::permits(&domain, volume, json)?,
            Cmd::Ha { .. } => unreachable!("handled above"),
        }
        Ok(())
    }

    /// `mtipc sessions`: the report goes to stdout even when some table
    /// could not be read (each error also on stderr); then exit status 1.
    fn sessions(
        domain: &Domain,
        name: Option<String>,
        json: bool,
        no_reap: bool,
    ) -> mtipc::Result<()> {
        use crate::sessions::{print_errors, print_human, report, stderr_is_tty, Options};
        let opts = Options {
            name,
            reap: !no_reap,
            progress: stderr_is_tty(),
        };
        let r = report(domain, &opts)?;
        let mut out = std::io::stdout().lock();
        let written = if json {
            serde_json::to_writer(&mut out, &r)
                .map_err(std::io::Error::from)
                .and_then(|()| std::io::Write::write_all(&mut out, b"\n"))
        } else {
            print_human(&r, &mut out)
        };
        written.map_err(|e| mtipc::Error::io("stdout", e))?;
        drop(out);
        print_errors(&r);
        if let Some(kind) = r.first_error_kind() {
            return Err(mtipc::Error::new(
                kind,
                "some session tables or closures could not be read (see above)",
            ));
        }
        Ok(())
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        // The library's events (never the report) go to stderr; MTIPC_LOG
        // sets the level (default warn).
        match mtipc_cli::log_level(None, mtipc::log::Level::Warn) {
            Ok(level) => mtipc_cli::log_to_stderr(level),
            Err(e) => {
                eprintln!("mtipc: MTIPC_LOG: {e}");
                return ExitCode::from(2);
            }
        }
        match run(cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mtipc: {e}");
                if e.kind() == ErrorKind::Timeout {
                    ExitCode::from(3)
                } else {
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    cli::main()
}
