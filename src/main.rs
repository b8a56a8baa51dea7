//! The `cinder` binary: parses arguments, sets up logging and config, and calls one command
//! function. Everything else lives in the library (`src/lib.rs`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use cinder::cli::{self, commands, passphrase::Sources};
use cinder::{bench, config, logging};

/// Cinder: an end-to-end encrypted team messenger for the terminal.
#[derive(Parser, Debug)]
#[command(name = "cinder", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Profile name, or a directory if it contains '/' (default: $CINDER_PROFILE or "default").
    #[arg(long, global = true)]
    profile: Option<String>,
    /// Configuration file (default: $XDG_CONFIG_HOME/cinder/config.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Write logs to files (the profile's logs/ directory, or DATA/logs for `serve`).
    #[arg(long, global = true)]
    logging: bool,
    /// Log level or filter, e.g. info or cinder=debug (implies --logging).
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Read the cache passphrase from this file.
    #[arg(long, global = true)]
    passphrase_file: Option<PathBuf>,
    /// Run this shell command and use its output as the cache passphrase.
    #[arg(long, global = true)]
    passphrase_command: Option<String>,
    /// Print timing figures (key derivation, command) to stderr.
    #[arg(long, global = true)]
    timings: bool,
    /// What to do (default: chat).
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The terminal UI (also what `cinder` alone runs).
    Chat,
    /// A throwaway demo: embedded relay, demo network and users who talk back; opens the UI.
    Demo {
        /// Keep the temporary directory (relay data and profiles) after the UI closes.
        #[arg(long)]
        keep: bool,
    },
    /// Run the relay server.
    Serve(ServeArgs),
    /// Create an account on a relay with an invite code.
    Register(RegisterArgs),
    /// Send a message ('-' reads it from stdin).
    Send(SendArgs),
    /// Print new messages.
    Recv(RecvArgs),
    /// Print the stored history of a conversation.
    History(HistoryArgs),
    /// Rooms and group DMs: create, invite, remove, promote, demote, leave, delete, list.
    Room {
        #[command(subcommand)]
        command: RoomCmd,
    },
    /// Show or set a conversation's message timer defaults.
    Timer(TimerArgs),
    /// Network administration (admin accounts).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Manage the cache passphrase.
    Passphrase {
        #[command(subcommand)]
        command: PassphraseCommand,
    },
    /// Run a benchmark scenario and print its figures.
    Bench {
        #[command(subcommand)]
        scenario: BenchScenario,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:7878 or 0.0.0.0:443.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Directory for the relay's database and keys (created 0700).
    #[arg(long)]
    data: PathBuf,
    /// Network name shown to users (first start only).
    #[arg(long)]
    network_name: Option<String>,
    /// TLS certificate chain (PEM); serves wss:// with --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Most simultaneous connections.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Largest frame in bytes.
    #[arg(long, default_value_t = cinder::protocol::DEFAULT_MAX_FRAME)]
    max_frame: usize,
    /// Requests per second allowed per device (burst is twice this).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Most members of a room or group DM.
    #[arg(long, default_value_t = cinder::relay::DEFAULT_MAX_ROOM_MEMBERS)]
    max_room_members: u32,
    /// Longest expiry timer on this network, e.g. 30d or 1y (any duration, whole seconds);
    /// replaces the stored policy's value (default 1y).
    #[arg(long, value_name = "DUR")]
    max_expire: Option<String>,
    /// Longest burn-on-read timer on this network, e.g. 1d; replaces the stored policy's value
    /// (default 1y).
    #[arg(long, value_name = "DUR")]
    max_burn: Option<String>,
}

#[derive(Args, Debug)]
struct RegisterArgs {
    /// Relay URL: wss://host[:port] (or ws:// to loopback).
    #[arg(long)]
    server: String,
    /// Invite code from your network admin.
    #[arg(long)]
    invite: String,
    /// Username (permanent): letters, digits, '.', '-', '_'.
    #[arg(long)]
    username: String,
    /// Display name.
    #[arg(long)]
    display_name: Option<String>,
    /// Allow unencrypted ws:// to a non-loopback host.
    #[arg(long)]
    insecure_ws: bool,
    /// Extra CA certificate (PEM) to trust for a wss:// relay.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// FOR TESTS ONLY: derive the cache key with Argon2id at 64 KiB instead of 256 MiB.
    #[arg(long)]
    insecure_fast_kdf: bool,
}

