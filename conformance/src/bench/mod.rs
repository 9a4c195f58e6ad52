//! Building blocks of the side-by-side benchmarks (`conformance/benches/side_by_side.rs`):
//! [`stats`] (pure: summaries, ratios, targets, the table) and [`load`] (real TCP
//! workloads, a worker thread inside a namespace, process RSS).

pub mod load;
pub mod stats;

pub use load::{
    bulk, connect_echo, cpu_time, echo_handler, rate, rss_kib, sink_handler, NsWorker, Server,
};
pub use stats::{render, Bound, Row, Single, Summary, Target};
