//! The etcd arbiter: the permits of a volume that several hosts mount, kept
//! in an etcd cluster (cargo feature `etcd`, on by default). The design,
//! and why a commit cannot land after its permit was lost: `docs/permit.md`,
//! section "etcd backend".
//!
//! Keys, under `mtipc/permit/v1/<volume>/` (the volume's *name* is its
//! identity in etcd: hosts that share a volume record it under one name):
//!
//! | key | lease | what |
//! |---|---|---|
//! | `h/<lease>` | the permit's | a permit held; its create revision is the fencing token |
//! | `h/<lease>.shadow` | none | its shadow, created and deleted with it: a shadow without its holder key is a permit whose lease ran out |
//! | `q/<instance>/<n>` | the process's session | a deferred request, with its tag; its create revision is its arrival |
//! | `vtime` | none | the tag of the last grant; its mod revision is the last token |
//! | `g/<instance>` | the process's session | put once per grant: its version counts the instance's grants |
//! | `r/<token>` | none | a reclaimed permit (the last [`RECLAIMED_KEEP`]) |
//!
//! Every value is a small text record (`mtipc-permit 1`, then `key value`
//! lines), parsed as hostile input.
//!
//! A request takes the volume's keys as this process last saw them (its
//! last read, or its last grant's or release's view of them: see
//! [`State::after_grant`]; a linearizable range the first time), decides with the fair-order rule ([`pass`]) whether it
//! is the first request this pass grants, and if so grants itself with a
//! transaction guarded by "no key of the volume was written since that
//! revision": any concurrent grant or enqueue makes it fail, and it reads
//! etcd and decides again. A view that is stale only by deletions (a
//! release, a lease that ran out) can make it wait or defer where it need
//! not, never grant what conflicts; so a request reads etcd afresh before
//! it defers or queues. A request that must wait puts its queue key (on
//! the process's session lease, so a dead waiter's keys vanish), watches
//! the volume's keys and re-evaluates on each change.
//!
//! The client is async (tokio). A call of this synchronous API runs on the
//! calling thread's own current-thread runtime and connection ([`call`]);
//! what goes on after a call runs on one runtime per process, started on
//! first use, with one worker thread (`mtipc-etcd`) and its own
//! connection ([`Shared::background`]).

use super::{
    Arbiter, Grant, Holding, Instance, Mode, ReclaimReason, Reclaimed, Status, VolumeRecord,
    Waiting,
};
use crate::error::{err, Error, Result};
use crate::sync::local::AtomicU64;
use crate::sync::{Flag, Ordering};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KeyValue, PutOptions,
    Txn, TxnOp, WatchOptions,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// Where all mtipc permit keys live in etcd.
pub const ROOT: &str = "mtipc/permit/v1/";

/// The TTL asked for the per-process session lease that queue keys and
/// grant counters live on: a waiter that dies leaves the queue within it.
/// (etcd may grant more: its minimum TTL, see DESIGN.md "Beyond one host".)
pub const SESSION_TTL_S: i64 = 2;

/// The least time left on a permit's lease, after the check that precedes
/// a commit, for the commit (a rename) to run: it covers the rename itself
/// and any stall of this process between the check and the rename's end.
pub const COMMIT_MARGIN: Duration = Duration::from_millis(500);

/// Floor on the time a request gives etcd to answer its first read, even
/// for a wait of 0 (`Deferred` needs etcd's answer).
pub const MIN_RPC: Duration = Duration::from_secs(1);

/// The bound on calls that have no caller's wait: renew, commit, release,
/// status.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// How many reclaimed permits the volume remembers.
pub const RECLAIMED_KEEP: usize = 32;

/// Idle permit leases a process keeps for reuse (a released permit's lease
/// serves the next request: one lease grant less on etcd's log).
const POOL_MAX: usize = 8;

/// A permit lease confirmed less than this long ago is not kept alive
/// again by a grant: so a permit's lease was confirmed at most this long
/// before its grant transaction was sent (and lives at least its TTL less
/// this from the moment it was requested).
const RENEW_AFTER: Duration = Duration::from_millis(50);

/// The least time a permit lease must have left, by this process's
/// account, to be used for a grant: its keep-alive, sent with the grant
/// transaction, must reach etcd before the lease ends.
const LEASE_SPARE: Duration = Duration::from_millis(200);

/// Bound on the removal of a timed-out request's queue key.
const WITHDRAW_TIMEOUT: Duration = Duration::from_millis(300);

const RECORD_MAGIC: &str = "mtipc-permit 1";

/// A permit's shadow key is its holder key with this after it: one range
/// (the holder key as a prefix: lease ids have 16 digits) holds both, so
/// that the release deletes both with one delete.
const SHADOW_SUFFIX: &str = ".shadow";

// ---------------------------------------------------------------------------
// The runtime.

struct Runtime {
    pid: u32,
    rt: tokio::runtime::Runtime,
}

static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

/// The process's tokio runtime for the etcd client, started on first use.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    let r = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mtipc-etcd")
            .enable_all()
            .build()
            .map(|rt| Runtime {
                pid: std::process::id(),
                rt,
            })
            .map_err(|e| e.to_string())
    });
    match r {
        Ok(rt) if rt.pid == std::process::id() => Ok(&rt.rt),
        Ok(rt) => Err(err!(
            Unavailable,
            "the etcd client of this process was started by process {} before it forked; \
             a forked child cannot use it (open etcd volumes after exec, or before any use)",
            rt.pid
        )),
        Err(e) => Err(err!(
            Unavailable,
            "cannot start the etcd client's runtime: {e}"
        )),
    }
}

/// Runs `fut` on the runtime's worker and waits for it (the calling thread
/// blocks). The whole call runs on the worker, where the client's
/// connection tasks run too: one hand-over to the worker and one back per
/// call, instead of two per round trip were the caller's thread to poll it
/// (`Runtime::block_on`). Works from inside another tokio runtime too.
/// [`call`] avoids even those two hand-overs where it can.
fn block<F>(fut: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let rt = runtime()?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| err!(Unavailable, "the etcd client's runtime stopped"))
}

/// Starts `fut` on the runtime, not waiting (best-effort cleanup).
fn spawn(fut: impl Future<Output = ()> + Send + 'static) -> Option<tokio::task::JoinHandle<()>> {
    runtime().ok().map(|rt| rt.spawn(fut))
}

/// A calling thread's own runtime (current-thread) and connections, one
/// per endpoint list, each with when it was last used: a call made on them
/// runs entirely on the calling thread, which drives the connection itself
/// while it waits for etcd. Between calls nothing reads those connections.
struct Local {
    pid: u32,
    rt: tokio::runtime::Runtime,
    clients: RefCell<HashMap<Vec<String>, Conn>>,
}

/// A thread's connection to an etcd cluster.
struct Conn {
    client: Client,
    used: Instant,
    /// Keep-alive streams by lease, kept open for the next keep-alive of
    /// the same lease (a pooled lease is kept alive again by later
    /// grants): one message each way instead of a new gRPC stream each
    /// time. At most [`KEEPERS_MAX`].
    keepers: HashMap<i64, Keeper>,
}

type Keeper = (etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream);

/// Keep-alive streams a thread keeps open per connection.
const KEEPERS_MAX: usize = 16;

thread_local! {
    static LOCAL: RefCell<Option<Rc<Local>>> = const { RefCell::new(None) };
}

tokio::task_local! {
    /// The calling thread's connection, while a call runs on its [`Local`]
    /// runtime ([`Shared::client`] gives it).
    static LOCAL_CLIENT: Client;
}

/// A thread's connection unused for this long is replaced before its next
/// call: nothing answered the server (or a proxy) meanwhile, which may
/// have closed it.
const LOCAL_IDLE: Duration = Duration::from_secs(30);

/// The calling thread's [`Local`], made on first use; `None` inside a
/// tokio runtime (a `block_on` cannot nest) or while the thread ends.
fn local() -> Option<Rc<Local>> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return None;
    }
    LOCAL
        .try_with(|slot| {
            let mut slot = slot.borrow_mut();
            if let Some(l) = slot.as_ref() {
                if l.pid == std::process::id() {
                    return Some(Rc::clone(l));
                }
                // A forked child's copy of its parent's: never touch it.
                std::mem::forget(slot.take());
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            let l = Rc::new(Local {
                pid: std::process::id(),
                rt,
                clients: RefCell::new(HashMap::new()),
            });
            *slot = Some(Rc::clone(&l));
            Some(l)
        })
        .ok()
        .flatten()
}

impl Local {
    /// The thread's connection to `sh`'s etcd, made (or remade, after
    /// [`LOCAL_IDLE`]) if need be, by `deadline`.
    async fn client(&self, sh: &Shared, deadline: Instant) -> Result<Client> {
        let now = Instant::now();
        if let Some(conn) = self.clients.borrow_mut().get_mut(&sh.urls) {
            if now.duration_since(conn.used) < LOCAL_IDLE {
                conn.used = now;
                return Ok(conn.client.clone());
            }
        }
        let c = sh.connect(deadline).await?;
        let conn = Conn {
            client: c.clone(),
            used: Instant::now(),
            keepers: HashMap::new(),
        };
        self.clients.borrow_mut().insert(sh.urls.clone(), conn);
        Ok(c)
    }
}