#[derive(Args, Debug)]
struct SendArgs {
    /// Recipient username (a direct message).
    #[arg(long, conflicts_with = "room", required_unless_present = "room")]
    to: Option<String>,
    /// A room or group DM: its id, a unique id prefix, or its title.
    #[arg(long)]
    room: Option<String>,
    /// Expiration timer, counted from sending (30s, 5m, 2h, 1d, 1w, 1y).
    #[arg(long, value_name = "DUR")]
    expire: Option<String>,
    /// Burn-on-read timer, counted from the recipient's first display (never longer than the
    /// expiration).
    #[arg(long, value_name = "DUR")]
    burn: Option<String>,
    /// The message, or '-' to read it from stdin.
    text: String,
}

#[derive(Args, Debug)]
struct TimerArgs {
    /// The direct conversation with this user.
    #[arg(long, conflicts_with = "room", required_unless_present = "room")]
    with: Option<String>,
    /// A room or group DM (moderators set room defaults for everyone).
    #[arg(long)]
    room: Option<String>,
    /// Default expiration for new messages ('off' to clear).
    #[arg(long, value_name = "DUR")]
    expire: Option<String>,
    /// Default burn-on-read for new messages ('off' to clear).
    #[arg(long, value_name = "DUR")]
    burn: Option<String>,
}

