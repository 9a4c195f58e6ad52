//! Label selectors compiled from `metav1.LabelSelector`, and Kubernetes name rules.

use crate::error::FieldError;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Value must be one of these (sorted, deduplicated).
    In(Vec<String>),
    /// Key absent, or value not one of these.
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Requirement {
    pub key: String,
    pub op: Op,
}

/// A compiled label selector: the AND of its requirements. No requirement = matches all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Selector {
    pub reqs: Vec<Requirement>,
}

impl Selector {
    /// Matches labels looked up by `get`.
    #[inline]
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.reqs.iter().all(|r| {
            let v = get(&r.key);
            match &r.op {
                Op::In(vals) => v.is_some_and(|v| contains(vals, v)),
                Op::NotIn(vals) => v.is_none_or(|v| !contains(vals, v)),
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
            }
        })
    }

    #[inline]
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }

    /// One `key=value` every matching label set must carry, if there is one (for indexing).
    pub fn required_pair(&self) -> Option<(&str, &str)> {
        self.reqs.iter().find_map(|r| match &r.op {
            Op::In(vals) if vals.len() == 1 => Some((r.key.as_str(), vals[0].as_str())),
            _ => None,
        })
    }
}

#[inline]
fn contains(vals: &[String], v: &str) -> bool {
    if vals.len() <= 4 {
        vals.iter().any(|x| x == v)
    } else {
        vals.binary_search_by(|x| x.as_str().cmp(v)).is_ok()
    }
}

/// Compiles and validates a selector; `None` (absent) compiles to "match all".
/// Errors are pushed with field paths under `path`; the result is `None` if any.
pub(crate) fn compile_selector(
    sel: Option<&LabelSelector>,
    path: &str,
    errs: &mut Vec<FieldError>,
) -> Option<Selector> {
    let before = errs.len();
    let mut reqs = Vec::new();
    let Some(sel) = sel else {
        return Some(Selector::default());
    };
    if let Some(ml) = &sel.match_labels {
        for (k, v) in ml {
            let p = format!("{path}.matchLabels[{k}]");
            check_label_key(k, &p, errs);
            check_label_value(v, &p, errs);
            reqs.push(Requirement {
                key: k.clone(),
                op: Op::In(vec![v.clone()]),
            });
        }
    }
    if let Some(me) = &sel.match_expressions {
        for (i, e) in me.iter().enumerate() {
            let p = format!("{path}.matchExpressions[{i}]");
            check_label_key(&e.key, &format!("{p}.key"), errs);
            let values = e.values.clone().unwrap_or_default();
            for (j, v) in values.iter().enumerate() {
                check_label_value(v, &format!("{p}.values[{j}]"), errs);
            }
            let op = match e.operator.as_str() {
                "In" | "NotIn" => {
                    if values.is_empty() {
                        errs.push(FieldError::new(
                            format!("{p}.values"),
                            format!("must be non-empty when operator is {}", e.operator),
                        ));
                    }
                    let mut vals = values;
                    vals.sort();
                    vals.dedup();
                    if e.operator == "In" {
                        Op::In(vals)
                    } else {
                        Op::NotIn(vals)
                    }
                }
                "Exists" | "DoesNotExist" => {
                    if !values.is_empty() {
                        errs.push(FieldError::new(
                            format!("{p}.values"),
                            format!("must be empty when operator is {}", e.operator),
                        ));
                    }
                    if e.operator == "Exists" {
                        Op::Exists
                    } else {
                        Op::DoesNotExist
                    }
                }
                other => {
                    errs.push(FieldError::new(
                        format!("{p}.operator"),
                        format!(
                            "unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)"
                        ),
                    ));
                    continue;
                }
            };
            reqs.push(Requirement {
                key: e.key.clone(),
                op,
            });
        }
    }
    (errs.len() == before).then_some(Selector { reqs })
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// A label value (or the name part of a key): at most 63 characters, alphanumeric at both
/// ends, `-`, `_`, `.` and alphanumerics in between. Empty values are allowed.
pub(crate) fn valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.starts_with(is_alnum)
            && v.ends_with(is_alnum)
            && v.chars()
                .all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.')))
}

/// A DNS-1123 subdomain: at most 253 characters of lowercase alphanumerics, `-` and `.`,
/// each dot-separated part alphanumeric at both ends.
pub(crate) fn valid_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// A label key: `[prefix/]name`, prefix a DNS subdomain, name a non-empty label value.
pub(crate) fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(valid_dns_subdomain) && !name.is_empty() && valid_label_value(name)
}

pub(crate) fn check_label_key(k: &str, path: &str, errs: &mut Vec<FieldError>) {
    if !valid_label_key(k) {
        errs.push(FieldError::new(
            path,
            format!("invalid label key {k:?} (expected [dns-prefix/]name, name of at most 63 alphanumerics, '-', '_', '.')"),
        ));
    }
}

