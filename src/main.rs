//! The `cinder` binary: parses arguments and calls one top module. Everything else lives in the
//! library (`src/lib.rs`).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use cinder::bench;

/// Cinder: an end-to-end encrypted team messenger for the terminal.
#[derive(Parser, Debug)]
#[command(name = "cinder", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a benchmark scenario and print its figures.
    Bench {
        #[command(subcommand)]
        scenario: BenchScenario,
    },
}

#[derive(Subcommand, Debug)]
enum BenchScenario {
    /// Costs of the crypto core: envelope, ratchet, room send and rotation, file encryption.
    Crypto(CryptoArgs),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Bench {
            scenario: BenchScenario::Crypto(args),
        } => run_crypto_bench(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cinder: {e}");
            ExitCode::from(1)
        }
    }
}
