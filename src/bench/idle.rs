//! `cinder bench idle`: relay memory per idle authenticated connection.
//!
//! A handful of users are registered, then `connections` WebSockets are opened, each answering
//! its own login challenge with a real signature (a device may hold several connections), and
//! left idle. The relay's resident memory (`VmRSS` of its process) is read after a warm-up
//! batch of connections has settled and again once every connection has been authenticated and
//! idle for a while; the difference divided by the number of connections is the figure, against
//! a target of 16 KB (16,000 bytes). Kernel socket buffers are not part of a process's RSS and
//! are not counted.
//!
//! Before anything is opened the open-file soft limit is raised to the hard limit; a relay this
//! scenario starts inherits it. Connection attempts are bounded (two per connection, a fixed
//! number in flight at once) and failures are reported rather than retried forever.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::{self, Identity, LoadError, Relay, RelayTarget, Ws, opt, verdict};

/// The target: bytes of relay RSS per idle authenticated connection.
pub const TARGET_BYTES: f64 = 16_000.0;

/// Options of `cinder bench idle`.
#[derive(Clone, Debug)]
pub struct Options {
    /// Idle connections to measure.
    pub connections: usize,
    /// Connections opened (and kept) before the first reading, to warm allocator pools.
    pub warmup_connections: usize,
    /// Users whose devices the connections log in as (round robin).
    pub users: usize,
    /// How long connections sit idle before each reading.
    pub settle: Duration,
    /// Connection handshakes in flight at once.
    pub concurrency: usize,
    /// The relay to measure.
    pub relay: RelayTarget,
}

impl Options {
    /// The defaults: 10,000 connections over 4 users, 100 warm-up connections, 2 s settle.
    pub fn new(relay: RelayTarget) -> Self {
        Self {
            connections: 10_000,
            warmup_connections: 100,
            users: 4,
            settle: Duration::from_secs(2),
            concurrency: 64,
            relay,
        }
    }
}

/// The figures of one run.
#[derive(Serialize, Debug, Clone)]
pub struct Report {
    /// Always "idle".
    pub scenario: &'static str,
    /// "spawned" (a child process) or "external".
    pub relay: &'static str,
    /// Connections asked for.
    pub connections_requested: usize,
    /// Connections authenticated and idle at the second reading.
    pub connections_open: usize,
    /// Connections that failed twice.
    pub failures: usize,
    /// The first failure's reason.
    pub first_failure: Option<String>,
    /// Wall time to open and authenticate them, seconds.
    pub open_s: f64,
    /// Connections authenticated per second.
    pub opens_per_sec: f64,
    /// Relay RSS before (after the warm-up connections settled), KiB.
    pub relay_rss_before_kib: Option<u64>,
    /// Relay RSS with every connection idle, KiB.
    pub relay_rss_after_kib: Option<u64>,
    /// Relay peak RSS, KiB.
    pub relay_peak_rss_kib: Option<u64>,
    /// `(after - before) / connections_open`, bytes.
    pub bytes_per_connection: Option<f64>,
    /// The same in KB (1,000 bytes).
    pub kb_per_connection: Option<f64>,
    /// The same in KiB (1,024 bytes).
    pub kib_per_connection: Option<f64>,
    /// The target, bytes per connection.
    pub target_bytes: f64,
    /// Whether `bytes_per_connection` is within the target.
    pub target_met: Option<bool>,
    /// The relay's open-file soft limit, when known.
    pub relay_open_files_limit: Option<u64>,
    /// This process's open-file soft limit after raising it.
    pub client_open_files_limit: Option<u64>,
    /// The machine's 1-minute load average just before the run.
    pub load_average_before: Option<f64>,
    /// Anything that may have distorted the figures.
    pub notes: Vec<String>,
}

/// Opens `n` authenticated connections, `concurrency` handshakes at a time, two attempts each.
async fn open_many(
    url: &str,
    ids: &Arc<Vec<Identity>>,
    n: usize,
    concurrency: usize,
) -> (Vec<Ws>, usize, Option<String>) {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    let mut open = Vec::with_capacity(n);
    let mut failures = 0;
    let mut first = None;
    let mut take = |r: Result<Result<Ws, LoadError>, tokio::task::JoinError>,
                    open: &mut Vec<Ws>| match r {
        Ok(Ok(ws)) => open.push(ws),
        Ok(Err(e)) => {
            failures += 1;
            first.get_or_insert_with(|| e.to_string());
        }
        Err(e) => {
            failures += 1;
            first.get_or_insert_with(|| e.to_string());
        }
    };
    for i in 0..n {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let url = url.to_owned();
        let ids = ids.clone();
        set.spawn(async move {
            let _permit = permit;
            let id = &ids[i % ids.len()];
            let mut last = LoadError::Protocol("no attempt".into());
            for _ in 0..2 {
                match client::login(&url, id, client::idle_config()).await {
                    Ok(ws) => return Ok(ws),
                    Err(e) => last = e,
                }
            }
            Err(last)
        });
        // Collect finished ones as we go so results do not pile up in the set.
        while let Some(r) = set.try_join_next() {
            take(r, &mut open);
        }
    }
    while let Some(r) = set.join_next().await {
        take(r, &mut open);
    }
    (open, failures, first)
}

