//! `triremectl keys init|psk|issue-node|show`.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use trireme_token::keys::{self, Options};
use trireme_token::Mode;

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Create a cluster CA and this node's key and credential (PKI mode):
    /// ca.key, ca.crt, node.key, node.crt, all 0600, in a 0700 directory.
    Init {
        /// Key directory (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// This node's name (default: the host name).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
        /// Validity of the node credential, in days.
        #[arg(long, default_value_t = 365, value_name = "DAYS")]
        days: u64,
        /// Replace existing keys.
        #[arg(long)]
        force: bool,
    },
    /// Create a shared secret (PSK mode): psk.key, 0600. Copy it to every node.
    Psk {
        /// Key directory (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Replace an existing psk.key.
        #[arg(long)]
        force: bool,
    },
    /// Issue a key and credential for another node with the CA in --ca-dir. The output
    /// directory gets ca.crt, node.key and node.crt (never ca.key).
    IssueNode {
        /// Directory holding ca.key and ca.crt (made by `keys init`).
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// The other node's name.
        #[arg(long, value_name = "NAME")]
        node: String,
        /// Output key directory for that node (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Validity of the node credential, in days.
        #[arg(long, default_value_t = 365, value_name = "DAYS")]
        days: u64,
        /// Replace existing keys in --out.
        #[arg(long)]
        force: bool,
    },
    /// Check a key directory as the enforcer loads it and show what it holds.
    Show {
        /// Key directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

/// The host name, lowercased, as the default node name.
fn host_name() -> Result<String, String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map_err(|e| format!("cannot read the host name ({e}); pass --node NAME"))?;
    let name = raw.trim().to_ascii_lowercase();
    keys::validate_node_name(&name).map_err(|e| format!("{e}; pass --node NAME"))?;
    Ok(name)
}

fn options(force: bool, days: u64) -> Result<Options, String> {
    if days == 0 {
        return Err("--days must be at least 1".into());
    }
    let validity_secs = days
        .checked_mul(24 * 3600)
        .ok_or_else(|| format!("--days {days} is too large"))?;
    Ok(Options {
        force,
        validity_secs,
        ..Options::default()
    })
}

fn print_written(files: &[PathBuf]) {
    for f in files {
        let what = match f.file_name().and_then(|n| n.to_str()) {
            Some(keys::CA_KEY) => "CA private key: keep it only where you issue node keys",
            Some(keys::CA_CRT) => "CA public key: every node trusts it",
            Some(keys::NODE_KEY) => "this node's private key",
            Some(keys::NODE_CRT) => "this node's credential, signed by the CA",
            Some(keys::PSK_KEY) => "shared secret: copy it to every node (mode 0600)",
            _ => "",
        };
        println!("wrote {} ({what})", f.display());
    }
}

fn show(dir: &Path) -> Result<(), String> {
    let info = keys::describe(dir).map_err(|e| e.to_string())?;
    println!("directory: {}", dir.display());
    println!("mode:      {}", info.mode);
    match info.mode {
        Mode::Pki => {
            println!("node:      {}", info.node.unwrap_or_default());
            println!("CA key id: {} (signed node.crt)", info.key_id);
            println!("trusted:   {}", info.trusted_cas.join(", "));
            if let Some((from, until)) = info.valid {
                let days_left = until.saturating_sub(trireme_token::now_unix()) / 86400;
                println!("valid:     {from} .. {until} (unix seconds; {days_left} days left)");
            }
            println!(
                "CA key:    {}",
                if info.has_ca_key {
                    "present (this directory can issue node keys)"
                } else {
                    "absent"
                }
            );
        }
        Mode::Psk => println!("PSK id:    {}", info.key_id),
    }
    Ok(())
}

pub fn run(cmd: KeysCmd) -> Result<(), String> {
    match cmd {
        KeysCmd::Init {
            dir,
            node,
            days,
            force,
        } => {
            let node = match node {
                Some(n) => n,
                None => host_name()?,
            };
            let files = keys::init_pki_with(&dir, &node, &options(force, days)?)
                .map_err(|e| e.to_string())?;
            print_written(&files);
            println!("node {node}: PKI keys ready; issue more nodes with `triremectl keys issue-node --ca-dir {}`", dir.display());
            Ok(())
        }
        KeysCmd::Psk { dir, force } => {
            let files = keys::init_psk_with(
                &dir,
                &Options {
                    force,
                    ..Options::default()
                },
            )
            .map_err(|e| e.to_string())?;
            print_written(&files);
            Ok(())
        }
        KeysCmd::IssueNode {
            ca_dir,
            node,
            out,
            days,
            force,
        } => {
            let files = keys::issue_node_with(&ca_dir, &node, &out, &options(force, days)?)
                .map_err(|e| e.to_string())?;
            print_written(&files);
            println!(
                "node {node}: copy {} to that node's key directory",
                out.display()
            );
            Ok(())
        }
        KeysCmd::Show { dir } => show(&dir),
    }
}