/// Keeps the lease `lease` alive once, on `client` (of the etcd at
/// `urls`): on a keep-alive stream the calling thread kept open for it if
/// any (see [`Conn::keepers`]), else on a new one, kept for the next time
/// when the call runs on the thread's connection. A lease that etcd no
/// longer has: `LeaseKeepAliveError("lease not found")`.
async fn keep_alive(
    client: &Client,
    urls: &[String],
    lease: i64,
) -> std::result::Result<(), etcd_client::Error> {
    let on_thread = LOCAL_CLIENT.try_with(|_| ()).is_ok();
    let with_conn = |f: &mut dyn FnMut(&mut Conn)| {
        if on_thread {
            let _ = LOCAL.try_with(|slot| {
                if let Some(l) = slot.borrow().as_ref() {
                    if let Some(conn) = l.clients.borrow_mut().get_mut(urls) {
                        f(conn);
                    }
                }
            });
        }
    };
    let mut kept: Option<Keeper> = None;
    with_conn(&mut |c| kept = c.keepers.remove(&lease));
    if let Some((mut keeper, mut stream)) = kept {
        let answer = match keeper.keep_alive().await {
            Ok(()) => stream.message().await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(Some(r)) if r.ttl() > 0 => {
                let mut back = Some((keeper, stream));
                with_conn(&mut |c| {
                    if let Some(k) = back.take() {
                        c.keepers.insert(lease, k);
                    }
                });
                return Ok(());
            }
            Ok(Some(_)) => {
                return Err(etcd_client::Error::LeaseKeepAliveError(
                    "lease not found".into(),
                ))
            }
            // The stream broke: a new one below.
            _ => {}
        }
    }
    let k = client.lease_client().keep_alive(lease).await?;
    let mut back = Some(k);
    with_conn(&mut |c| {
        if c.keepers.len() >= KEEPERS_MAX {
            c.keepers.clear();
        }
        if let Some(k) = back.take() {
            c.keepers.insert(lease, k);
        }
    });
    Ok(())
}

/// Runs `fut`, a call of the arbiter `sh`, and waits for it: on the
/// calling thread's own runtime and connection (connected by `deadline`
/// if need be) where it can, which spares the two hand-overs of [`block`]
/// (to the process's runtime thread and back: 28 µs each, p50, on the
/// bench machine); from inside a tokio runtime, with [`block`]. Work that
/// must go on after the call (keep-alives, cleanups) is spawned on the
/// process's runtime, with its own connection ([`Shared::background`]).
fn call<F>(sh: &Shared, deadline: Instant, fut: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    // The process's runtime: for that work, and the fork check.
    runtime()?;
    // On the heap once: a call's future is large (a request's, 17 KB
    // before its wait was boxed too), and every hand-over below would move
    // it (memmove was 2 % of the bench's client time).
    let fut = Box::pin(fut);
    match local() {
        Some(l) => l.rt.block_on(async {
            let client = l.client(sh, deadline).await?;
            Ok(LOCAL_CLIENT.scope(client, fut).await)
        }),
        None => block(fut),
    }
}

fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

// ---------------------------------------------------------------------------
// Records.

/// What a holder, shadow, queue or reclaimed key's value says.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    instance: Instance,
    mode: Mode,
    path: String,
    /// Queue keys: the fair-order tag.
    tag: u64,
    /// Reclaimed keys: why.
    reason: Option<ReclaimReason>,
}

impl Entry {
    fn encode(&self) -> String {
        let mut s = format!(
            "{RECORD_MAGIC}\nhost {}\npid {}\nstart {}\nmode {}\ntag {}\n",
            self.instance.host, self.instance.pid, self.instance.start, self.mode, self.tag
        );
        if let Some(r) = self.reason {
            s.push_str(match r {
                ReclaimReason::Dead => "reason dead\n",
                ReclaimReason::Expired => "reason expired\n",
            });
        }
        s.push_str(&format!("path {}\n", self.path));
        s
    }

    /// Parses a record another process wrote (any bytes: an entry or the
    /// fault, never a panic). An instance record (`g/` keys) has no mode
    /// or path: `instance_only`.
    fn decode(bytes: &[u8], instance_only: bool) -> std::result::Result<Entry, String> {
        if bytes.len() > 8192 {
            return Err("record longer than 8192 bytes".into());
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "record is not UTF-8".to_string())?;
        let mut lines = text.split('\n');
        if lines.next() != Some(RECORD_MAGIC) {
            return Err(format!("first line is not `{RECORD_MAGIC}`"));
        }
        let (mut host, mut pid, mut start, mut mode, mut tag, mut reason, mut path) =
            (None, None, None, None, None, None, None);
        for line in lines.filter(|l| !l.is_empty()) {
            let (k, v) = line
                .split_once(' ')
                .ok_or_else(|| format!("line {}: expected `key value`", crate::sys::shown(line)))?;
            let slot = match k {
                "host" => &mut host,
                "pid" => &mut pid,
                "start" => &mut start,
                "mode" => &mut mode,
                "tag" => &mut tag,
                "reason" => &mut reason,
                "path" => &mut path,
                _ => return Err(format!("unknown key {}", crate::sys::shown(k))),
            };
            if slot.replace(v).is_some() {
                return Err(format!("{k} given twice"));
            }
        }
        let num = |what: &str, v: Option<&str>| -> std::result::Result<u64, String> {
            let v = v.ok_or_else(|| format!("no {what}"))?;
            if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{what} {}: not a number", crate::sys::shown(v)));
            }
            v.parse().map_err(|_| format!("{what} {v}: out of range"))
        };
        let host = host.ok_or("no host")?;
        if host.len() > 255 || host.chars().any(char::is_control) {
            return Err(format!("host {}: not a host name", crate::sys::shown(host)));
        }
        let pid = num("pid", pid)?;
        let instance = Instance {
            host: host.to_owned(),
            pid: u32::try_from(pid).map_err(|_| format!("pid {pid}: out of range"))?,
            start: num("start", start)?,
        };
        if instance_only {
            return Ok(Entry {
                instance,
                mode: Mode::Read,
                path: String::new(),
                tag: 0,
                reason: None,
            });
        }
        let mode = match mode.ok_or("no mode")? {
            "read" => Mode::Read,
            "write" => Mode::Write,
            m => return Err(format!("mode {}: not read or write", crate::sys::shown(m))),
        };
        let reason = match reason {
            None => None,
            Some("dead") => Some(ReclaimReason::Dead),
            Some("expired") => Some(ReclaimReason::Expired),
            Some(r) => return Err(format!("reason {}: unknown", crate::sys::shown(r))),
        };
        let path = path.ok_or("no path")?;
        super::paths::check(path).map_err(|e| e.message().to_owned())?;
        Ok(Entry {
            instance,
            mode,
            path: path.to_owned(),
            tag: num("tag", tag)?,
            reason,
        })
    }
}

/// For the fuzz target `etcd_record`: parses a permit record as read from
/// etcd (hostile input) and gives the canonical text of what it accepted.
#[doc(hidden)]
pub fn fuzz_record(bytes: &[u8]) -> Option<String> {
    Entry::decode(bytes, false).ok().map(|e| e.encode())
}

/// The instance record of this process (`g/` keys).
fn instance_record(i: &Instance) -> String {
    format!(
        "{RECORD_MAGIC}\nhost {}\npid {}\nstart {}\n",
        i.host, i.pid, i.start
    )
}

/// The part of a key that names an instance: the host (characters other
/// than `[A-Za-z0-9._-]` as `_`), the pid and the start time.
fn instance_key(i: &Instance) -> String {
    let host: String = i
        .host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{host}:{}:{}", i.pid, i.start)
}

// ---------------------------------------------------------------------------
// The fair order.

/// The requests one pass grants: indexes into `queue`, which is in grant
/// order ((tag, arrival)), given the permits `held`. Walking the queue, a
/// request is granted if it conflicts with no permit held (or granted
/// earlier in the pass) and with no earlier request still waiting, and the
/// cap (`cap` permits held; 0: none) is not reached; once the cap blocks
/// one request, no later one is granted.
fn pass(held: &[(Mode, &str)], queue: &[(Mode, &str)], cap: u32) -> Vec<usize> {
    let conflict = |a: &(Mode, &str), b: &(Mode, &str)| a.1 == b.1 && !a.0.shares_with(b.0);
    let mut held: Vec<(Mode, &str)> = held.to_vec();
    let mut waiting: Vec<(Mode, &str)> = Vec::new();
    let mut granted = Vec::new();
    for (i, r) in queue.iter().enumerate() {
        if held.iter().chain(waiting.iter()).any(|o| conflict(o, r)) {
            waiting.push(*r);
            continue;
        }
        if cap != 0 && held.len() >= cap as usize {
            break;
        }
        held.push(*r);
        granted.push(i);
    }
    granted
}

// ---------------------------------------------------------------------------
// The volume's keys as read.

#[derive(Clone, Debug)]
struct Held {
    entry: Entry,
    lease: i64,
    token: u64,
}

#[derive(Clone, Debug)]
struct Queued {
    key: Vec<u8>,
    entry: Entry,
    arrival: i64,
}

#[derive(Clone, Debug)]
struct Shadow {
    key: Vec<u8>,
    entry: Entry,
    token: u64,
    /// The lease part of its key (its holder key's is the same).
    lease: String,
}