/// Runs the scenario.
///
/// # Errors
/// [`LoadError`] if the relay cannot be started or refuses the set-up registrations; failed
/// idle connections are counted in the report instead.
pub async fn run(opts: &Options) -> Result<Report, LoadError> {
    if opts.connections == 0 || opts.users == 0 {
        return Err(LoadError::Usage(
            "--connections and the number of users must be at least 1".into(),
        ));
    }
    let extra = match opts.relay {
        RelayTarget::Spawn { .. } => vec![
            "--max-connections".to_owned(),
            (opts.connections + opts.warmup_connections + opts.users + 64).to_string(),
        ],
        RelayTarget::External { .. } => Vec::new(),
    };
    client::with_relay(&opts.relay, &extra, async |relay, open_files| {
        measure(relay, opts, open_files).await
    })
    .await
    .map(|(r, load_average_before)| Report {
        load_average_before,
        ..r
    })
}

async fn measure(
    relay: &Relay,
    opts: &Options,
    client_limit: Option<(u64, u64)>,
) -> Result<Report, LoadError> {
    let mut notes = Vec::new();
    let needed = (opts.connections + opts.warmup_connections + 64) as u64;
    if let Some((soft, _)) = client_limit
        && soft < needed
    {
        notes.push(format!(
            "this process may open only {soft} files; {needed} are needed, so some connections will fail"
        ));
    }
    let relay_limit = relay.pid.and_then(client::open_files_limit);
    if let Some((soft, _)) = relay_limit
        && soft < needed
    {
        notes.push(format!(
            "the relay may open only {soft} files; {needed} are needed, so some connections will fail"
        ));
    }
    if relay.pid.is_none() {
        notes.push("no relay process id: memory cannot be read (give --relay-pid)".into());
    }

    let prefix = client::run_prefix()?;
    let (admin, invites) = client::admin_invites(relay, &prefix, opts.users - 1).await?;
    let mut ids = vec![admin];
    for (i, invite) in invites.iter().enumerate() {
        let id = Identity::generate(&format!("{prefix}-u{i}"))?;
        let (mut ws, _) =
            client::register(&relay.url, &id, invite, 0, 0, client::busy_config()).await?;
        let _ = ws.close(None).await;
        ids.push(id);
    }
    let ids = Arc::new(ids);

    let (warm, warm_failures, warm_first) =
        open_many(&relay.url, &ids, opts.warmup_connections, opts.concurrency).await;
    if warm_failures > 0 {
        notes.push(format!(
            "{warm_failures} warm-up connections failed: {}",
            warm_first.unwrap_or_default()
        ));
    }
    tokio::time::sleep(opts.settle).await;
    let before = relay.pid.and_then(client::process_memory_kib);

    let t = Instant::now();
    let (open, failures, first_failure) =
        open_many(&relay.url, &ids, opts.connections, opts.concurrency).await;
    let open_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(opts.settle).await;
    let after = relay.pid.and_then(client::process_memory_kib);

    let n = open.len();
    let bytes = match (before, after) {
        (Some((b, _)), Some((a, _))) if n > 0 => Some((a as f64 - b as f64) * 1024.0 / n as f64),
        _ => None,
    };
    drop(open);
    drop(warm);
    Ok(Report {
        scenario: "idle",
        relay: opts.relay.kind(),
        connections_requested: opts.connections,
        connections_open: n,
        failures,
        first_failure,
        open_s,
        opens_per_sec: n as f64 / open_s.max(1e-9),
        relay_rss_before_kib: before.map(|m| m.0),
        relay_rss_after_kib: after.map(|m| m.0),
        relay_peak_rss_kib: after.map(|m| m.1),
        bytes_per_connection: bytes,
        kb_per_connection: bytes.map(|b| b / 1000.0),
        kib_per_connection: bytes.map(|b| b / 1024.0),
        target_bytes: TARGET_BYTES,
        target_met: bytes.map(|b| b <= TARGET_BYTES && failures == 0),
        relay_open_files_limit: relay_limit.map(|l| l.0),
        client_open_files_limit: client_limit.map(|l| l.0),
        load_average_before: None,
        notes,
    })
}

/// Prints the report as a table.
///
/// # Errors
/// I/O errors of `out`.
pub fn print(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "cinder bench idle ({} relay)", r.relay)?;
    writeln!(
        out,
        "  idle authenticated connections {:>8} of {} ({} failed)",
        r.connections_open, r.connections_requested, r.failures
    )?;
    writeln!(
        out,
        "  time to open                   {:>8.2} s ({:.0} per second)",
        r.open_s, r.opens_per_sec
    )?;
    let kib = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |k| format!("{k}"));
    writeln!(
        out,
        "  relay RSS before / after       {} / {} KiB (peak {} KiB)",
        kib(r.relay_rss_before_kib),
        kib(r.relay_rss_after_kib),
        kib(r.relay_peak_rss_kib)
    )?;
    writeln!(
        out,
        "  relay memory per connection    {:>8} bytes = {} KB = {} KiB",
        opt(r.bytes_per_connection, 0),
        opt(r.kb_per_connection, 2),
        opt(r.kib_per_connection, 2)
    )?;
    let v = r
        .target_met
        .map_or("not measured (no relay process id)", verdict);
    writeln!(out, "  target <= 16 KB (16,000 bytes) {v}")?;
    writeln!(
        out,
        "  open-file limits               relay {}, this process {}",
        kib(r.relay_open_files_limit),
        kib(r.client_open_files_limit)
    )?;
    writeln!(
        out,
        "  load average before the run    {}",
        opt(r.load_average_before, 2)
    )?;
    if let Some(f) = &r.first_failure {
        writeln!(out, "  first failure                  {f}")?;
    }
    for n in &r.notes {
        writeln!(out, "  note: {n}")?;
    }
    Ok(())
}
