//! The enforcer's iptables rules inside the pod netns.
//!
//! The rule text is produced by pure functions ([`install_script`], [`cleanup_script`],
//! [`missing_rules`]) and applied atomically with `iptables-restore --noflush` through the
//! small [`Iptables`] trait (real implementation: [`SystemIptables`], which runs the
//! commands in the caller's netns — the enforcer has already entered the pod's).
//!
//! Layout (mangle table, one pair of chains of our own, jumped to first):
//! ```text
//! -I INPUT 1 -j TRIREME-IN            -I OUTPUT 1 -j TRIREME-OUT
//! TRIREME-IN / TRIREME-OUT:
//!   -i lo / -o lo                         -j RETURN      (pod-local traffic)
//!   -m mark --mark M/M -j CONNMARK --set-xmark M/M       (verdict NF_REPEAT + mark M)
//!   -m mark --mark M/M                    -j ACCEPT
//!   (IN only) -p tcp --tcp-option 253     -j NFQUEUE     (our marker, even when authorised)
//!   -m connmark --mark M/M                -j ACCEPT      (authorised connections)
//!   (OUT only) -p tcp --tcp-flags RST RST -j ACCEPT      (our own resets)
//!   -p tcp -j NFQUEUE --queue-num Q [--queue-bypass]     (everything else TCP)
//! ```
//! With `--reject`, a filter-table chain TRIREME-REJECT (jumped to first from INPUT and
//! OUTPUT) turns packets the enforcer accepted with the reject mark R into
//! `REJECT --reject-with tcp-reset`.

use crate::error::{Error, Result};
use std::process::{Command, Stdio};

/// Packet/connection mark bit of authorised connections (not kube-proxy's 0x4000/0x8000).
pub const AUTH_MARK: u32 = 0x0010_0000;
/// Packet mark bit asking the filter table to answer with a TCP reset.
pub const REJECT_MARK: u32 = 0x0020_0000;

pub const CHAIN_IN: &str = "TRIREME-IN";
pub const CHAIN_OUT: &str = "TRIREME-OUT";
pub const CHAIN_REJECT: &str = "TRIREME-REJECT";

/// IPv4 (`iptables`) or IPv6 (`ip6tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn restore_cmd(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }
    pub fn save_cmd(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }
}

/// What the rules depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleConfig {
    pub queue: u16,
    /// Add `--queue-bypass` (packets pass when no enforcer listens).
    pub fail_open: bool,
    /// Install the filter-table reject chain.
    pub reject: bool,
}

fn mark(m: u32) -> String {
    format!("0x{m:x}/0x{m:x}")
}

/// The mangle rules of our chains, exactly as `iptables-save` prints them.
pub fn mangle_rules(cfg: &RuleConfig, family: Family) -> Vec<String> {
    let m = mark(AUTH_MARK);
    let mut out = Vec::new();
    let _ = family;
    for (chain, iface) in [(CHAIN_IN, "-i"), (CHAIN_OUT, "-o")] {
        out.push(format!("-A {chain} {iface} lo -j RETURN"));
        out.push(format!(
            "-A {chain} -m mark --mark {m} -j CONNMARK --set-xmark {m}"
        ));
        out.push(format!("-A {chain} -m mark --mark {m} -j ACCEPT"));
        let bypass = if cfg.fail_open { " --queue-bypass" } else { "" };
        if chain == CHAIN_IN {
            // Anything inbound that still carries our marker option goes to the enforcer
            // even on an authorised connection: a late duplicate of the proof ACK must be
            // stripped or dropped, never handed to the socket as 64 bytes of data.
            out.push(format!(
                "-A {chain} -p tcp -m tcp --tcp-option {} -j NFQUEUE --queue-num {}{bypass}",
                crate::packet::OPTION_KIND,
                cfg.queue
            ));
        }
        out.push(format!("-A {chain} -m connmark --mark {m} -j ACCEPT"));
        if chain == CHAIN_OUT {
            // Our own resets (REJECT's tcp-reset, a local abort) go out unqueued: a reset
            // opens nothing, and NFQUEUE drops a REJECT reset since it shares the
            // rejected SYN's unconfirmed conntrack entry.
            out.push(format!(
                "-A {chain} -p tcp -m tcp --tcp-flags RST RST -j ACCEPT"
            ));
        }
        out.push(format!(
            "-A {chain} -p tcp -j NFQUEUE --queue-num {}{bypass}",
            cfg.queue
        ));
    }
    out
}

