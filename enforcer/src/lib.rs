//! trireme-enforcer: per-pod NFQUEUE handshake authorisation.
//!
//! Pure logic (no I/O, unit-tested): `packet` (marker option + token payload add/strip,
//! checksums), `flow` (bounded flow table), `handshake` (the protocol state machine).
//! Thin glue around it: `netns`, `rules` (iptables-restore), `queue` (NFQUEUE loop),
//! `control` (unix control socket + client), `metrics`.

pub mod control;
pub mod error;
pub mod flow;
pub mod handshake;
pub mod metrics;
pub mod netns;
pub mod packet;
pub mod queue;
pub mod rules;

pub use error::{Error, Result};
