//! Operating binlog-tail: the metrics endpoint and probes, the poll of
//! how far behind the server reading is, `status`, log formats, completions and the man page.
//!
//! Invariants: nothing here changes what is emitted or when the position moves; the endpoint and
//! the poller run beside the pipeline and only read shared counters.

pub mod behind;
pub mod http;
pub mod logging;
pub mod manual;
pub mod status;