/// The filter rules of the reject chain (empty without `reject`).
pub fn filter_rules(cfg: &RuleConfig, family: Family) -> Vec<String> {
    if !cfg.reject {
        return Vec::new();
    }
    let _ = family;
    vec![format!(
        "-A {CHAIN_REJECT} -p tcp -m mark --mark {} -j REJECT --reject-with tcp-reset",
        mark(REJECT_MARK)
    )]
}

/// The jump rules from built-in chains, as `iptables-save` prints them (`-A`).
pub fn jump_rules(cfg: &RuleConfig) -> (Vec<String>, Vec<String>) {
    let mangle = vec![
        format!("-A INPUT -j {CHAIN_IN}"),
        format!("-A OUTPUT -j {CHAIN_OUT}"),
    ];
    let filter = if cfg.reject {
        vec![
            format!("-A INPUT -j {CHAIN_REJECT}"),
            format!("-A OUTPUT -j {CHAIN_REJECT}"),
        ]
    } else {
        Vec::new()
    };
    (mangle, filter)
}

/// One `iptables-restore --noflush` script that first removes whatever of ours is in
/// `current` (the output of `iptables-save`, e.g. left by a crash) and then installs the
/// rules for `cfg`, so the whole change is one atomic transaction.
pub fn install_script(cfg: &RuleConfig, family: Family, current: &str) -> String {
    let stale = Stale::find(current);
    let (mangle_jumps, filter_jumps) = jump_rules(cfg);
    let mut s = String::new();
    s.push_str("*mangle\n");
    stale.remove_jumps(&mut s, "mangle");
    // Declaring an existing chain in --noflush mode flushes it.
    s.push_str(&format!(":{CHAIN_IN} - [0:0]\n:{CHAIN_OUT} - [0:0]\n"));
    for r in mangle_rules(cfg, family) {
        s.push_str(&r);
        s.push('\n');
    }
    for r in mangle_jumps {
        s.push_str(&r.replacen("-A ", "-I ", 1).replacen(" -j", " 1 -j", 1));
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    let filter_stale = stale.has_table("filter");
    if cfg.reject || filter_stale {
        s.push_str("*filter\n");
        stale.remove_jumps(&mut s, "filter");
        if cfg.reject {
            s.push_str(&format!(":{CHAIN_REJECT} - [0:0]\n"));
            for r in filter_rules(cfg, family) {
                s.push_str(&r);
                s.push('\n');
            }
            for r in filter_jumps {
                s.push_str(&r.replacen("-A ", "-I ", 1).replacen(" -j", " 1 -j", 1));
                s.push('\n');
            }
        } else {
            s.push_str(&format!("-F {CHAIN_REJECT}\n-X {CHAIN_REJECT}\n"));
        }
        s.push_str("COMMIT\n");
    }
    s
}

/// A script removing every rule and chain of ours found in `current`; `None` if there is
/// nothing to remove.
pub fn cleanup_script(current: &str) -> Option<String> {
    let stale = Stale::find(current);
    if stale.tables.is_empty() {
        return None;
    }
    let mut s = String::new();
    for (table, t) in &stale.tables {
        s.push_str(&format!("*{table}\n"));
        stale.remove_jumps(&mut s, table);
        for chain in &t.chains {
            s.push_str(&format!("-F {chain}\n-X {chain}\n"));
        }
        s.push_str("COMMIT\n");
    }
    Some(s)
}

/// Expected rules (by table) that `current` (iptables-save output) lacks. Empty = all there.
pub fn missing_rules(cfg: &RuleConfig, family: Family, current: &str) -> Vec<String> {
    let mut have: std::collections::HashMap<&str, std::collections::HashSet<String>> =
        Default::default();
    let mut table = "";
    for line in current.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim();
        } else if line.starts_with("-A ") {
            have.entry(table).or_default().insert(normalise(line));
        }
    }
    let (mj, fj) = jump_rules(cfg);
    let mut want: Vec<(&str, String)> = Vec::new();
    want.extend(mj.into_iter().map(|r| ("mangle", r)));
    want.extend(mangle_rules(cfg, family).into_iter().map(|r| ("mangle", r)));
    want.extend(fj.into_iter().map(|r| ("filter", r)));
    want.extend(filter_rules(cfg, family).into_iter().map(|r| ("filter", r)));
    want.into_iter()
        .filter(|(t, r)| !have.get(t).is_some_and(|set| set.contains(&normalise(r))))
        .map(|(t, r)| format!("{t}: {r}"))
        .collect()
}

