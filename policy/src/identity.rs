use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The label Kubernetes sets on every Namespace (and which trireme always sets).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Transport protocol of a port, as NetworkPolicy spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// A named container port of a pod (`containerPort` with `name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// What a pod is, independent of its address: this is what tokens carry and what
/// NetworkPolicy selectors are evaluated against.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Identity {
    /// Pod namespace name.
    pub namespace: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Labels of the pod's namespace; always contains `kubernetes.io/metadata.name`.
    pub namespace_labels: BTreeMap<String, String>,
    /// The pod's named container ports, used to resolve named ports in policies.
    pub ports: Vec<NamedPort>,
}

impl Protocol {
    /// `TCP`, `UDP` or `SCTP`, as NetworkPolicy spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
