//! trireme-policy: pod identity and Kubernetes NetworkPolicy semantics.
//!
//! - [`Cluster`] loads NetworkPolicy, Namespace and Pod objects (YAML or JSON, files or
//!   directories) and validates them; a bad input is an error and nothing is loaded.
//! - [`Engine`] compiles policies once and answers [`Engine::ingress`] / [`Engine::egress`]
//!   with a [`Decision`] and its [`Reason`]. It does no I/O.

mod cluster;
mod engine;
mod error;
mod identity;
mod matrix;
mod selector;

pub use cluster::{Cluster, PodInfo};
pub use engine::{resolve_named_port, Decision, Direction, Engine, Peer, Reason};
pub use error::{FieldError, PolicyError};
pub use identity::{Identity, NamedPort, Protocol, NAMESPACE_NAME_LABEL};
/// The NetworkPolicy type the engine compiles (from k8s-openapi).
pub use k8s_openapi::api::networking::v1::NetworkPolicy;
pub use matrix::{parse_protocol, PairDecision, TruthTable};