fn normalise(rule: &str) -> String {
    rule.split_whitespace().collect::<Vec<_>>().join(" ")
}

const OUR_CHAINS: [&str; 3] = [CHAIN_IN, CHAIN_OUT, CHAIN_REJECT];

#[derive(Default)]
struct StaleTable {
    chains: Vec<String>,
    jumps: Vec<String>,
}

/// Our chains and the jumps to them found in an iptables-save dump.
#[derive(Default)]
struct Stale {
    tables: std::collections::BTreeMap<String, StaleTable>,
}

impl Stale {
    fn find(save: &str) -> Stale {
        let mut st = Stale::default();
        let mut table = String::new();
        for line in save.lines() {
            let line = line.trim();
            if let Some(t) = line.strip_prefix('*') {
                table = t.to_string();
            } else if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or("");
                if OUR_CHAINS.contains(&name) {
                    st.tables
                        .entry(table.clone())
                        .or_default()
                        .chains
                        .push(name.to_string());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let mut words = rule.split_whitespace();
                let chain = words.next().unwrap_or("");
                let words: Vec<&str> = words.collect();
                let jumps_to_ours = words
                    .windows(2)
                    .any(|w| (w[0] == "-j" || w[0] == "-g") && OUR_CHAINS.contains(&w[1]));
                if !OUR_CHAINS.contains(&chain) && jumps_to_ours {
                    st.tables
                        .entry(table.clone())
                        .or_default()
                        .jumps
                        .push(format!("-D {chain} {}", words.join(" ")));
                }
            }
        }
        st
    }

    fn has_table(&self, table: &str) -> bool {
        self.tables.contains_key(table)
    }

    fn remove_jumps(&self, s: &mut String, table: &str) {
        if let Some(t) = self.tables.get(table) {
            for j in &t.jumps {
                s.push_str(j);
                s.push('\n');
            }
        }
    }
}

/// The seam to the iptables tools (run in the caller's netns).
pub trait Iptables {
    /// `iptables-restore --noflush` with `script` on stdin.
    fn restore(&self, family: Family, script: &str) -> Result<()>;
    /// `iptables-save` (all tables).
    fn save(&self, family: Family) -> Result<String>;
}

/// Runs the real `iptables-restore` / `iptables-save` binaries (`ip6tables-*` for V6).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemIptables;

