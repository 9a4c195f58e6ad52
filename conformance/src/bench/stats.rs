//! Pure statistics and reporting for the side-by-side benchmarks: summaries of samples,
//! ratios against a baseline, targets, and the printed table. No I/O.

use std::fmt::Write as _;

/// min / median / p99 of a set of samples (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p99: f64,
}

impl Summary {
    /// `None` for no samples or a NaN among them.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        Some(Summary {
            n: s.len(),
            min: s[0],
            median: quantile(&s, 0.5),
            p99: quantile(&s, 0.99),
        })
    }
}

/// Nearest-rank quantile of sorted, non-empty samples: the smallest sample with at least
/// `q` of all samples at or below it.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "quantile of no samples");
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One measured figure: ours beside its baseline, from the same interleaved run.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub unit: String,
    pub ours: Summary,
    pub base: Summary,
    /// What the baseline is, e.g. "plain bridge pods".
    pub base_name: String,
}

impl Row {
    /// ours.median / base.median.
    pub fn ratio(&self) -> f64 {
        self.ours.median / self.base.median
    }

    /// ours − base at the median.
    pub fn added_median(&self) -> f64 {
        self.ours.median - self.base.median
    }

    /// ours − base at p99.
    pub fn added_p99(&self) -> f64 {
        self.ours.p99 - self.base.p99
    }
}

/// A figure without a side-by-side baseline (e.g. memory), with a note.
#[derive(Debug, Clone, PartialEq)]
pub struct Single {
    pub name: String,
    pub unit: String,
    pub s: Summary,
    pub note: String,
}

/// How a target compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The value must be below the limit.
    Below,
    /// The value must be at least the limit.
    AtLeast,
}

/// A target from the issue and the value measured for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub what: String,
    pub value: f64,
    pub bound: Bound,
    pub limit: f64,
    pub unit: String,
}

impl Target {
    pub fn met(&self) -> bool {
        match self.bound {
            Bound::Below => self.value < self.limit,
            Bound::AtLeast => self.value >= self.limit,
        }
    }

    /// One line: `met` or `MISSED`, the value and the limit.
    pub fn line(&self) -> String {
        let op = match self.bound {
            Bound::Below => "<",
            Bound::AtLeast => ">=",
        };
        format!(
            "{:<7} {}: {} {} (target {op} {} {})",
            if self.met() { "met" } else { "MISSED" },
            self.what,
            fmt_num(self.value),
            self.unit,
            fmt_num(self.limit),
            self.unit
        )
    }
}

/// A number with a sensible number of digits for a table.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn fmt_summary(s: &Summary) -> String {
    format!(
        "{} / {} / {}",
        fmt_num(s.min),
        fmt_num(s.median),
        fmt_num(s.p99)
    )
}

/// The table of rows (ours and baseline as min / median / p99, ratio, added p50 / p99),
/// the figures without a baseline, then one line per target saying whether it was met.
pub fn render(rows: &[Row], singles: &[Single], targets: &[Target]) -> String {
    let head = [
        "measure",
        "unit",
        "n",
        "trireme min / med / p99",
        "baseline min / med / p99",
        "baseline",
        "ratio",
        "added p50 / p99",
    ];
    let body: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.unit.clone(),
                format!("{}+{}", r.ours.n, r.base.n),
                fmt_summary(&r.ours),
                fmt_summary(&r.base),
                r.base_name.clone(),
                format!("{:.3}", r.ratio()),
                format!("{} / {}", fmt_num(r.added_median()), fmt_num(r.added_p99())),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for row in &body {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "| {} |", parts.join(" | "));
    };
    line(&head.map(String::from), &mut out);
    let sep: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    let _ = writeln!(out, "|-{}-|", sep.join("-|-"));
    for row in &body {
        line(row, &mut out);
    }
    if !singles.is_empty() {
        out.push('\n');
        for x in singles {
            let _ = writeln!(
                out,
                "{}: {} {} (min / med / p99, n={}){}",
                x.name,
                fmt_summary(&x.s),
                x.unit,
                x.s.n,
                if x.note.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", x.note)
                }
            );
        }
    }
    if !targets.is_empty() {
        out.push('\n');
        for t in targets {
            let _ = writeln!(out, "{}", t.line());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&s, 0.5), 50.0);
        assert_eq!(quantile(&s, 0.99), 99.0);
        assert_eq!(quantile(&s, 1.0), 100.0);
        assert_eq!(quantile(&s, 0.0), 1.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn summary_sorts_and_rejects_empty_or_nan() {
        let s = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.n, s.min, s.median, s.p99), (3, 1.0, 3.0, 5.0));
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn row_ratio_and_added() {
        let r = Row {
            name: "x".into(),
            unit: "us".into(),
            ours: Summary::of(&[150.0, 160.0, 300.0]).unwrap(),
            base: Summary::of(&[100.0, 100.0, 200.0]).unwrap(),
            base_name: "plain".into(),
        };
        assert_eq!(r.ratio(), 1.6);
        assert_eq!(r.added_median(), 60.0);
        assert_eq!(r.added_p99(), 100.0);
        let single = Single {
            name: "rss".into(),
            unit: "KiB".into(),
            s: Summary::of(&[4096.0]).unwrap(),
            note: "idle".into(),
        };
        let t = render(&[r], &[single], &[]);
        assert!(
            t.contains("rss: 4096 / 4096 / 4096 KiB (min / med / p99, n=1) — idle"),
            "{t}"
        );
        assert!(t.contains("| x "), "{t}");
        assert!(t.contains("1.600"), "{t}");
        assert!(t.contains("60.00 / 100.0"), "{t}");
    }

    #[test]
    fn targets_say_met_or_missed() {
        let below = Target {
            what: "added p50".into(),
            value: 80.0,
            bound: Bound::Below,
            limit: 75.0,
            unit: "us".into(),
        };
        assert!(!below.met());
        assert!(below.line().starts_with("MISSED"), "{}", below.line());
        let at_least = Target {
            what: "rate".into(),
            value: 0.6,
            bound: Bound::AtLeast,
            limit: 0.6,
            unit: "x".into(),
        };
        assert!(at_least.met());
        assert!(render(&[], &[], &[at_least]).contains("met     rate: 0.600 x"));
    }
}
