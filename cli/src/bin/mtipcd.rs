//! `mtipcd`: the mtipc daemon of a domain.
//!
//! ```text
//! mtipcd [--domain PATH] [--log LEVEL]
//! ```
//!
//! Runs in the foreground: advertises itself as `@mtipcd`, takes part in
//! every attach round and runs the relay (`relay.sock` in the domain) that
//! pairs each round's two ends, checks their credentials and opens and
//! closes their path on time. Logs to stderr (`--log` or `$MTIPC_LOG`:
//! error, warn, info, debug, trace, off), one line per event: UTC time,
//! level, the library module, message and fields. Stops cleanly on SIGTERM, SIGINT or
//! SIGHUP. Refuses to start when another mtipcd serves the domain.
//!
//! Exit status: 0 after a clean stop, 1 on an error.

mod daemon {
    use clap::Parser;
    use mtipc::internals::attach::Daemon;
    use mtipc::log::Level;
    use mtipc::Domain;
    use mtipc_cli::{event, log_level, log_to_stderr};
    use std::path::PathBuf;
    use std::process::ExitCode;

    /// The mtipc daemon: attach rounds and the relay of one domain.
    #[derive(Parser)]
    #[command(name = "mtipcd", version, about)]
    struct Args {
        /// Domain directory (default: $MTIPC_DOMAIN, else $XDG_RUNTIME_DIR/mtipc, else /tmp/mtipc-$UID).
        #[arg(long, value_name = "PATH")]
        domain: Option<PathBuf>,
        /// Log level: error, warn, info, debug, trace or off (default: $MTIPC_LOG, else info).
        #[arg(long, value_name = "LEVEL")]
        log: Option<String>,
    }

    /// Blocks the stop signals in this thread and every thread it starts
    /// afterwards, so that only `sigwait` below receives them.
    fn block_stop_signals() -> libc::sigset_t {
        // SAFETY: the sigset is initialised by sigemptyset before use, and
        // pthread_sigmask only reads it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::sigaddset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            set
        }
    }

    fn wait_for_stop(set: &libc::sigset_t) -> libc::c_int {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is an initialised sigset; `sig` is writable.
        while unsafe { libc::sigwait(set, &mut sig) } != 0 {}
        sig
    }

    /// Raises the soft limit on open files to the hard limit: each relayed
    /// pairing holds two sockets and a full relay about 3,100 descriptors.
    fn raise_fd_limit() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit read and write the local struct only.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    event(Level::Warn, "cannot raise the open-file limit");
                }
            }
        }
    }

    pub fn main() -> ExitCode {
        let args = Args::parse();
        match log_level(args.log.as_deref(), Level::Info) {
            Ok(level) => log_to_stderr(level),
            Err(e) => {
                eprintln!("mtipcd: {e}");
                return ExitCode::from(2);
            }
        }
        raise_fd_limit();
        let set = block_stop_signals();
        let domain = match Domain::open(args.domain.as_deref()) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("mtipcd: {e}");
                return ExitCode::FAILURE;
            }
        };
        let daemon = match Daemon::start(&domain) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("mtipcd: {e}");
                return ExitCode::FAILURE;
            }
        };
        event(
            Level::Info,
            &format!(
                "mtipcd {} serving domain={} pid={}",
                mtipc::VERSION,
                domain.path().display(),
                std::process::id()
            ),
        );
        let sig = wait_for_stop(&set);
        event(Level::Info, &format!("stopping signal={sig}"));
        let stats = daemon.stats();
        match daemon.stop() {
            Ok(()) => {
                event(Level::Info, &format!("stopped stats={stats:?}"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mtipcd: stopping: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    daemon::main()
}
