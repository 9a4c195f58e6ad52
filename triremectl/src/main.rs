//! triremectl: the trireme admin CLI (keys, policy check/matrix, status, metrics).

mod keys;
mod node;
mod policy_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Administer trireme: identity keys, NetworkPolicy checks, and the enforcers on this node.
#[derive(Debug, Parser)]
#[command(name = "triremectl", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create, issue and inspect the keys that sign identity tokens.
    #[command(subcommand)]
    Keys(keys::KeysCmd),
    /// Evaluate NetworkPolicy manifests offline: one connection, or the full matrix.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCmd),
    /// Status of every enforcer on this node (rules, queue, flows, counters).
    Status {
        /// Directory of the enforcers' control sockets.
        #[arg(long, default_value = trireme_enforcer::control::DEFAULT_CONTROL_DIR, value_name = "DIR")]
        control_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Metrics of every enforcer on this node, in the Prometheus text format.
    Metrics {
        /// Directory of the enforcers' control sockets.
        #[arg(long, default_value = trireme_enforcer::control::DEFAULT_CONTROL_DIR, value_name = "DIR")]
        control_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Keys(cmd) => keys::run(cmd),
        Cmd::Policy(cmd) => policy_cmd::run(cmd),
        Cmd::Status { control_dir, json } => node::status(&control_dir, json),
        Cmd::Metrics { control_dir } => node::metrics(&control_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triremectl: {e}");
            ExitCode::FAILURE
        }
    }
}
