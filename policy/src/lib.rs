//! trireme-policy: pod identity and Kubernetes NetworkPolicy semantics, free of I/O
//! except for reading policy files.

mod identity;

pub use identity::{Identity, NamedPort, Protocol, NAMESPACE_NAME_LABEL};
