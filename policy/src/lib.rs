//! trireme-policy: pod identity and Kubernetes NetworkPolicy semantics.
//!
//! - [`Cluster`] loads NetworkPolicy, Namespace and Pod objects (YAML or JSON, files or
//!   directories) and validates them; a bad input is an error and nothing is loaded.
//! - [`Engine`] compiles policies once and answers [`Engine::ingress`] / [`Engine::egress`]
//!   with a [`Decision`] and its [`Reason`]. It does no I/O.
//!
//! ```
//! use trireme_policy::{Cluster, Peer, Protocol};
//!
//! let cluster = Cluster::parse_str("example.yaml", r#"
//! apiVersion: networking.k8s.io/v1
//! kind: NetworkPolicy
//! metadata: {name: db, namespace: shop}
//! spec:
//!   podSelector: {matchLabels: {tier: db}}
//!   ingress:
//!   - from: [{podSelector: {matchLabels: {tier: backend}}}]
//!     ports: [{port: 5432}]
//! ---
//! apiVersion: v1
//! kind: Pod
//! metadata: {name: db-0, namespace: shop, labels: {tier: db}}
//! ---
//! apiVersion: v1
//! kind: Pod
//! metadata: {name: web-0, namespace: shop, labels: {tier: frontend}}
//! "#).unwrap();
//! let engine = cluster.engine();
//! let db = cluster.identity_of("shop", "db-0").unwrap();
//! let web = cluster.identity_of("shop", "web-0").unwrap();
//! let d = engine.ingress(&db, &Peer::Pod { identity: &web, ip: None }, 5432, Protocol::Tcp);
//! assert!(!d.allowed);
//! assert_eq!(d.reason.to_string(), "isolated by shop/db; no rule matched");
//! ```

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
