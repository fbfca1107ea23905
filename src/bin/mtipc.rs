//! `mtipc`: the operator's command line.
//!
//! ```text
//! mtipc info [--domain PATH] [--json]      the domain: path, layout, owner, semaphore
//! mtipc sem value|post N|wait|reset         the domain's notification semaphore
//! ```
//!
//! Exit status: 0 on success, 1 on an error (message on stderr with its
//! `MT_ERR_*` name), 2 on bad usage, 3 when `sem wait` timed out.

#[cfg(not(loom))]
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
        /// Domain directory (default: $MTIPC_DOMAIN, else $XDG_RUNTIME_DIR/mtipc, else /tmp/mtipc-<uid>).
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

    fn run(cli: Cli) -> mtipc::Result<()> {
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
                    SemOp::Value => println!("{}", sem.value()),
                    SemOp::Post { n } => {
                        sem.post(n)?;
                        println!("posted {n}");
                    }
                    SemOp::Wait { timeout_ms } => {
                        sem.wait(timeout_ms.map(Duration::from_millis))?;
                        println!("woken (pid {})", std::process::id());
                    }
                    SemOp::Reset => println!("{}", sem.reset()),
                }
            }
        }
        Ok(())
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
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

#[cfg(not(loom))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(loom)]
fn main() {}