impl Iptables for SystemIptables {
    fn restore(&self, family: Family, script: &str) -> Result<()> {
        use std::io::Write;
        let cmd = family.restore_cmd();
        let mut child = Command::new(cmd)
            .args(["--noflush", "--wait"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::cmd(cmd, format!("cannot run: {e} (is iptables installed?)")))?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(script.as_bytes())
            .map_err(|e| Error::cmd(cmd, format!("write script: {e}")))?;
        let out = child
            .wait_with_output()
            .map_err(|e| Error::cmd(cmd, e.to_string()))?;
        if !out.status.success() {
            return Err(Error::cmd(
                cmd,
                format!(
                    "{} failed ({}): {}\nscript:\n{script}",
                    cmd,
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(())
    }

    fn save(&self, family: Family) -> Result<String> {
        let cmd = family.save_cmd();
        let out = Command::new(cmd)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::cmd(cmd, format!("cannot run: {e} (is iptables installed?)")))?;
        if !out.status.success() {
            return Err(Error::cmd(
                cmd,
                format!(
                    "failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        String::from_utf8(out.stdout).map_err(|e| Error::cmd(cmd, e.to_string()))
    }
}

/// Which families to manage in the current netns: IPv4 always, IPv6 when the netns has
/// IPv6 (otherwise no IPv6 traffic can bypass the queue).
pub fn families() -> Vec<Family> {
    let mut f = vec![Family::V4];
    let v6_off = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        .map(|s| s.trim() == "1")
        .unwrap_or(true);
    if !v6_off {
        f.push(Family::V6);
    }
    f
}

/// Installs the rules for `cfg` in every family, replacing stale ones of ours atomically.
pub fn install(ipt: &dyn Iptables, cfg: &RuleConfig, families: &[Family]) -> Result<()> {
    for (i, fam) in families.iter().enumerate() {
        let current = ipt.save(*fam)?;
        if let Err(e) = ipt.restore(*fam, &install_script(cfg, *fam, &current)) {
            // Undo the families already done so a failed start leaves nothing.
            let _ = remove(ipt, &families[..i]);
            return Err(e);
        }
    }
    Ok(())
}

/// Removes every rule and chain of ours in every family; keeps going after a failure and
/// reports all of them.
pub fn remove(ipt: &dyn Iptables, families: &[Family]) -> Result<()> {
    let mut errs = Vec::new();
    for fam in families {
        match ipt.save(*fam) {
            Ok(current) => {
                if let Some(script) = cleanup_script(&current) {
                    if let Err(e) = ipt.restore(*fam, &script) {
                        errs.push(e);
                    }
                }
            }
            Err(e) => errs.push(e),
        }
    }
    match errs.len() {
        0 => Ok(()),
        1 => Err(errs.remove(0)),
        _ => Err(Error::List(errs)),
    }
}

/// Re-checks that every rule is present; `Err` lists what is missing.
pub fn check(ipt: &dyn Iptables, cfg: &RuleConfig, families: &[Family]) -> Result<()> {
    let mut missing = Vec::new();
    for fam in families {
        let current = ipt.save(*fam)?;
        for m in missing_rules(cfg, *fam, &current) {
            missing.push(format!("{fam:?} {m}"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::cmd(
            "rules check",
            format!("missing: {}", missing.join(", ")),
        ))
    }
}

/// The install script for a netns that has nothing of ours, written without reading the
/// netns first: `-N` fails when a chain of ours already exists (left by a crashed
/// predecessor), which fails the restore; [`install_fresh_first`] then falls back to
/// [`install`]. Without `reject`, TRIREME-REJECT is created and deleted again, so a stale
/// one is noticed too.
pub fn fresh_install_script(cfg: &RuleConfig, family: Family) -> String {
    let (mangle_jumps, filter_jumps) = jump_rules(cfg);
    let insert = |r: String| r.replacen("-A ", "-I ", 1).replacen(" -j", " 1 -j", 1);
    let mut s = format!("*mangle\n-N {CHAIN_IN}\n-N {CHAIN_OUT}\n");
    for r in mangle_rules(cfg, family)
        .into_iter()
        .chain(mangle_jumps.into_iter().map(insert))
    {
        s.push_str(&r);
        s.push('\n');
    }
    s.push_str(&format!("COMMIT\n*filter\n-N {CHAIN_REJECT}\n"));
    if cfg.reject {
        for r in filter_rules(cfg, family)
            .into_iter()
            .chain(filter_jumps.into_iter().map(insert))
        {
            s.push_str(&r);
            s.push('\n');
        }
    } else {
        s.push_str(&format!("-X {CHAIN_REJECT}\n"));
    }
    s.push_str("COMMIT\n");
    s
}

/// [`install`] with one process per family instead of two, the families in parallel:
/// first [`fresh_install_script`]; only a family where that fails (stale rules of ours)
/// is read with `iptables-save` and installed by [`install`]. On failure every family is
/// cleaned up again.
pub fn install_fresh_first(
    ipt: &(dyn Iptables + Sync),
    cfg: &RuleConfig,
    families: &[Family],
) -> Result<()> {
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = families
            .iter()
            .map(|&fam| {
                scope.spawn(move || {
                    if ipt.restore(fam, &fresh_install_script(cfg, fam)).is_ok() {
                        return Ok(());
                    }
                    install(ipt, cfg, &[fam])
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::cmd("iptables", "install thread panicked")))
            })
            .collect()
    });
    let mut errs: Vec<Error> = results.into_iter().filter_map(|r| r.err()).collect();
    if errs.is_empty() {
        return Ok(());
    }
    // Undo the families that worked so a failed start leaves nothing.
    let _ = remove(ipt, families);
    Err(if errs.len() == 1 {
        errs.remove(0)
    } else {
        Error::List(errs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn cfg() -> RuleConfig {
        RuleConfig {
            queue: 3,
            fail_open: false,
            reject: false,
        }
    }

    #[test]
    fn mangle_rules_bypass_marked_and_queue_the_rest() {
        let r = mangle_rules(&cfg(), Family::V4);
        assert_eq!(
            r,
            vec![
                "-A TRIREME-IN -i lo -j RETURN",
                "-A TRIREME-IN -m mark --mark 0x100000/0x100000 -j CONNMARK --set-xmark 0x100000/0x100000",
                "-A TRIREME-IN -m mark --mark 0x100000/0x100000 -j ACCEPT",
                "-A TRIREME-IN -p tcp -m tcp --tcp-option 253 -j NFQUEUE --queue-num 3",
                "-A TRIREME-IN -m connmark --mark 0x100000/0x100000 -j ACCEPT",
                "-A TRIREME-IN -p tcp -j NFQUEUE --queue-num 3",
                "-A TRIREME-OUT -o lo -j RETURN",
                "-A TRIREME-OUT -m mark --mark 0x100000/0x100000 -j CONNMARK --set-xmark 0x100000/0x100000",
                "-A TRIREME-OUT -m mark --mark 0x100000/0x100000 -j ACCEPT",
                "-A TRIREME-OUT -m connmark --mark 0x100000/0x100000 -j ACCEPT",
                "-A TRIREME-OUT -p tcp -m tcp --tcp-flags RST RST -j ACCEPT",
                "-A TRIREME-OUT -p tcp -j NFQUEUE --queue-num 3",
            ]
        );
        assert_eq!(mangle_rules(&cfg(), Family::V6), r);
    }

    #[test]
    fn fail_open_adds_bypass() {
        let c = RuleConfig {
            fail_open: true,
            ..cfg()
        };
        let r = mangle_rules(&c, Family::V4);
        assert_eq!(
            r.iter()
                .filter(|l| l.ends_with("--queue-num 3 --queue-bypass"))
                .count(),
            3
        );
        // Fail closed by default: no bypass.
        assert!(!mangle_rules(&cfg(), Family::V4)
            .iter()
            .any(|l| l.contains("bypass")));
    }

    #[test]
    fn install_on_clean_netns_creates_chains_and_jumps_first() {
        let s = install_script(&cfg(), Family::V4, "*mangle\n:INPUT ACCEPT [0:0]\nCOMMIT\n");
        assert!(s.starts_with("*mangle\n:TRIREME-IN - [0:0]\n:TRIREME-OUT - [0:0]\n"));
        assert!(s.contains("-I INPUT 1 -j TRIREME-IN\n"));
        assert!(s.contains("-I OUTPUT 1 -j TRIREME-OUT\n"));
        assert!(!s.contains("-D "));
        assert!(!s.contains("*filter"));
        assert!(s.ends_with("COMMIT\n"));
    }

    const STALE: &str = "# Generated by iptables-save\n*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:TRIREME-IN - [0:0]\n:TRIREME-OUT - [0:0]\n-A INPUT -j TRIREME-IN\n-A INPUT -j TRIREME-IN\n-A OUTPUT -j TRIREME-OUT\n-A OUTPUT -p udp -j ACCEPT\n-A TRIREME-IN -p tcp -j NFQUEUE --queue-num 0\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:TRIREME-REJECT - [0:0]\n-A INPUT -j TRIREME-REJECT\n-A OUTPUT -j TRIREME-REJECT\nCOMMIT\n";

    #[test]
    fn install_replaces_stale_rules_in_the_same_transaction() {
        let s = install_script(&cfg(), Family::V4, STALE);
        // Both duplicate jumps are deleted before the fresh one is inserted.
        assert_eq!(s.matches("-D INPUT -j TRIREME-IN\n").count(), 2);
        assert!(s.contains("-D OUTPUT -j TRIREME-OUT\n"));
        assert!(!s.contains("-D OUTPUT -p udp"));
        let del = s.find("-D INPUT").unwrap();
        let ins = s.find("-I INPUT 1 -j TRIREME-IN").unwrap();
        assert!(del < ins);
        // The stale reject chain is removed since reject is off now.
        assert!(s.contains("*filter\n-D INPUT -j TRIREME-REJECT\n-D OUTPUT -j TRIREME-REJECT\n-F TRIREME-REJECT\n-X TRIREME-REJECT\nCOMMIT\n"));
    }

    #[test]
    fn cleanup_removes_only_ours() {
        assert_eq!(
            cleanup_script(STALE).unwrap(),
            "*filter\n-D INPUT -j TRIREME-REJECT\n-D OUTPUT -j TRIREME-REJECT\n-F TRIREME-REJECT\n-X TRIREME-REJECT\nCOMMIT\n\
             *mangle\n-D INPUT -j TRIREME-IN\n-D INPUT -j TRIREME-IN\n-D OUTPUT -j TRIREME-OUT\n-F TRIREME-IN\n-X TRIREME-IN\n-F TRIREME-OUT\n-X TRIREME-OUT\nCOMMIT\n"
        );
        assert!(
            cleanup_script("*mangle\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n").is_none()
        );
    }

    #[test]
    fn reject_installs_filter_chain() {
        let c = RuleConfig {
            reject: true,
            ..cfg()
        };
        let s = install_script(&c, Family::V4, "");
        assert!(s.contains("*filter\n:TRIREME-REJECT - [0:0]\n-A TRIREME-REJECT -p tcp -m mark --mark 0x200000/0x200000 -j REJECT --reject-with tcp-reset\n-I INPUT 1 -j TRIREME-REJECT\n-I OUTPUT 1 -j TRIREME-REJECT\nCOMMIT\n"));
    }

    #[test]
    fn missing_rules_compares_with_save_output() {
        let c = cfg();
        let mut save = String::from("*mangle\n");
        for r in jump_rules(&c)
            .0
            .iter()
            .chain(mangle_rules(&c, Family::V4).iter())
        {
            save.push_str(r);
            save.push('\n');
        }
        save.push_str("COMMIT\n");
        assert!(missing_rules(&c, Family::V4, &save).is_empty());
        let without = save.replace("-A OUTPUT -j TRIREME-OUT\n", "");
        assert_eq!(
            missing_rules(&c, Family::V4, &without),
            vec!["mangle: -A OUTPUT -j TRIREME-OUT".to_string()]
        );
        // Same rule text in the wrong table does not count.
        let wrong = save.replace("*mangle", "*filter");
        assert_eq!(missing_rules(&c, Family::V4, &wrong).len(), 14);
    }

    /// Records scripts; its "kernel" state is the last script's effect (simplified: it
    /// stores the save output to return).
    struct Fake {
        save: RefCell<String>,
        scripts: RefCell<Vec<String>>,
        fail_v6: bool,
    }

    impl Iptables for Fake {
        fn restore(&self, family: Family, script: &str) -> Result<()> {
            if family == Family::V6 && self.fail_v6 {
                return Err(Error::cmd("ip6tables-restore", "boom"));
            }
            self.scripts
                .borrow_mut()
                .push(format!("{family:?}\n{script}"));
            Ok(())
        }
        fn save(&self, _: Family) -> Result<String> {
            Ok(self.save.borrow().clone())
        }
    }

    #[test]
    fn failed_family_rolls_back_the_others() {
        let f = Fake {
            save: RefCell::new(String::new()),
            scripts: RefCell::new(vec![]),
            fail_v6: true,
        };
        assert!(install(&f, &cfg(), &[Family::V4, Family::V6]).is_err());
        // V4 installed, then the rollback asked save again (fake state empty: nothing to do).
        assert_eq!(f.scripts.borrow().len(), 1);
        *f.save.borrow_mut() = STALE.to_string();
        assert!(remove(&f, &[Family::V4]).is_ok());
        assert!(f.scripts.borrow()[1].contains("-X TRIREME-IN"));
        // Teardown keeps going and collects errors.
        let e = remove(&f, &[Family::V6, Family::V4]).unwrap_err();
        assert!(e.to_string().contains("boom"));
        assert_eq!(f.scripts.borrow().len(), 3);
    }
}

#[cfg(test)]
mod fresh_tests {
    use super::*;
    use std::sync::Mutex;

    fn cfg(reject: bool) -> RuleConfig {
        RuleConfig {
            queue: 3,
            fail_open: false,
            reject,
        }
    }

    /// A netns modelled by its iptables-save text: restore of a `-N` script fails when a
    /// chain of ours exists, as the real tool does.
    struct Fake {
        stale: Mutex<Vec<Family>>,
        calls: Mutex<Vec<String>>,
    }

    impl Iptables for Fake {
        fn restore(&self, family: Family, script: &str) -> Result<()> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("restore {family:?}"));
            let stale = self.stale.lock().unwrap().contains(&family);
            if stale && script.contains(&format!("-N {CHAIN_IN}")) {
                return Err(Error::cmd("iptables-restore", "Chain already exists"));
            }
            if !script.contains("-N ") {
                self.stale.lock().unwrap().retain(|f| *f != family);
            }
            Ok(())
        }
        fn save(&self, family: Family) -> Result<String> {
            self.calls.lock().unwrap().push(format!("save {family:?}"));
            Ok(if self.stale.lock().unwrap().contains(&family) {
                format!("*mangle\n:{CHAIN_IN} - [0:0]\n-A INPUT -j {CHAIN_IN}\nCOMMIT\n")
            } else {
                "*mangle\nCOMMIT\n".into()
            })
        }
    }

    #[test]
    fn fresh_script_creates_chains_rules_and_jumps_and_probes_reject_chain() {
        let s = fresh_install_script(&cfg(false), Family::V4);
        assert!(s.starts_with("*mangle\n-N TRIREME-IN\n-N TRIREME-OUT\n"));
        assert!(s.contains("-I INPUT 1 -j TRIREME-IN\n"));
        assert!(s.contains("-I OUTPUT 1 -j TRIREME-OUT\n"));
        for r in mangle_rules(&cfg(false), Family::V4) {
            assert!(s.contains(&r), "{r}");
        }
        assert!(s.ends_with("*filter\n-N TRIREME-REJECT\n-X TRIREME-REJECT\nCOMMIT\n"));
        let s = fresh_install_script(&cfg(true), Family::V6);
        assert!(s.contains("-N TRIREME-REJECT\n-A TRIREME-REJECT "));
        assert!(s.contains("-I INPUT 1 -j TRIREME-REJECT\n"));
        assert!(!s.contains("-X "));
    }

    #[test]
    fn clean_netns_needs_no_save_and_stale_family_falls_back() {
        let ipt = Fake {
            stale: Mutex::new(vec![]),
            calls: Mutex::new(vec![]),
        };
        install_fresh_first(&ipt, &cfg(false), &[Family::V4, Family::V6]).unwrap();
        let mut calls = ipt.calls.lock().unwrap().clone();
        calls.sort();
        assert_eq!(calls, ["restore V4", "restore V6"]);

        let ipt = Fake {
            stale: Mutex::new(vec![Family::V6]),
            calls: Mutex::new(vec![]),
        };
        install_fresh_first(&ipt, &cfg(false), &[Family::V4, Family::V6]).unwrap();
        let calls = ipt.calls.lock().unwrap().clone();
        assert_eq!(calls.iter().filter(|c| *c == "save V6").count(), 1);
        assert!(!calls.contains(&"save V4".to_string()));
        assert!(ipt.stale.lock().unwrap().is_empty());
    }
}