pub(crate) fn check_label_value(v: &str, path: &str, errs: &mut Vec<FieldError>) {
    if !valid_label_value(v) {
        errs.push(FieldError::new(
            path,
            format!("invalid label value {v:?} (at most 63 alphanumerics, '-', '_', '.', alphanumeric at both ends)"),
        ));
    }
}

/// An IANA service name, as named ports must be: 1-15 lowercase alphanumerics and `-`,
/// at least one letter, no `-` at either end and no `--`.
pub(crate) fn valid_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn sel(ml: &[(&str, &str)], me: Vec<LabelSelectorRequirement>) -> Selector {
        let s = LabelSelector {
            match_labels: (!ml.is_empty()).then(|| labels(ml)),
            match_expressions: (!me.is_empty()).then_some(me),
        };
        let mut errs = vec![];
        let r = compile_selector(Some(&s), "sel", &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        r.unwrap()
    }

    #[test]
    fn empty_and_absent_selectors_match_everything() {
        let mut errs = vec![];
        let absent = compile_selector(None, "x", &mut errs).unwrap();
        let empty = compile_selector(Some(&LabelSelector::default()), "x", &mut errs).unwrap();
        for s in [absent, empty] {
            assert!(s.matches(&labels(&[])));
            assert!(s.matches(&labels(&[("a", "b")])));
        }
    }

    #[test]
    fn match_labels_need_every_pair() {
        let s = sel(&[("app", "web"), ("tier", "fe")], vec![]);
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "be")])));
    }

    #[test]
    fn expressions_follow_kubernetes_semantics() {
        let vals: &[&str] = &["a", "b"];
        let in_ = sel(&[], vec![expr("k", "In", Some(vals))]);
        assert!(in_.matches(&labels(&[("k", "a")])));
        assert!(!in_.matches(&labels(&[("k", "c")])));
        assert!(!in_.matches(&labels(&[])));

        let notin = sel(&[], vec![expr("k", "NotIn", Some(vals))]);
        assert!(!notin.matches(&labels(&[("k", "a")])));
        assert!(notin.matches(&labels(&[("k", "c")])));
        assert!(notin.matches(&labels(&[])), "NotIn matches a missing key");

        let exists = sel(&[], vec![expr("k", "Exists", None)]);
        assert!(exists.matches(&labels(&[("k", "")])));
        assert!(!exists.matches(&labels(&[("j", "a")])));

        let dne = sel(&[], vec![expr("k", "DoesNotExist", None)]);
        assert!(!dne.matches(&labels(&[("k", "a")])));
        assert!(dne.matches(&labels(&[("j", "a")])));

        let both = sel(&[("app", "x")], vec![expr("k", "Exists", None)]);
        assert!(both.matches(&labels(&[("app", "x"), ("k", "1")])));
        assert!(!both.matches(&labels(&[("app", "x")])));
    }

    #[test]
    fn many_values_use_the_sorted_lookup() {
        let vals: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
        let refs: Vec<&str> = vals.iter().map(String::as_str).collect();
        let s = sel(&[], vec![expr("k", "In", Some(&refs))]);
        for v in &vals {
            assert!(s.matches(&labels(&[("k", v)])));
        }
        assert!(!s.matches(&labels(&[("k", "v20")])));
    }

    #[test]
    fn bad_selectors_are_errors_with_paths() {
        let cases: Vec<(LabelSelectorRequirement, &str)> = vec![
            (
                expr("k", "Has", Some(&["a"])),
                "sel.matchExpressions[0].operator",
            ),
            (expr("k", "In", Some(&[])), "sel.matchExpressions[0].values"),
            (expr("k", "NotIn", None), "sel.matchExpressions[0].values"),
            (
                expr("k", "Exists", Some(&["a"])),
                "sel.matchExpressions[0].values",
            ),
            (
                expr("k", "DoesNotExist", Some(&["a"])),
                "sel.matchExpressions[0].values",
            ),
            (
                expr("bad key!", "Exists", None),
                "sel.matchExpressions[0].key",
            ),
        ];
        for (e, field) in cases {
            let s = LabelSelector {
                match_expressions: Some(vec![e.clone()]),
                ..Default::default()
            };
            let mut errs = vec![];
            assert!(
                compile_selector(Some(&s), "sel", &mut errs).is_none(),
                "{e:?}"
            );
            assert_eq!(errs[0].field, field, "{e:?}");
        }
    }

    #[test]
    fn name_rules() {
        assert!(valid_label_key("app"));
        assert!(valid_label_key("kubernetes.io/metadata.name"));
        assert!(!valid_label_key("Bad.Prefix/x"));
        assert!(!valid_label_key("a/"));
        assert!(!valid_label_key(""));
        assert!(valid_label_value(""));
        assert!(valid_label_value("a.b-c_d"));
        assert!(!valid_label_value("-a"));
        assert!(!valid_label_value(&"a".repeat(64)));
        assert!(valid_port_name("serve-80-tcp"));
        assert!(!valid_port_name("80"));
        assert!(!valid_port_name("Serve"));
        assert!(!valid_port_name("a--b"));
        assert!(!valid_port_name("a-very-long-port-name"));
    }
}