#[derive(Clone, Debug, Default)]
struct State {
    /// The revision the read saw: every key of the volume written up to
    /// it is here (a key deleted since may be here still), and none
    /// written after it.
    rev: i64,
    holders: Vec<Held>,
    /// In grant order.
    queue: Vec<Queued>,
    shadows: Vec<Shadow>,
    vtime: u64,
    last_token: u64,
    grants: Vec<(Instance, u64)>,
    /// Oldest first.
    reclaimed: Vec<(Vec<u8>, Reclaimed)>,
}

impl State {
    fn parse(prefix: &str, rev: i64, kvs: &[KeyValue]) -> Result<State> {
        let mut st = State {
            rev,
            ..State::default()
        };
        for kv in kvs {
            let Some(rest) = kv.key().strip_prefix(prefix.as_bytes()) else {
                continue;
            };
            let shown = || String::from_utf8_lossy(kv.key()).into_owned();
            let bad =
                |why: String| err!(Corrupt, "etcd key {}: {why}", crate::sys::shown(&shown()));
            let entry = |instance_only| Entry::decode(kv.value(), instance_only).map_err(bad);
            if let Some(l) = rest
                .strip_prefix(b"h/")
                .and_then(|l| l.strip_suffix(SHADOW_SUFFIX.as_bytes()))
            {
                st.shadows.push(Shadow {
                    key: kv.key().to_vec(),
                    entry: entry(false)?,
                    token: kv.create_revision() as u64,
                    lease: String::from_utf8_lossy(l).into_owned(),
                });
            } else if let Some(l) = rest.strip_prefix(b"h/") {
                let lease = std::str::from_utf8(l)
                    .ok()
                    .and_then(|l| i64::from_str_radix(l, 16).ok())
                    .ok_or_else(|| bad("not a lease id".into()))?;
                st.holders.push(Held {
                    entry: entry(false)?,
                    lease,
                    token: kv.create_revision() as u64,
                });
            } else if rest.starts_with(b"q/") {
                st.queue.push(Queued {
                    key: kv.key().to_vec(),
                    entry: entry(false)?,
                    arrival: kv.create_revision(),
                });
            } else if rest.starts_with(b"g/") {
                st.grants
                    .push((entry(true)?.instance, kv.version().max(0) as u64));
            } else if let Some(t) = rest.strip_prefix(b"r/") {
                let e = entry(false)?;
                let token = std::str::from_utf8(t)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| bad("not a token".into()))?;
                st.reclaimed.push((
                    kv.key().to_vec(),
                    Reclaimed {
                        instance: e.instance,
                        path: e.path,
                        token,
                        reason: e.reason.unwrap_or(ReclaimReason::Expired),
                    },
                ));
            } else if rest == b"vtime" {
                let v = std::str::from_utf8(kv.value())
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad("not a number".into()))?;
                st.vtime = v;
                st.last_token = kv.mod_revision() as u64;
            }
        }
        st.queue
            .sort_by_key(|q| (q.entry.tag, q.arrival, q.key.clone()));
        st.holders.sort_by_key(|h| h.token);
        st.reclaimed.sort_by_key(|r| r.1.token);
        Ok(st)
    }

    /// The tag a new request of `me` gets: one more than the larger of the
    /// volume's vtime and the largest tag of `me`'s requests still queued.
    fn next_tag(&self, me: &Instance) -> u64 {
        let own = self
            .queue
            .iter()
            .filter(|q| q.entry.instance == *me)
            .map(|q| q.entry.tag)
            .max()
            .unwrap_or(0);
        self.vtime.max(own) + 1
    }

    /// Which request the pass grants first: an index into the queue, or
    /// `Some(queue.len())` for `newcomer` (not queued yet, so last among
    /// equal tags).
    fn first(&self, cap: u32, newcomer: Option<(Mode, &str, u64)>) -> Option<usize> {
        let held: Vec<(Mode, &str)> = self
            .holders
            .iter()
            .map(|h| (h.entry.mode, h.entry.path.as_str()))
            .collect();
        let mut order: Vec<(u64, usize)> = self
            .queue
            .iter()
            .enumerate()
            .map(|(i, q)| (q.entry.tag, i))
            .collect();
        if let Some((_, _, tag)) = newcomer {
            // After every queued request of the same tag (it arrives last).
            let at = order.partition_point(|&(t, _)| t <= tag);
            order.insert(at, (tag, self.queue.len()));
        }
        let reqs: Vec<(Mode, &str)> = order
            .iter()
            .map(|&(_, i)| match (self.queue.get(i), newcomer) {
                (Some(q), _) => (q.entry.mode, q.entry.path.as_str()),
                (None, Some((m, p, _))) => (m, p),
                (None, None) => unreachable!("index past the queue without a newcomer"),
            })
            .collect();
        pass(&held, &reqs, cap).first().map(|&k| order[k].1)
    }

    /// The volume's keys after this process's grant transaction `rev`,
    /// which this view guarded (no key written since it: so nothing but
    /// the grant's own writes came in between, deletions aside): `entry`
    /// held on `lease` with token `rev`, its shadow `shadow_key`, the
    /// vtime its tag, `queued` (its queue key, if it was queued) gone,
    /// one more grant for `me`. Made here instead of read back in the
    /// transaction.
    fn after_grant(
        &self,
        rev: i64,
        lease: i64,
        entry: &Entry,
        shadow_key: Vec<u8>,
        queued: Option<&[u8]>,
        me: &Instance,
    ) -> State {
        let mut st = self.clone();
        st.rev = rev;
        let token = rev as u64;
        st.holders.push(Held {
            entry: entry.clone(),
            lease,
            token,
        });
        st.shadows.push(Shadow {
            key: shadow_key,
            entry: entry.clone(),
            token,
            lease: format!("{lease:016x}"),
        });
        st.vtime = entry.tag;
        st.last_token = token;
        if let Some(k) = queued {
            st.queue.retain(|q| q.key != k);
        }
        match st.grants.iter_mut().find(|(i, _)| i == me) {
            Some((_, n)) => *n += 1,
            None => st.grants.push((me.clone(), 1)),
        }
        st
    }

    /// The volume's keys after this process's release of the permit on
    /// `lease` (its holder and shadow keys deleted), as far as this view
    /// knows: its revision stays, since others may have written between
    /// it and the release.
    fn after_release(&self, lease: i64) -> State {
        let mut st = self.clone();
        let hex = format!("{lease:016x}");
        st.holders.retain(|h| h.lease != lease);
        st.shadows.retain(|s| s.lease != hex);
        st
    }

    /// Whether this view shows nobody but `me` using the volume: no
    /// permit held by another instance, no request queued.
    fn quiet_for(&self, me: &Instance) -> bool {
        self.queue.is_empty() && self.holders.iter().all(|h| h.entry.instance == *me)
    }

    /// Shadows whose holder key is gone: permits whose lease ran out.
    fn orphans(&self) -> impl Iterator<Item = &Shadow> {
        self.shadows.iter().filter(|s| {
            !self
                .holders
                .iter()
                .any(|h| h.token == s.token && format!("{:016x}", h.lease) == s.lease)
        })
    }
}

// ---------------------------------------------------------------------------
// The arbiter.

/// A permit lease this process holds (for a permit, or idle in the pool).
#[derive(Clone, Copy, Debug)]
struct Lease {
    id: i64,
    /// The TTL etcd granted.
    ttl: Duration,
    /// When the last grant or keep-alive that etcd confirmed was sent: the
    /// lease lives at least until `confirmed + ttl`.
    confirmed: Instant,
}

impl Lease {
    /// Whether the lease surely lives [`LEASE_SPARE`] longer.
    fn spare(&self) -> bool {
        self.confirmed + self.ttl > Instant::now() + LEASE_SPARE
    }
}

struct Session {
    id: i64,
    dead: Arc<Flag>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the arbiter and its grants share.
struct Shared {
    name: String,
    urls: Vec<String>,
    prefix: String,
    cap: u32,
    /// The TTL asked for a permit lease (the volume's lease, rounded up to
    /// whole seconds).
    ask_ttl: i64,
    me: Instance,
    me_key: String,
    /// The connection of the process's runtime (background work, and
    /// calls made from inside a tokio runtime).
    client: Arc<Mutex<Option<Client>>>,
    session: tokio::sync::Mutex<Option<Session>>,
    pool: Mutex<Vec<Lease>>,
    /// The volume's keys as this process last saw them (a read, or the
    /// read inside its last grant or release transaction): a request
    /// decides on it first, its transaction's guard catching any change
    /// since, and reads etcd only when the guard fails or the decision is
    /// to wait.
    cache: Mutex<Option<Arc<State>>>,
    /// The TTL etcd last granted a permit lease, in ms (0: none yet).
    granted_ttl_ms: AtomicU64,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdArbiter")
            .field("volume", &self.name)
            .field("etcd", &self.urls)
            .finish_non_exhaustive()
    }
}

/// The process runtime's client of an arbiter, as its background tasks
/// get it (they do not keep the arbiter alive).
struct ProcessConn {
    slot: Arc<Mutex<Option<Client>>>,
    urls: Vec<String>,
}

impl ProcessConn {
    /// The client, made if need be by `deadline`; `None` if it cannot be.
    /// Only from a task of the process's runtime (a client's connection
    /// runs on the runtime that made it).
    async fn get(&self, deadline: Instant) -> Option<Client> {
        if let Some(c) = self.slot.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Some(c);
        }
        let opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
        let c = tokio::time::timeout(left(deadline), Client::connect(&self.urls, Some(opts)))
            .await
            .ok()?
            .ok()?;
        Some(
            self.slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(c)
                .clone(),
        )
    }
}

