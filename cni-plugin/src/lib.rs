//! trireme-cni: the chained CNI plugin `trireme` (CNI 1.1, accepting 0.4.0 and 1.0.0
//! configs) that starts and supervises one `trireme-enforcer` per pod attachment.
//!
//! Pure, unit-tested logic: [`env`] (CNI_* variables), [`conf`] (configuration, labels,
//! ports), [`result`] (prevResult), [`iptables::cleanup_script`], [`state`] ids and files.
//! Glue: [`netns`], [`process`], [`control`] (status client), [`supervisor`], [`commands`].

pub mod commands;
pub mod conf;
pub mod control;
pub mod env;
pub mod error;
pub mod iptables;
pub mod netns;
pub mod process;
pub mod result;
pub mod state;
pub mod supervisor;

pub use error::{Error, Result};
