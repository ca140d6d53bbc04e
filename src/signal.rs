//! Signals: rows inserted into the signal table (`--signal-table`), in Debezium's format, that
//! ask the stream to start or stop an incremental snapshot.
//!
//! Invariants: only inserts are signals; a signal row is never emitted as a change event; a row
//! that is not a signal binlog-tail understands is logged and ignored, never fatal (a typo in
//! one row must not stop the stream).

use serde::Deserialize;

use crate::schema::{RowImage, Table};

/// The table's columns, as Debezium documents them:
/// `id VARCHAR(42) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT`.
pub const SIGNAL_TABLE_DDL: &str = "(id VARCHAR(42) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT)";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// `execute-snapshot`: snapshot these tables (db.table patterns) while streaming.
    Execute(Vec<String>),
    /// `stop-snapshot`: drop these tables from the running snapshot (all when empty).
    Stop(Vec<String>),
    /// `snapshot-window-open` / `snapshot-window-close`: the low and high watermarks binlog-tail
    /// writes around a chunk's read (the watermark method), named by their row id.
    Window { open: bool, id: String },
}

/// Signal types of the watermarks.
pub const WINDOW_OPEN: &str = "snapshot-window-open";
pub const WINDOW_CLOSE: &str = "snapshot-window-close";

#[derive(Debug, Default, Deserialize)]
struct Data {
    #[serde(rename = "data-collections", default)]
    collections: Vec<String>,
    /// Debezium's snapshot type; only `incremental` (the default) exists here.
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl Signal {
    /// The signal in an inserted row of the signal table, or why it is not one.
    pub fn from_row(table: &Table, row: &RowImage) -> Result<Signal, String> {
        let text = |name: &str| -> Option<String> {
            let col = table.columns.iter().position(|c| c.name == name)?;
            serde_json::from_slice::<Option<String>>(row.value(col)?).ok().flatten()
        };
        let id = text("id").unwrap_or_default();
        let kind = text("type").ok_or_else(|| format!("signal `{id}` has no `type`"))?;
        let data: Data = match text("data").filter(|d| !d.trim().is_empty()) {
            Some(d) => {
                serde_json::from_str(&d).map_err(|e| format!("signal `{id}`: `data` is not the expected JSON ({e})"))?
            }
            None => Data::default(),
        };
        if let Some(k) = data.kind.as_deref().filter(|k| !k.eq_ignore_ascii_case("incremental")) {
            return Err(format!("signal `{id}` asks for a `{k}` snapshot; only `incremental` is supported"));
        }
        match kind.as_str() {
            WINDOW_OPEN | WINDOW_CLOSE => return Ok(Signal::Window { open: kind == WINDOW_OPEN, id }),
            _ => {}
        }
        match kind.as_str() {
            "execute-snapshot" if data.collections.is_empty() => {
                Err(format!("signal `{id}` names no data-collections"))
            }
            "execute-snapshot" => Ok(Signal::Execute(data.collections)),
            "stop-snapshot" => Ok(Signal::Stop(data.collections)),
            other => {
                Err(format!("signal `{id}` has type `{other}`; binlog-tail knows execute-snapshot and stop-snapshot"))
            }
        }
    }
}