/// Queue keys are numbered per process (several arbiters of one process,
/// in two domains, share its instance).
static NONCE: AtomicU64 = AtomicU64::new(0);

/// Why a call failed, for the caller to decide.
enum Fail {
    /// The transaction's guard did not hold (someone wrote first).
    Raced,
    /// The permit lease it used has lapsed, or may lapse before etcd sees
    /// its keep-alive: nothing was written; take another.
    LeaseGone,
    /// The grant landed, on a lease that lapsed at once (or whose
    /// keep-alive etcd did not confirm: it is revoked): the permit is lost
    /// (its shadow is recorded as reclaimed later), and a queued request's
    /// queue key went with the grant: take another lease and ask again.
    Lapsed,
    /// Something else.
    Err(Error),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::Err(e)
    }
}

fn lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("not found"),
        etcd_client::Error::GRpcStatus(s) => s.message().contains("lease not found"),
        _ => false,
    }
}

impl Shared {
    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn holder_key(&self, lease: i64) -> String {
        self.key(&format!("h/{lease:016x}"))
    }

    fn shadow_key(&self, lease: i64) -> String {
        self.key(&format!("h/{lease:016x}{SHADOW_SUFFIX}"))
    }

    fn grants_key(&self) -> String {
        self.key(&format!("g/{}", self.me_key))
    }

    fn own_queue_prefix(&self) -> String {
        self.key(&format!("q/{}/", self.me_key))
    }

    /// `fut` (an etcd call about `what`), bounded by `deadline`; a failure
    /// or no answer in time is `Unavailable`.
    async fn call<T>(
        &self,
        deadline: Instant,
        what: &str,
        fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(left(deadline), fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(err!(
                Unavailable,
                "volume {} on etcd {}: {what}: {e}",
                self.name,
                self.urls.join(",")
            )),
            Err(_) => Err(err!(
                Unavailable,
                "volume {} on etcd {}: {what}: no answer in time",
                self.name,
                self.urls.join(",")
            )),
        }
    }

    /// A new client (connections are opened lazily, and every call is
    /// bounded by its own deadline).
    async fn connect(&self, deadline: Instant) -> Result<Client> {
        let opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
        self.call(deadline, "connect", Client::connect(&self.urls, Some(opts)))
            .await
    }