#[derive(Subcommand, Debug)]
enum RoomCmd {
    /// Create a room (you become its moderator) or, with --group, a group DM.
    Create {
        /// The room's title.
        name: String,
        /// The room's description (topic).
        #[arg(long, default_value = "")]
        description: String,
        /// Initial members, comma-separated.
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
        /// A group DM (no moderators; anyone can add members) instead of a room.
        #[arg(long)]
        group: bool,
    },
    /// Add members (moderators; anyone in a group DM).
    Invite {
        /// Room id, id prefix or title.
        room: String,
        /// Users to add.
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Remove members (moderators).
    Remove {
        /// Room id, id prefix or title.
        room: String,
        /// Users to remove.
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Make a member a moderator (moderators).
    Promote {
        /// Room id, id prefix or title.
        room: String,
        /// The member.
        user: String,
    },
    /// Make a moderator a member (moderators).
    Demote {
        /// Room id, id prefix or title.
        room: String,
        /// The moderator.
        user: String,
    },
    /// Change the title or description (moderators).
    Edit {
        /// Room id, id prefix or title.
        room: String,
        /// New title.
        #[arg(long)]
        title: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Leave a room or group DM.
    Leave {
        /// Room id, id prefix or title.
        room: String,
    },
    /// Delete a room for everyone (moderators).
    Delete {
        /// Room id, id prefix or title.
        room: String,
    },
    /// List your rooms and group DMs.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List a room's members and roles.
    Members {
        /// Room id, id prefix or title.
        room: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct RecvArgs {
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Keep printing messages as they arrive (reconnecting as needed).
    #[arg(long)]
    follow: bool,
    /// Wait this long for messages (e.g. 30s, 1h30m, 2days; a bare number is seconds).
    #[arg(long, value_name = "DUR", value_parser = cinder::config::parse_duration)]
    timeout: Option<Duration>,
}

#[derive(Args, Debug)]
struct HistoryArgs {
    /// The other user of the direct conversation.
    #[arg(long, conflicts_with = "room", required_unless_present = "room")]
    with: Option<String>,
    /// A room or group DM: its id, a unique id prefix, or its title.
    #[arg(long)]
    room: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Most recent messages to show.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Create an invite code (printed alone on the last line).
    Invite {
        /// Who the invite is for.
        #[arg(long)]
        email: String,
        /// Make the invited account a network admin.
        #[arg(long)]
        admin: bool,
    },
    /// Show the network policy, or change it.
    Policy {
        #[command(subcommand)]
        change: Option<PolicyCmd>,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    /// Turn read receipts on or off for the whole network.
    ReadReceipts {
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

#[derive(Subcommand, Debug)]
enum PassphraseCommand {
    /// Change the cache passphrase (re-wraps the key; the data is not re-encrypted).
    Change {
        /// Read the new passphrase from this file (else $CINDER_NEW_PASSPHRASE or a prompt).
        #[arg(long)]
        new_passphrase_file: Option<PathBuf>,
        /// Run this command for the new passphrase.
        #[arg(long)]
        new_passphrase_command: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum BenchScenario {
    /// Costs of the crypto core: envelope, ratchet, room send and rotation, file encryption.
    Crypto(CryptoArgs),
    /// Direct-message load through a relay, end to end: latency, throughput, relay CPU and RSS.
    Dm(DmArgs),
    /// Relay memory per idle authenticated connection.
    Idle(IdleArgs),
    /// A large room through a relay: send cost, fan-out at saturation, latency to the last
    /// member, sender-key rotation after a removal.
    Room(bench::room::Args),
    /// Full-text search, paging and the conversation list over a large encrypted cache.
    Search(SearchArgs),
    /// UI frame time for a conversation of many messages at 80x24, 200x50 and 300x80.
    Render(RenderArgs),
    /// Start to first drawn frame over a large cache (key derivation reported separately).
    Startup(StartupArgs),
}

#[derive(Args, Debug)]
struct RenderArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Messages in the conversation.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Frames per terminal size.
    #[arg(long, default_value_t = 300)]
    frames: usize,
}

#[derive(Args, Debug)]
struct StartupArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Messages in the cache.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Reuse (or create) the cache in this directory instead of a temporary one.
    #[arg(long)]
    cache: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct SearchArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Messages to fill the cache with (ignored when --cache holds one already).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    messages: u64,
    /// Conversations to spread them over.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    conversations: u32,
    /// Searches to time.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    queries: u32,
    /// Keep the fixture cache in DIR and reuse it on later runs (default: a temporary one).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct DmArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Sender/recipient pairs, one connection per user [default: 50; 200 with --saturate].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4_900))]
    pairs: Option<u32>,
    /// Offered load across all pairs, messages per second (open loop).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rate: u32,
    /// Measured time (e.g. 30s, 5m, 1m30s; a bare number is seconds).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = cinder::config::parse_duration)]
    duration: Duration,
    /// Unmeasured load before the measured time.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = cinder::config::parse_duration)]
    warmup: Duration,
    /// Longest wait for messages still in flight after the measured time.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = cinder::config::parse_duration)]
    drain: Duration,
    /// Measure capacity: a closed loop with --window messages in flight per pair; reports
    /// delivered msgs/s against the 10,000 msgs/s target.
    #[arg(long)]
    saturate: bool,
    /// Messages in flight per pair with --saturate.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    window: u32,
    /// Load a running relay at this loopback URL instead of starting one.
    #[arg(long, requires = "invite")]
    relay: Option<String>,
    /// An unused admin invite of the relay given with --relay.
    #[arg(long, requires = "relay")]
    invite: Option<String>,
    /// Process id of the relay given with --relay, for its CPU and memory figures.
    #[arg(long, requires = "relay")]
    relay_pid: Option<u32>,
}

#[derive(Args, Debug)]
struct IdleArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Idle authenticated connections to open.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    connections: u32,
    /// Load a running relay at this loopback URL instead of starting one.
    #[arg(long, requires = "invite")]
    relay: Option<String>,
    /// An unused admin invite of the relay given with --relay.
    #[arg(long, requires = "relay")]
    invite: Option<String>,
    /// Process id of the relay given with --relay, for its memory figures.
    #[arg(long, requires = "relay")]
    relay_pid: Option<u32>,
}

#[derive(Args, Debug)]
struct CryptoArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Members of the large room (send cost and rotation).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    members: u32,
    /// Devices per member.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    devices_per_member: u32,
    /// In-memory size for the C2SP versus raw AES-GCM comparison (e.g. 64M).
    #[arg(long, default_value = "64M")]
    buffer_size: String,
    /// Bytes streamed through encrypt -> pipe -> decrypt (e.g. 5G for the 5 GB-class run).
    #[arg(long, default_value = "1G")]
    stream_size: String,
    /// Time budget per micro-benchmark, in milliseconds.
    #[arg(long, default_value_t = 700)]
    budget_ms: u64,
}

fn run_crypto_bench(args: &CryptoArgs) -> anyhow::Result<()> {
    let opts = bench::crypto::Options {
        members: args.members as usize,
        devices_per_member: args.devices_per_member as usize,
        buffer_size: bench::parse_size(&args.buffer_size)?,
        stream_size: bench::parse_size(&args.stream_size)?,
        budget: Duration::from_millis(args.budget_ms),
    };
    let report = bench::crypto::run(&opts)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        bench::crypto::print(&report, &mut out)?;
    }
    Ok(())
}

fn bench_target(
    relay: Option<&String>,
    invite: Option<&String>,
    pid: Option<u32>,
) -> anyhow::Result<bench::client::RelayTarget> {
    Ok(match relay {
        Some(url) => bench::client::RelayTarget::External {
            url: url.clone(),
            invite: invite.cloned().unwrap_or_default(),
            pid,
        },
        None => bench::client::RelayTarget::Spawn {
            exe: std::env::current_exe()?,
        },
    })
}

/// Usage problems found by a scenario keep the usage exit code.
fn load_error(e: bench::client::LoadError) -> anyhow::Error {
    match e {
        bench::client::LoadError::Usage(m) => cli::UsageError(m).into(),
        other => other.into(),
    }
}

async fn run_dm_bench(a: &DmArgs) -> anyhow::Result<()> {
    let mut o = bench::dm::Options::new(bench_target(
        a.relay.as_ref(),
        a.invite.as_ref(),
        a.relay_pid,
    )?);
    o.pairs = a
        .pairs
        .map_or(if a.saturate { 200 } else { 50 }, |p| p as usize);
    o.rate = f64::from(a.rate);
    o.duration = a.duration;
    o.warmup = a.warmup;
    o.drain = a.drain;
    o.saturate = a.saturate;
    o.window = a.window as usize;
    let report = bench::dm::run(&o).await.map_err(load_error)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        bench::dm::print(&report, &mut out)?;
    }
    Ok(())
}

fn run_search_bench(a: &SearchArgs) -> anyhow::Result<()> {
    let o = bench::search::Options {
        messages: usize::try_from(a.messages)?,
        conversations: a.conversations as usize,
        queries: a.queries as usize,
        cache: a.cache.clone(),
        ..bench::search::Options::default()
    };
    let report = bench::search::run(&o)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        bench::search::print(&report, &mut out)?;
    }
    Ok(())
}

async fn run_idle_bench(a: &IdleArgs) -> anyhow::Result<()> {
    let mut o = bench::idle::Options::new(bench_target(
        a.relay.as_ref(),
        a.invite.as_ref(),
        a.relay_pid,
    )?);
    o.connections = a.connections as usize;
    let report = bench::idle::run(&o).await.map_err(load_error)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        bench::idle::print(&report, &mut out)?;
    }
    Ok(())
}

fn client_context(cli: &Cli) -> anyhow::Result<commands::Context> {
    let paths = config::Paths::from_env()?;
    let config = config::Config::load(cli.config.as_deref(), &paths)?;
    let profile_dir = config::profile_dir(&paths, cli.profile.as_deref())?;
    Ok(commands::Context {
        profile_dir,
        passphrase: Sources {
            file: cli.passphrase_file.clone(),
            command: cli.passphrase_command.clone(),
            new: false,
        },
        config,
        timings: cli.timings,
        config_dir: paths.config_dir.clone(),
    })
}

fn start_logging(
    cli: &Cli,
    dir: &std::path::Path,
    default_level: &str,
) -> Option<logging::LogGuard> {
    if !cli.logging && cli.log_level.is_none() {
        return None;
    }
    let level = cli.log_level.as_deref().unwrap_or(default_level);
    match logging::init(&dir.join("logs"), level) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("cinder: logging disabled: {e}");
            None
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.as_ref().unwrap_or(&Command::Chat);
    match command {
        Command::Bench {
            scenario: BenchScenario::Crypto(args),
        } => run_crypto_bench(args),
        Command::Bench {
            scenario: BenchScenario::Dm(args),
        } => run_dm_bench(args).await,
        Command::Bench {
            scenario: BenchScenario::Idle(args),
        } => run_idle_bench(args).await,
        Command::Bench {
            scenario: BenchScenario::Room(a),
        } => {
            let target = bench_target(a.relay.as_ref(), a.invite.as_ref(), a.relay_pid)?;
            let o = a.options(target);
            let r = bench::room::run(&o).await.map_err(load_error)?;
            bench::room::write(&r, a.json, &mut std::io::stdout().lock())?;
            Ok(())
        }
        Command::Bench {
            scenario: BenchScenario::Search(args),
        } => run_search_bench(args),
        Command::Bench {
            scenario: BenchScenario::Render(a),
        } => {
            let r = bench::tui::render(a.messages, a.frames)?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "cinder bench render ({} messages in one conversation)",
                    r.messages
                );
                for s in &r.sizes {
                    println!(
                        "  {:>3}x{:<3} wall p50 {:.3} / p99 {:.3} / max {:.3} ms   CPU p50 {:.3} / p99 {:.3} ms  ({} frames; target p99 <= 2 ms: wall {}, CPU {})",
                        s.width,
                        s.height,
                        s.p50_ms,
                        s.p99_ms,
                        s.max_ms,
                        s.cpu_p50_ms,
                        s.cpu_p99_ms,
                        s.frames,
                        if s.p99_ms <= 2.0 { "meets" } else { "MISSES" },
                        if s.cpu_p99_ms <= 2.0 {
                            "meets"
                        } else {
                            "MISSES"
                        }
                    );
                }
            }
            Ok(())
        }
        Command::Bench {
            scenario: BenchScenario::Startup(a),
        } => {
            let r = bench::tui::startup(a.messages, a.cache.as_deref()).await?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("cinder bench startup ({} cached messages)", r.messages);
                if r.fill_s > 0.0 {
                    println!("  fill (not part of start-up)       {:>9.1} s", r.fill_s);
                }
                println!(
                    "  key derivation (Argon2id default) {:>9.1} ms",
                    r.key_derivation_ms
                );
                println!(
                    "  start to first frame, excluding it {:>8.1} ms  (target <= 200 ms: {})",
                    r.to_first_frame_ms,
                    if r.meets_target {
                        "meets target"
                    } else {
                        "MISSES target"
                    }
                );
            }
            Ok(())
        }
        Command::Serve(a) => {
            let mut config = cinder::relay::RelayConfig::new(a.listen, a.data.clone());
            config.network_name = a.network_name.clone();
            config.tls = a.tls_cert.clone().zip(a.tls_key.clone());
            config.max_connections = a.max_connections;
            config.max_frame = a.max_frame;
            config.rate_per_sec = a.rate;
            config.rate_burst = a.rate.saturating_mul(2);
            config.max_room_members = a.max_room_members;
            config.max_expire_secs = policy_timer_arg("--max-expire", a.max_expire.as_deref())?;
            config.max_burn_secs = policy_timer_arg("--max-burn", a.max_burn.as_deref())?;
            let _log = start_logging(&cli, &a.data, "info");
            Ok(cinder::relay::serve_until_signal(config).await?)
        }
        other => {
            let ctx = client_context(&cli)?;
            let _log = start_logging(&cli, &ctx.profile_dir, &ctx.config.logging.level);
            match other {
                Command::Register(a) => {
                    commands::cmd_register(
                        &ctx,
                        commands::RegisterArgs {
                            server: a.server.clone(),
                            invite: a.invite.clone(),
                            username: a.username.clone(),
                            display_name: a.display_name.clone(),
                            insecure_ws: a.insecure_ws,
                            ca_cert: a.ca_cert.clone(),
                            insecure_fast_kdf: a.insecure_fast_kdf,
                        },
                    )
                    .await
                }
                Command::Chat => commands::cmd_chat(&ctx).await,
                Command::Demo { keep } => {
                    cinder::cli::demo::run_demo(cinder::cli::demo::DemoOptions {
                        theme: ctx.config.ui.theme.clone(),
                        keymap: ctx.config.ui.keymap.clone(),
                        config_dir: ctx.config_dir.clone(),
                        keep: *keep,
                    })
                    .await
                }
                Command::Send(a) => {
                    let target = commands::SendTarget {
                        to: a.to.clone(),
                        room: a.room.clone(),
                        expire: timer_arg(a.expire.as_deref())?,
                        burn: timer_arg(a.burn.as_deref())?,
                    };
                    commands::cmd_send(&ctx, &target, &a.text).await
                }
                Command::Room { command } => {
                    use cinder::cli::rooms::RoomCommand as R;
                    let cmd = match command {
                        RoomCmd::Create {
                            name,
                            description,
                            members,
                            group,
                        } => R::Create {
                            name: name.clone(),
                            description: description.clone(),
                            members: members.clone(),
                            group: *group,
                        },
                        RoomCmd::Invite { room, users } => R::Invite {
                            room: room.clone(),
                            users: users.clone(),
                        },
                        RoomCmd::Remove { room, users } => R::Remove {
                            room: room.clone(),
                            users: users.clone(),
                        },
                        RoomCmd::Promote { room, user } => R::Promote {
                            room: room.clone(),
                            user: user.clone(),
                        },
                        RoomCmd::Demote { room, user } => R::Demote {
                            room: room.clone(),
                            user: user.clone(),
                        },
                        RoomCmd::Edit {
                            room,
                            title,
                            description,
                        } => R::Edit {
                            room: room.clone(),
                            title: title.clone(),
                            description: description.clone(),
                        },
                        RoomCmd::Leave { room } => R::Leave { room: room.clone() },
                        RoomCmd::Delete { room } => R::Delete { room: room.clone() },
                        RoomCmd::List { json } => R::List { json: *json },
                        RoomCmd::Members { room, json } => R::Members {
                            room: room.clone(),
                            json: *json,
                        },
                    };
                    cinder::cli::rooms::cmd_room(&ctx, cmd).await
                }
                Command::Timer(a) => {
                    cinder::cli::rooms::cmd_timer(
                        &ctx,
                        a.with.as_deref(),
                        a.room.as_deref(),
                        a.expire.as_deref(),
                        a.burn.as_deref(),
                    )
                    .await
                }
                Command::Admin {
                    command: AdminCommand::Policy { change },
                } => {
                    let rr = change
                        .as_ref()
                        .map(|PolicyCmd::ReadReceipts { state }| state == "on");
                    cinder::cli::rooms::cmd_admin_policy(&ctx, rr).await
                }
                Command::Recv(a) => commands::cmd_recv(&ctx, a.json, a.follow, a.timeout).await,
                Command::History(a) => {
                    commands::cmd_history(
                        &ctx,
                        a.with.as_deref(),
                        a.room.as_deref(),
                        a.json,
                        a.limit,
                    )
                    .await
                }
                Command::Admin {
                    command: AdminCommand::Invite { email, admin },
                } => commands::cmd_admin_invite(&ctx, email, *admin).await,
                Command::Passphrase {
                    command:
                        PassphraseCommand::Change {
                            new_passphrase_file,
                            new_passphrase_command,
                        },
                } => {
                    let new = Sources {
                        file: new_passphrase_file.clone(),
                        command: new_passphrase_command.clone(),
                        new: true,
                    };
                    commands::cmd_passphrase_change(&ctx, new).await
                }
                Command::Bench { .. } | Command::Serve(_) => Ok(()),
            }
        }
    }
}

/// Parses `serve --max-expire`/`--max-burn` (a usage error, exit 2, when malformed or off).
fn policy_timer_arg(flag: &str, v: Option<&str>) -> anyhow::Result<Option<u64>> {
    let Some(s) = v else {
        return Ok(None);
    };
    match cinder::session::parse_timer(s).map_err(cinder::cli::UsageError)? {
        Some(secs) => Ok(Some(u64::from(secs))),
        None => Err(cinder::cli::UsageError(format!(
            "{flag} needs a duration of at least one second, e.g. 30d"
        ))
        .into()),
    }
}

/// Parses a `--expire`/`--burn` value (a usage error, exit 2, when malformed).
fn timer_arg(v: Option<&str>) -> anyhow::Result<Option<u32>> {
    match v {
        None => Ok(None),
        Some(s) => Ok(cinder::session::parse_timer(s).map_err(cinder::cli::UsageError)?),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cinder: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    // Give background tasks no chance to print after we decided the outcome.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e
                .chain()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(": ");
            eprintln!("cinder: {msg}");
            ExitCode::from(cli::exit_code(&e))
        }
    }
}
