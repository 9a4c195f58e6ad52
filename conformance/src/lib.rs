//! trireme-conformance: what the end-to-end suites stand on.
//!
//! - [`cni`]: a small CNI runtime doing what libcni does (conflists, prevResult chaining,
//!   result cache, DEL in reverse, CHECK, GC, STATUS, CNI_ARGS, capability args).
//! - [`sandbox`]: named network namespaces and host links with Drop guards, running code or
//!   commands inside a namespace, unique names, root checks, binaries of this workspace.
//! - [`probe`]: real TCP servers and probes between namespaces.
//! - [`cluster`]: a sandbox cluster of namespace pods (bridge + host-local + trireme) with
//!   policies, Service VIPs and the Kubernetes-node host set-up; [`matrix`]: probed
//!   reachability matrices compared with the policy engine's, printed as upstream does.

pub mod bench;
pub mod cluster;
pub mod cni;
pub mod matrix;
pub mod probe;
pub mod sandbox;

pub use cni::{CniRuntime, NetworkConfigList, PluginError, RuntimeConf};
pub use probe::{probe, TcpServer};
pub use sandbox::{require_root, unique_name, workspace_bin, HostLink, Netns, Pod};