    /// The client for a call: the calling thread's inside [`call`], else
    /// the process runtime's, made on first use.
    async fn client(&self, deadline: Instant) -> Result<Client> {
        if let Ok(c) = LOCAL_CLIENT.try_with(Client::clone) {
            return Ok(c);
        }
        if let Some(c) = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(c);
        }
        let c = self.connect(deadline).await?;
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        Ok(slot.get_or_insert(c).clone())
    }

    /// Runs `f` with the process runtime's client, on that runtime, in the
    /// background (never with a calling thread's connection, which nothing
    /// drives between calls); gives up if no client can be made within
    /// [`RPC_TIMEOUT`].
    fn background<F, Fut>(&self, f: F) -> Option<tokio::task::JoinHandle<()>>
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let conn = self.process_conn();
        spawn(async move {
            if let Some(client) = conn.get(Instant::now() + RPC_TIMEOUT).await {
                f(client).await;
            }
        })
    }

    /// What a task of the process's runtime needs to get its client.
    fn process_conn(&self) -> ProcessConn {
        ProcessConn {
            slot: Arc::clone(&self.client),
            urls: self.urls.clone(),
        }
    }

    /// The volume's keys now (a linearizable read).
    async fn read(&self, client: &Client, deadline: Instant) -> Result<Arc<State>> {
        let mut kv = client.kv_client();
        let resp = self
            .call(
                deadline,
                "read",
                kv.get(self.prefix.as_str(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let st = Arc::new(State::parse(&self.prefix, rev, resp.kvs())?);
        self.remember(&st);
        Ok(st)
    }

    /// Keeps `st` as the latest view of the volume, unless a later one is
    /// kept already (one of the same revision is replaced: `st` may know
    /// of a deletion since).
    fn remember(&self, st: &Arc<State>) {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let newer = match c.as_ref() {
            Some(old) => old.rev <= st.rev,
            None => true,
        };
        if newer {
            *c = Some(Arc::clone(st));
        }
    }

    fn cached(&self) -> Option<Arc<State>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The view of the volume a transaction's `get` of the prefix (its
    /// last op response) gave, at the transaction's revision.
    fn remember_txn(&self, resp: &etcd_client::TxnResponse) {
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        if let Some(etcd_client::TxnOpResponse::Get(g)) = resp.op_responses().pop() {
            if let Ok(st) = State::parse(&self.prefix, rev, g.kvs()) {
                self.remember(&Arc::new(st));
            }
        }
    }

    /// The op that reads the whole volume inside a transaction.
    fn get_all(&self) -> TxnOp {
        TxnOp::get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
    }

    /// This process's session lease (queue keys and grant counters live on
    /// it), granted on first use and kept alive by a task of the runtime.
    async fn session(&self, client: &Client, deadline: Instant) -> Result<i64> {
        let mut s = self.session.lock().await;
        if let Some(sess) = &*s {
            if !sess.dead.is_set() {
                return Ok(sess.id);
            }
        }
        let mut lc = client.lease_client();
        let sent = Instant::now();
        let r = self
            .call(deadline, "session lease", lc.grant(SESSION_TTL_S, None))
            .await?;
        let dead = Arc::new(Flag::new());
        let ttl = Duration::from_secs(r.ttl().max(1) as u64);
        let task = spawn(keep_session(
            self.process_conn(),
            r.id(),
            ttl,
            sent,
            dead.clone(),
        ))
        .ok_or_else(|| {
            err!(
                Unavailable,
                "volume {}: the etcd client's runtime stopped",
                self.name
            )
        })?;
        *s = Some(Session {
            id: r.id(),
            dead,
            task,
        });
        Ok(r.id())
    }

    /// This process's session lease, if it has a live one now.
    fn live_session(&self) -> Option<i64> {
        let s = self.session.try_lock().ok()?;
        s.as_ref().filter(|s| !s.dead.is_set()).map(|s| s.id)
    }

    /// An idle lease of the pool that will not lapse before etcd sees our
    /// keep-alive, if any (the others are let go).
    fn pooled_lease(&self) -> Option<Lease> {
        loop {
            let l = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            if l.spare() {
                return Some(l);
            }
        }
    }

    /// A lease for a new permit: an idle one of the pool (no call: the
    /// grant transaction renews it), else a new one.
    async fn permit_lease(&self, client: &Client, deadline: Instant) -> Result<Lease> {
        if let Some(l) = self.pooled_lease() {
            return Ok(l);
        }
        let mut lc = client.lease_client();
        let sent = Instant::now();
        let r = self
            .call(deadline, "lease grant", lc.grant(self.ask_ttl, None))
            .await?;
        let ttl = Duration::from_secs(r.ttl().max(0) as u64);
        self.granted_ttl_ms
            .store(ttl.as_millis() as u64, Ordering::Relaxed);
        Ok(Lease {
            id: r.id(),
            ttl,
            confirmed: sent,
        })
    }

    /// Keeps `l` (no key on it any more) for the next request.
    fn pool_return(&self, l: Lease) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(l);
            return;
        }
        drop(pool);
        self.background(move |c| async move {
            let _ = tokio::time::timeout(RPC_TIMEOUT, c.lease_client().revoke(l.id)).await;
        });
    }

    /// Makes sure the lease `l` (on which a grant may or may not have
    /// been written) holds nothing: revokes it, in the background.
    fn forget(&self, l: Lease) {
        self.background(move |c| async move {
            let _ = tokio::time::timeout(RPC_TIMEOUT, c.lease_client().revoke(l.id)).await;
        });
    }

    /// Removes the queue key `key`, which may or may not exist, in the
    /// background, retrying while etcd does not answer (it is on the
    /// session lease too, so it goes at the latest with the session).
    fn withdraw_later(&self, key: Vec<u8>) {
        self.background(move |c| async move {
            let mut kv = c.kv_client();
            for _ in 0..50 {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(RPC_TIMEOUT, kv.delete(key.clone(), None)).await
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    /// Grants `entry` to this process on lease `lease`, if no key of the
    /// volume was written since `state` was read (and, for a queued
    /// request, its queue key `queued` is still there; it is removed).
    /// Unless etcd confirmed the lease less than [`RENEW_AFTER`] ago, a
    /// keep-alive of it goes with the transaction, so that the permit
    /// starts with its whole TTL (less that at most). A lease that may lapse before etcd sees that keep-alive (a waiter's,
    /// idle while it waited) is not used: `LeaseGone`. Returns the token.
    #[allow(clippy::too_many_arguments)]
    async fn try_grant(
        &self,
        client: &Client,
        state: &State,
        lease: &mut Lease,
        session: i64,
        entry: &Entry,
        queued: Option<(&[u8], i64)>,
        deadline: Instant,
    ) -> std::result::Result<u64, Fail> {
        if !lease.spare() {
            return Err(Fail::LeaseGone);
        }
        let mut when =
            vec![
                Compare::mod_revision(self.prefix.as_str(), CompareOp::Less, state.rev + 1)
                    .with_prefix(),
            ];
        let record = entry.encode();
        let mut ops = vec![
            TxnOp::put(
                self.holder_key(lease.id),
                record.clone(),
                Some(PutOptions::new().with_lease(lease.id)),
            ),
            TxnOp::put(self.shadow_key(lease.id), record, None),
            TxnOp::put(self.key("vtime"), entry.tag.to_string(), None),
            TxnOp::put(
                self.grants_key(),
                instance_record(&self.me),
                Some(PutOptions::new().with_lease(session)),
            ),
        ];
        if let Some((key, arrival)) = queued {
            when.push(Compare::create_revision(key, CompareOp::Equal, arrival));
            ops.push(TxnOp::delete(key, None));
        }
        let txn = Txn::new().when(when).and_then(ops);
        let mut kv = client.kv_client();
        let renew = lease.confirmed.elapsed() >= RENEW_AFTER;
        let sent = Instant::now();
        // The keep-alive beside the transaction, boxed: its future would
        // double the size of every grant's.
        let both = async {
            if renew {
                let both =
                    async { tokio::join!(kv.txn(txn), keep_alive(client, &self.urls, lease.id)) };
                let (t, k) = Box::pin(both).await;
                (t, Some(k))
            } else {
                (kv.txn(txn).await, None)
            }
        };
        let unavailable = |what: String| {
            Fail::Err(err!(
                Unavailable,
                "volume {} on etcd {}: grant: {what}",
                self.name,
                self.urls.join(",")
            ))
        };
        let (txn, kept) = match tokio::time::timeout(left(deadline), both).await {
            Ok(r) => r,
            Err(_) => return Err(unavailable("no answer in time".into())),
        };
        let lapsed = matches!(&kept, Some(Err(e)) if lease_not_found(e));
        let resp = match txn {
            Ok(r) => r,
            Err(e) if lease_not_found(&e) => return Err(Fail::LeaseGone),
            Err(e) => return Err(unavailable(e.to_string())),
        };
        if lapsed {
            if !resp.succeeded() {
                return Err(Fail::LeaseGone);
            }
            // Granted on a lease that lapsed at once (etcd revokes an
            // expired lease some time after its end; the transaction came
            // in between): the holder key went with it, and the queue key
            // with the grant; the shadow left is recorded as reclaimed
            // later.
            return Err(Fail::Lapsed);
        }
        if !resp.succeeded() {
            return Err(Fail::Raced);
        }
        match kept {
            Some(Ok(())) => lease.confirmed = sent,
            // Granted, but etcd did not confirm the keep-alive: the lease
            // may end sooner than a whole TTL from now. Give that permit
            // up (its shadow is recorded as reclaimed) and ask again.
            Some(Err(_)) => {
                self.forget(*lease);
                return Err(Fail::Lapsed);
            }
            None => {}
        }
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        self.remember(&Arc::new(state.after_grant(
            rev,
            lease.id,
            entry,
            self.shadow_key(lease.id).into_bytes(),
            queued.map(|(k, _)| k),
            &self.me,
        )));
        Ok(rev as u64)
    }

    /// Records the permits whose lease ran out (shadows without a holder)
    /// as reclaimed, and trims the history. Returns whether it changed
    /// anything.
    async fn reclaim(&self, client: &Client, state: &State, deadline: Instant) -> Result<bool> {
        let mut changed = false;
        let mut added = 0;
        for s in state.orphans() {
            let alive = if s.entry.instance.host == self.me.host {
                crate::sys::ProcId {
                    pid: s.entry.instance.pid,
                    start: s.entry.instance.start,
                }
                .is_alive()
            } else {
                state.grants.iter().any(|(i, _)| *i == s.entry.instance)
            };
            let reason = if alive {
                ReclaimReason::Expired
            } else {
                ReclaimReason::Dead
            };
            if self
                .record_reclaimed(client, &s.key, s.token, &s.entry, reason, deadline)
                .await?
            {
                added += 1;
                changed = true;
            }
        }
        let excess = (state.reclaimed.len() + added).saturating_sub(RECLAIMED_KEEP);
        if excess > 0 {
            let ops: Vec<TxnOp> = state
                .reclaimed
                .iter()
                .take(excess)
                .map(|(k, _)| TxnOp::delete(k.clone(), None))
                .collect();
            let mut kv = client.kv_client();
            self.call(deadline, "trim reclaimed", kv.txn(Txn::new().and_then(ops)))
                .await?;
            changed = true;
        }
        Ok(changed)
    }

    /// Turns the shadow `key` (token `token`) into a reclaimed record, if
    /// nobody did yet.
    async fn record_reclaimed(
        &self,
        client: &Client,
        key: &[u8],
        token: u64,
        entry: &Entry,
        reason: ReclaimReason,
        deadline: Instant,
    ) -> Result<bool> {
        let txn = self.reclaim_txn(key, token, entry, reason);
        let mut kv = client.kv_client();
        let r = self.call(deadline, "record reclaimed", kv.txn(txn)).await?;
        if r.succeeded() {
            self.log_reclaimed(token, entry, reason);
        }
        Ok(r.succeeded())
    }

    /// The transaction that turns the shadow `key` (token `token`) into a
    /// reclaimed record, unless somebody did already.
    fn reclaim_txn(&self, key: &[u8], token: u64, entry: &Entry, reason: ReclaimReason) -> Txn {
        let rec = Entry {
            reason: Some(reason),
            ..entry.clone()
        };
        Txn::new()
            .when([Compare::create_revision(
                key,
                CompareOp::Equal,
                token as i64,
            )])
            .and_then([
                TxnOp::delete(key, None),
                TxnOp::put(self.key(&format!("r/{token:020}")), rec.encode(), None),
            ])
    }

    fn log_reclaimed(&self, token: u64, entry: &Entry, reason: ReclaimReason) {
        crate::log::info!(
            volume = %self.name,
            token,
            holder = %entry.instance,
            path = %entry.path,
            reason = ?reason,
            "etcd permit reclaimed"
        );
    }
}

/// Keeps the session lease `id` alive (every third of its TTL) until it is
/// lost: then sets `dead` (the next request makes a new session). A task
/// of the process's runtime, on its client.
async fn keep_session(conn: ProcessConn, id: i64, ttl: Duration, sent: Instant, dead: Arc<Flag>) {
    let mut confirmed = sent;
    let step = ttl / 3;
    loop {
        let sent = Instant::now();
        let Some(client) = conn.get(sent + step).await else {
            if confirmed.elapsed() >= ttl {
                dead.set();
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut lc = client.lease_client();
        match tokio::time::timeout(step, lc.keep_alive(id)).await {
            Ok(Ok((mut keeper, mut stream))) => {
                confirmed = sent;
                loop {
                    tokio::time::sleep(step).await;
                    let sent = Instant::now();
                    if keeper.keep_alive().await.is_err() {
                        break;
                    }
                    match tokio::time::timeout(step, stream.message()).await {
                        Ok(Ok(Some(r))) if r.ttl() > 0 => confirmed = sent,
                        Ok(Ok(Some(_))) => {
                            dead.set();
                            return;
                        }
                        _ => break,
                    }
                }
            }
            Ok(Err(e)) if lease_not_found(&e) => {
                dead.set();
                return;
            }
            _ => {}
        }
        if confirmed.elapsed() >= ttl {
            dead.set();
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The arbiter of a volume whose permits are kept in etcd.
#[derive(Debug)]
pub struct EtcdArbiter {
    shared: Arc<Shared>,
}

impl EtcdArbiter {
    /// The arbiter of volume `name` (record `record`) on the etcd cluster
    /// at `urls` (comma separated). Nothing is sent to etcd until the
    /// first request or status. `Unavailable` for `https://` endpoints
    /// (this build's client has no TLS).
    pub fn open(name: &str, record: &VolumeRecord, urls: &str) -> Result<EtcdArbiter> {
        let urls: Vec<String> = urls.split(',').map(str::to_owned).collect();
        if let Some(u) = urls.iter().find(|u| u.starts_with("https://")) {
            return Err(err!(
                Unavailable,
                "volume {name}: etcd endpoint {u} uses https, and this build's etcd client has no TLS"
            ));
        }
        let me = crate::sys::ProcId::current()?;
        let me = Instance {
            host: crate::sys::host_name(),
            pid: me.pid,
            start: me.start,
        };
        Ok(EtcdArbiter {
            shared: Arc::new(Shared {
                name: name.to_owned(),
                prefix: format!("{ROOT}{name}/"),
                cap: record.max_transfers,
                ask_ttl: record.lease_ms.div_ceil(1000).max(1) as i64,
                me_key: instance_key(&me),
                me,
                urls,
                client: Arc::new(Mutex::new(None)),
                session: tokio::sync::Mutex::new(None),
                pool: Mutex::new(Vec::new()),
                cache: Mutex::new(None),
                granted_ttl_ms: AtomicU64::new(0),
            }),
        })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Give back what this process held on etcd at once instead of
        // letting it lapse: the idle leases and the session.
        let Some(client) = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        let mut ids: Vec<i64> = self
            .pool
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .map(|l| l.id)
            .collect();
        if let Some(s) = self.session.get_mut().take() {
            ids.push(s.id);
        }
        let mut lc = client.lease_client();
        spawn(async move {
            for id in ids {
                let _ = tokio::time::timeout(RPC_TIMEOUT, lc.revoke(id)).await;
            }
        });
    }
}

impl Arbiter for EtcdArbiter {
    fn request(&self, path: &str, mode: Mode, wait: Duration) -> Result<Box<dyn Grant>> {
        let sh = Arc::clone(&self.shared);
        let path = path.to_owned();
        // Connecting gets the time the first read gets (see `request`).
        let connect_by = Instant::now() + wait.max(MIN_RPC);
        let g = call(&self.shared, connect_by, request(sh, path, mode, wait))??;
        Ok(Box::new(g))
    }

    fn status(&self) -> Result<Status> {
        let connect_by = Instant::now() + RPC_TIMEOUT;
        call(&self.shared, connect_by, status(Arc::clone(&self.shared)))?
    }
}

async fn request(sh: Arc<Shared>, path: String, mode: Mode, wait: Duration) -> Result<EtcdGrant> {
    let start = Instant::now();
    let deadline = start + wait;
    let first_deadline = deadline.max(start + MIN_RPC);
    let client = sh.client(first_deadline).await?;
    // The view this process has of the volume if any (the guard of the
    // grant catches what changed since), a live session and an idle
    // lease: nothing to ask etcd before the grant. Else (boxed: those
    // calls' futures would make every request's several times larger)
    // they are made at once.
    let quick = match (sh.cached(), sh.live_session()) {
        (Some(st), Some(s)) => sh.pooled_lease().map(|l| (l, st, s)),
        _ => None,
    };
    let (mut lease, mut state, session, mut fresh) = match quick {
        Some((l, st, s)) => (l, st, s, false),
        None => Box::pin(setup(&sh, &client, first_deadline)).await?,
    };
    if fresh && state.orphans().next().is_some() {
        let (sh2, st2) = (Arc::clone(&sh), Arc::clone(&state));
        sh.background(move |c| async move {
            let _ = sh2.reclaim(&c, &st2, Instant::now() + RPC_TIMEOUT).await;
        });
    }
    let mut entry = Entry {
        instance: sh.me.clone(),
        mode,
        path,
        tag: 0,
        reason: None,
    };
    loop {
        // Granted at once if the pass would grant this request first.
        loop {
            entry.tag = state.next_tag(&sh.me);
            let newcomer = Some((mode, entry.path.as_str(), entry.tag));
            if state.first(sh.cap, newcomer) == Some(state.queue.len()) {
                match sh
                    .try_grant(
                        &client,
                        &state,
                        &mut lease,
                        session,
                        &entry,
                        None,
                        first_deadline,
                    )
                    .await
                {
                    Ok(token) => return Ok(EtcdGrant::new(&sh, lease, token, entry)),
                    Err(Fail::Raced) => {}
                    Err(Fail::LeaseGone | Fail::Lapsed) => {
                        lease = Box::pin(sh.permit_lease(&client, first_deadline)).await?;
                    }
                    Err(Fail::Err(e)) => {
                        sh.forget(lease);
                        return Err(e);
                    }
                }
            } else if fresh {
                break;
            }
            // A view that was stale, or a race: read etcd.
            state = match Box::pin(sh.read(&client, first_deadline)).await {
                Ok(st) => st,
                Err(e) => {
                    sh.pool_return(lease);
                    return Err(e);
                }
            };
            fresh = true;
        }
        if wait.is_zero() {
            sh.pool_return(lease);
            return Err(err!(
                Deferred,
                "volume {}: {} {}: a transfer in flight or an earlier request conflicts (etcd)",
                sh.name,
                mode,
                entry.path
            ));
        }
        // Queue: put the queue key with its tag, unless the vtime or this
        // instance's queued requests changed since the read.
        let nonce = NONCE.fetch_add(1, Ordering::Relaxed);
        let qkey = sh
            .key(&format!("q/{}/{nonce:016x}", sh.me_key))
            .into_bytes();
        let arrival = loop {
            entry.tag = state.next_tag(&sh.me);
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(sh.key("vtime"), CompareOp::Less, state.rev + 1),
                    Compare::mod_revision(sh.own_queue_prefix(), CompareOp::Less, state.rev + 1)
                        .with_prefix(),
                ])
                .and_then([TxnOp::put(
                    qkey.clone(),
                    entry.encode(),
                    Some(PutOptions::new().with_lease(session)),
                )]);
            let mut kv = client.kv_client();
            match Box::pin(sh.call(first_deadline, "queue", kv.txn(txn))).await {
                Ok(r) if r.succeeded() => break r.header().map(|h| h.revision()).unwrap_or(0),
                Ok(_) => {}
                Err(e) => {
                    sh.withdraw_later(qkey);
                    sh.pool_return(lease);
                    return Err(e);
                }
            }
            state = match Box::pin(sh.read(&client, first_deadline)).await {
                Ok(st) => st,
                Err(e) => {
                    sh.pool_return(lease);
                    return Err(e);
                }
            };
        };
        // Boxed: the wait's state would otherwise make every request's
        // future several times larger.
        let e = match Box::pin(wait_queued(
            &sh, &client, &mut lease, session, &entry, &qkey, arrival, deadline,
        ))
        .await
        {
            Ok(Some(token)) => return Ok(EtcdGrant::new(&sh, lease, token, entry)),
            Ok(None) => {
                // Granted on a lease that lapsed at once, which took the
                // queue key: ask again, on another lease.
                if Instant::now() >= deadline {
                    return Err(err!(
                        Timeout,
                        "volume {}: {} {}: still deferred after the wait",
                        sh.name,
                        entry.mode,
                        entry.path
                    ));
                }
                lease = Box::pin(sh.permit_lease(&client, deadline)).await?;
                state = match Box::pin(sh.read(&client, deadline)).await {
                    Ok(st) => st,
                    Err(e) => {
                        sh.pool_return(lease);
                        return Err(e);
                    }
                };
                continue;
            }
            Err(e) => e,
        };
        // Leave no trace: take the request out of the queue.
        let mut kv = client.kv_client();
        let gone = Box::pin(tokio::time::timeout(
            WITHDRAW_TIMEOUT,
            kv.delete(qkey.clone(), None),
        ))
        .await;
        if !matches!(gone, Ok(Ok(_))) {
            sh.withdraw_later(qkey);
            if e.kind() == crate::ErrorKind::Timeout {
                sh.pool_return(lease);
                return Err(err!(
                    Unavailable,
                    "volume {}: {}; and etcd did not answer the withdrawal of the request \
                     (it will go with this process's session)",
                    sh.name,
                    e.message()
                ));
            }
        }
        match e.kind() {
            // A grant whose outcome is unknown: make sure it holds nothing.
            crate::ErrorKind::Unavailable => sh.forget(lease),
            _ => sh.pool_return(lease),
        }
        return Err(e);
    }
}

/// A request's permit lease, view and session, asked of etcd at once where
/// this process has none: a new lease, a read (then `fresh`), a session.
async fn setup(
    sh: &Arc<Shared>,
    client: &Client,
    deadline: Instant,
) -> Result<(Lease, Arc<State>, i64, bool)> {
    let cached = sh.cached();
    let fresh = cached.is_none();
    let view = async {
        match cached {
            Some(st) => Ok(st),
            None => sh.read(client, deadline).await,
        }
    };
    let (lease, state, session) = tokio::join!(
        sh.permit_lease(client, deadline),
        view,
        sh.session(client, deadline)
    );
    let lease = lease?;
    match (state, session) {
        (Ok(st), Ok(s)) => Ok((lease, st, s, fresh)),
        (Err(e), _) | (_, Err(e)) => {
            sh.pool_return(lease);
            Err(e)
        }
    }
}

/// Waits, watching the volume's keys, until the queued request `qkey`
/// is the first the pass grants, and grants it: its token. `None` if the
/// grant landed on a lease that lapsed at once (its queue key went with
/// it: the request must ask again). `Timeout` at `deadline`.
#[allow(clippy::too_many_arguments)]
async fn wait_queued(
    sh: &Shared,
    client: &Client,
    lease: &mut Lease,
    session: i64,
    entry: &Entry,
    qkey: &[u8],
    arrival: i64,
    deadline: Instant,
) -> Result<Option<u64>> {
    let timeout = || {
        err!(
            Timeout,
            "volume {}: {} {}: still deferred after the wait",
            sh.name,
            entry.mode,
            entry.path
        )
    };
    let mut wc = client.watch_client();
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(arrival + 1);
    let mut watch = Some(
        sh.call(deadline, "watch", wc.watch(sh.prefix.as_str(), Some(opts)))
            .await?,
    );
    let mut last_err: Option<Error> = None;
    loop {
        if Instant::now() >= deadline {
            return Err(last_err.unwrap_or_else(timeout));
        }
        let state = match sh.read(client, deadline).await {
            Ok(st) => {
                last_err = None;
                st
            }
            Err(e) => {
                last_err = Some(e);
                tokio::time::sleep(Duration::from_millis(100).min(left(deadline))).await;
                continue;
            }
        };
        let Some(me) = state.queue.iter().position(|q| q.key == qkey) else {
            return Err(err!(
                Unavailable,
                "volume {}: this process's request left the etcd queue without a grant \
                 (its session lapsed: etcd was out of reach for longer than the session's TTL)",
                sh.name
            ));
        };
        if state.first(sh.cap, None) == Some(me) {
            match sh
                .try_grant(
                    client,
                    &state,
                    lease,
                    session,
                    entry,
                    Some((qkey, arrival)),
                    deadline,
                )
                .await
            {
                Ok(token) => return Ok(Some(token)),
                Err(Fail::Raced) => continue,
                Err(Fail::LeaseGone) => {
                    *lease = sh.permit_lease(client, deadline).await?;
                    continue;
                }
                Err(Fail::Lapsed) => return Ok(None),
                Err(Fail::Err(e)) => return Err(e),
            }
        }
        // Wait for a change of the volume's keys.
        let w = match watch.as_mut() {
            Some(w) => w,
            None => {
                let opts = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(state.rev + 1);
                match sh
                    .call(deadline, "watch", wc.watch(sh.prefix.as_str(), Some(opts)))
                    .await
                {
                    Ok(w) => watch.insert(w),
                    Err(e) => {
                        last_err = Some(e);
                        tokio::time::sleep(Duration::from_millis(100).min(left(deadline))).await;
                        continue;
                    }
                }
            }
        };
        match tokio::time::timeout(left(deadline), w.message()).await {
            Err(_) => return Err(timeout()),
            Ok(Ok(Some(resp))) if !resp.canceled() => {}
            Ok(Ok(_)) => watch = None,
            Ok(Err(e)) => {
                watch = None;
                last_err = Some(err!(
                    Unavailable,
                    "volume {} on etcd {}: watch: {e}",
                    sh.name,
                    sh.urls.join(",")
                ));
                tokio::time::sleep(Duration::from_millis(100).min(left(deadline))).await;
            }
        }
    }
}

async fn status(sh: Arc<Shared>) -> Result<Status> {
    let deadline = Instant::now() + RPC_TIMEOUT;
    let client = sh.client(deadline).await?;
    let mut state = sh.read(&client, deadline).await?;
    if sh.reclaim(&client, &state, deadline).await? {
        state = sh.read(&client, deadline).await?;
    }
    let mut lc = client.lease_client();
    let mut holders = Vec::new();
    for h in &state.holders {
        // etcd tells the time left in whole seconds.
        let left_s = match sh
            .call(
                deadline,
                "lease time to live",
                lc.time_to_live(h.lease, None),
            )
            .await
        {
            Ok(r) => r.ttl().max(0) as u64,
            Err(_) => 0,
        };
        holders.push(Holding {
            instance: h.entry.instance.clone(),
            mode: h.entry.mode,
            path: h.entry.path.clone(),
            token: h.token,
            lease_left_ms: left_s * 1000,
        });
    }
    let mut lease_ms = sh.granted_ttl_ms.load(Ordering::Relaxed);
    if lease_ms == 0 {
        // Learn what etcd grants (the lease goes to the pool).
        let l = sh.permit_lease(&client, deadline).await?;
        lease_ms = l.ttl.as_millis() as u64;
        sh.pool_return(l);
    }
    Ok(Status {
        holders,
        queue: state
            .queue
            .iter()
            .map(|q| Waiting {
                instance: q.entry.instance.clone(),
                mode: q.entry.mode,
                path: q.entry.path.clone(),
            })
            .collect(),
        grants: state.grants.clone(),
        reclaimed: state.reclaimed.iter().map(|(_, r)| r.clone()).collect(),
        last_token: state.last_token,
        lease_ms,
    })
}

// ---------------------------------------------------------------------------
// A grant.

#[derive(Debug)]
struct GrantState {
    lease: Lease,
    released: bool,
    /// Lost for good (its lease ran out, or etcd was out of reach for the
    /// lease's whole length).
    fenced: bool,
}

struct GrantInner {
    shared: Arc<Shared>,
    token: u64,
    entry: Entry,
    state: Mutex<GrantState>,
    /// Held (shared) while a commit runs, (exclusive) by release.
    gate: RwLock<()>,
}

/// A permit granted by the etcd arbiter.
pub struct EtcdGrant(Arc<GrantInner>);

impl fmt::Debug for EtcdGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdGrant")
            .field("volume", &self.0.shared.name)
            .field("path", &self.0.entry.path)
            .field("token", &self.0.token)
            .finish_non_exhaustive()
    }
}

/// What a check of the permit in etcd found.
enum Check {
    /// Current: the lease was renewed by a keep-alive sent at this time.
    Current(Instant),
    /// Lost for good.
    Lost(String),
    /// etcd did not answer.
    Unreachable(String),
}

impl EtcdGrant {
    fn new(sh: &Arc<Shared>, lease: Lease, token: u64, entry: Entry) -> EtcdGrant {
        EtcdGrant(Arc::new(GrantInner {
            shared: Arc::clone(sh),
            token,
            entry,
            state: Mutex::new(GrantState {
                lease,
                released: false,
                fenced: false,
            }),
            gate: RwLock::new(()),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GrantState> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fenced(&self, why: &str) -> Error {
        err!(
            Fenced,
            "volume {}: permit {} for {} {}: {why}",
            self.0.shared.name,
            self.0.token,
            self.0.entry.mode,
            self.0.entry.path
        )
    }

    /// Checks in etcd that the permit is current, renewing its lease: a
    /// keep-alive of the lease and a read of the holder key, at once.
    fn check(&self, deadline: Instant) -> Result<Check> {
        let g = Arc::clone(&self.0);
        let lease = self.state().lease.id;
        let r = call(&self.0.shared, deadline, async move {
            let client = match g.shared.client(deadline).await {
                Ok(c) => c,
                Err(e) => return Check::Unreachable(e.message().to_owned()),
            };
            let mut kv = client.kv_client();
            let sent = Instant::now();
            let both = async {
                tokio::join!(
                    keep_alive(&client, &g.shared.urls, lease),
                    kv.get(g.shared.holder_key(lease), None)
                )
            };
            match tokio::time::timeout(left(deadline), both).await {
                Err(_) => Check::Unreachable("no answer in time".into()),
                Ok((Err(e), _)) if lease_not_found(&e) => {
                    Check::Lost("its lease ran out and etcd dropped it".into())
                }
                Ok((Err(e), _)) | Ok((_, Err(e))) => Check::Unreachable(e.to_string()),
                Ok((Ok(_), Ok(r))) => {
                    if r.kvs().first().map(|kv| kv.create_revision() as u64) == Some(g.token) {
                        Check::Current(sent)
                    } else {
                        Check::Lost("its holder key is gone from etcd".into())
                    }
                }
            }
        });
        match r {
            Err(e) if e.kind() == crate::ErrorKind::Unavailable => {
                Ok(Check::Unreachable(e.message().to_owned()))
            }
            r => r,
        }
    }

    /// Marks the permit lost for good, and records it as reclaimed (in the
    /// background).
    fn lose(&self, why: &str) -> Error {
        self.state().fenced = true;
        let g = Arc::clone(&self.0);
        let lease = self.state().lease.id;
        self.0.shared.background(move |client| async move {
            let sh = &g.shared;
            let key = sh.shadow_key(lease).into_bytes();
            let _ = sh
                .record_reclaimed(
                    &client,
                    &key,
                    g.token,
                    &g.entry,
                    ReclaimReason::Expired,
                    Instant::now() + RPC_TIMEOUT,
                )
                .await;
        });
        self.fenced(why)
    }

    /// The outcome of a check that could not reach etcd: `Unavailable`
    /// while the lease may still be alive, `Fenced` once it cannot be.
    fn unreachable(&self, why: &str) -> Error {
        let l = self.state().lease;
        let until = l.confirmed + l.ttl;
        let now = Instant::now();
        if now >= until {
            self.state().fenced = true;
            return self.fenced(&format!(
                "etcd could not be reached ({why}) for the lease's whole length: \
                 the permit is lost"
            ));
        }
        err!(
            Unavailable,
            "volume {}: permit {}: etcd could not be reached ({why}); its lease may still \
             be held for up to {} ms",
            self.0.shared.name,
            self.0.token,
            (until - now).as_millis()
        )
    }

    fn usable(&self) -> Result<Lease> {
        let st = self.state();
        if st.released {
            return Err(self.fenced("released"));
        }
        if st.fenced {
            return Err(self.fenced("lost earlier"));
        }
        Ok(st.lease)
    }
}

impl Grant for EtcdGrant {
    fn token(&self) -> u64 {
        self.0.token
    }

    fn lease(&self) -> Duration {
        self.state().lease.ttl
    }

    fn renew(&self) -> Result<()> {
        let l = self.usable()?;
        let until = l.confirmed + l.ttl;
        if Instant::now() >= until {
            return Err(self.lose("its lease ran out before this renewal"));
        }
        match self.check(until.min(Instant::now() + RPC_TIMEOUT))? {
            Check::Current(sent) => {
                let mut st = self.state();
                st.lease.confirmed = st.lease.confirmed.max(sent);
                Ok(())
            }
            Check::Lost(why) => Err(self.lose(&why)),
            Check::Unreachable(why) => Err(self.unreachable(&why)),
        }
    }

    fn commit(&self, commit: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let _gate = self.0.gate.read().unwrap_or_else(|e| e.into_inner());
        let l = self.usable()?;
        let until = l.confirmed + l.ttl;
        if Instant::now() >= until {
            return Err(self.lose("its lease ran out before the commit"));
        }
        let sent = match self.check(until.min(Instant::now() + RPC_TIMEOUT))? {
            Check::Current(sent) => sent,
            Check::Lost(why) => return Err(self.lose(&why)),
            Check::Unreachable(why) => return Err(self.unreachable(&why)),
        };
        let ttl = {
            let mut st = self.state();
            st.lease.confirmed = st.lease.confirmed.max(sent);
            st.lease.ttl
        };
        // The lease lives until at least sent + ttl: run the commit only if
        // it has COMMIT_MARGIN left to finish in.
        let began = Instant::now();
        if began + COMMIT_MARGIN >= sent + ttl {
            return Err(err!(
                Unavailable,
                "volume {}: permit {}: etcd took {} ms to confirm it, too long to commit \
                 safely within its {} ms lease",
                self.0.shared.name,
                self.0.token,
                (began - sent).as_millis(),
                ttl.as_millis()
            ));
        }
        let r = commit();
        let took = began.elapsed();
        if took >= COMMIT_MARGIN {
            crate::log::warn!(
                volume = %self.0.shared.name,
                token = self.0.token,
                took_ms = took.as_millis(),
                "etcd permit: a commit took longer than the safety margin"
            );
        }
        r
    }

    fn release(&self) {
        let lease = {
            let mut st = self.state();
            if st.released {
                return;
            }
            st.released = true;
            st.lease
        };
        let _gate = self.0.gate.write().unwrap_or_else(|e| e.into_inner());
        let g = Arc::clone(&self.0);
        let deadline = Instant::now() + RPC_TIMEOUT;
        let r = call(&self.0.shared, deadline, async move {
            let sh = &g.shared;
            let client = sh.client(deadline).await?;
            let holder = sh.holder_key(lease.id);
            let shadow = sh.shadow_key(lease.id);
            // Holder and shadow: one range. Read the volume back only if
            // others use it (their changes are what a next request would
            // need); else the view is this process's, less this permit.
            let cached = sh.cached();
            let quiet = cached.as_ref().is_some_and(|v| v.quiet_for(&sh.me));
            let mut then = vec![TxnOp::delete(
                holder.as_str(),
                Some(DeleteOptions::new().with_prefix()),
            )];
            if !quiet {
                then.push(sh.get_all());
            }
            let txn = Txn::new()
                .when([Compare::create_revision(
                    holder.as_str(),
                    CompareOp::Equal,
                    g.token as i64,
                )])
                .and_then(then);
            let mut kv = client.kv_client();
            match sh.call(deadline, "release", kv.txn(txn)).await {
                Ok(r) if r.succeeded() => {
                    match cached {
                        Some(v) if quiet => sh.remember(&Arc::new(v.after_release(lease.id))),
                        _ => sh.remember_txn(&r),
                    }
                    sh.pool_return(lease);
                }
                Ok(_) => {
                    // Its lease ran out: record it as reclaimed.
                    sh.record_reclaimed(
                        &client,
                        shadow.as_bytes(),
                        g.token,
                        &g.entry,
                        ReclaimReason::Expired,
                        deadline,
                    )
                    .await?;
                }
                Err(e) => {
                    sh.forget(lease);
                    return Err(e);
                }
            }
            Ok(())
        });
        if let Err(e) | Ok(Err(e)) = r {
            crate::log::warn!(
                volume = %self.0.shared.name,
                token = self.0.token,
                "etcd permit release: {e} (the permit ends when its lease runs out)"
            );
        }
    }
}

impl Drop for EtcdGrant {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(pid: u32) -> Instance {
        Instance {
            host: "h".into(),
            pid,
            start: 7,
        }
    }

    #[test]
    fn entries_round_trip_and_refuse_garbage() {
        let e = Entry {
            instance: inst(3),
            mode: Mode::Write,
            path: "a/b c".into(),
            tag: 12,
            reason: Some(ReclaimReason::Dead),
        };
        assert_eq!(Entry::decode(e.encode().as_bytes(), false).unwrap(), e);
        let i = Entry::decode(instance_record(&inst(4)).as_bytes(), true).unwrap();
        assert_eq!(i.instance, inst(4));
        let good = e.encode();
        for bad in [
            String::new(),
            good.replace("mtipc-permit 1", "mtipc-permit 2"),
            good.replace("mode write", "mode all"),
            good.replace("pid 3", "pid 99999999999"),
            good.replace("tag 12", "tag -1"),
            good.replace("path a/b c", "path /etc/passwd"),
            good.replace("path a/b c", "path ../x"),
            good.replace("reason dead", "reason bored"),
            format!("{good}pid 4\n"),
            format!("{good}colour blue\n"),
            good.replace("host h\n", ""),
        ] {
            assert!(Entry::decode(bad.as_bytes(), false).is_err(), "{bad:?}");
        }
        assert!(Entry::decode(&[0xff, 0xfe], false).is_err());
        assert!(Entry::decode(&vec![b'a'; 9000], false).is_err());
    }

    #[test]
    fn pass_follows_the_rule() {
        use Mode::{Read as R, Write as W};
        // A write blocks the same path; reads share; other paths pass.
        assert_eq!(pass(&[(W, "a")], &[(R, "a"), (W, "b")], 0), vec![1]);
        assert_eq!(
            pass(&[(R, "a")], &[(R, "a"), (W, "a"), (R, "a")], 0),
            vec![0]
        );
        // An earlier waiting request blocks a later conflicting one.
        assert_eq!(
            pass(&[(R, "a")], &[(W, "a"), (R, "a"), (W, "b")], 0),
            vec![2]
        );
        // The cap stops the pass.
        assert_eq!(pass(&[(W, "x")], &[(W, "a"), (W, "b")], 2), vec![0]);
        assert_eq!(
            pass(&[(W, "x"), (W, "y")], &[(W, "a")], 2),
            Vec::<usize>::new()
        );
        // A conflicting one before the cap is skipped, not a stop.
        assert_eq!(pass(&[(W, "a")], &[(W, "a"), (W, "b")], 2), vec![1]);
    }

    fn queued(pid: u32, tag: u64, arrival: i64, path: &str) -> Queued {
        Queued {
            key: format!("q/{pid}/{arrival}").into_bytes(),
            entry: Entry {
                instance: inst(pid),
                mode: Mode::Write,
                path: path.into(),
                tag,
                reason: None,
            },
            arrival,
        }
    }

    #[test]
    fn views_after_a_grant_and_a_release() {
        let me = inst(1);
        let mut st = State {
            rev: 10,
            vtime: 4,
            queue: vec![queued(1, 5, 9, "f"), queued(2, 5, 10, "g")],
            grants: vec![(inst(2), 3)],
            ..State::default()
        };
        st.holders.push(Held {
            entry: st.queue[1].entry.clone(),
            lease: 7,
            token: 8,
        });
        assert!(!st.quiet_for(&me));
        let entry = st.queue[0].entry.clone();
        let key = st.queue[0].key.clone();
        let g = st.after_grant(12, 0x2a, &entry, b"h/2a.shadow".to_vec(), Some(&key), &me);
        assert_eq!((g.rev, g.vtime, g.last_token), (12, 5, 12));
        assert_eq!(g.queue.len(), 1);
        assert_eq!(g.queue[0].entry.instance, inst(2));
        let h = g.holders.iter().find(|h| h.lease == 0x2a).unwrap();
        assert_eq!((h.token, &h.entry), (12, &entry));
        assert_eq!(g.orphans().count(), 0, "its shadow has its holder");
        assert_eq!(g.grants, vec![(inst(2), 3), (me.clone(), 1)]);
        let r = g.after_release(0x2a);
        assert_eq!(r.rev, 12, "a release keeps the view's revision");
        assert_eq!(r.holders.len(), 1);
        assert!(r.shadows.is_empty());
        // Only this instance's permits, nothing queued: quiet.
        let mut q = r.clone();
        q.queue.clear();
        q.holders.clear();
        assert!(q.quiet_for(&me));
        q.holders.push(h.clone());
        assert!(q.quiet_for(&me));
        assert!(!q.quiet_for(&inst(2)));
    }

    #[test]
    fn fair_order_puts_a_second_request_after_others_first() {
        // Instance 1 queued three requests (tags 1, 2, 3); instances 2 and
        // 3 one each, later (tag 1).
        let mut st = State {
            vtime: 0,
            queue: vec![
                queued(1, 1, 10, "f"),
                queued(1, 2, 11, "f"),
                queued(1, 3, 12, "f"),
                queued(2, 1, 13, "f"),
                queued(3, 1, 14, "f"),
            ],
            ..State::default()
        };
        st.queue
            .sort_by_key(|q| (q.entry.tag, q.arrival, q.key.clone()));
        let order: Vec<u32> = st.queue.iter().map(|q| q.entry.instance.pid).collect();
        assert_eq!(order, vec![1, 2, 3, 1, 1]);
        assert_eq!(st.next_tag(&inst(1)), 4);
        assert_eq!(st.next_tag(&inst(9)), 1);
        assert_eq!(st.first(0, None), Some(0));
        // A newcomer of tag 1 comes after the queued tag-1 requests.
        assert_eq!(st.first(0, Some((Mode::Write, "g", 1))), Some(0));
        st.holders.push(Held {
            entry: st.queue[0].entry.clone(),
            lease: 1,
            token: 20,
        });
        st.queue.remove(0);
        st.vtime = 1;
        // f is held: nothing queued on f can go; a newcomer on g can.
        assert_eq!(st.first(0, None), None);
        assert_eq!(
            st.first(0, Some((Mode::Write, "g", 2))),
            Some(st.queue.len())
        );
    }
}
