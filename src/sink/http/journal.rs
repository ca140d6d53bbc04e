//! The HTTP sink's journal: a file beside the position file (`POSITION.http`) that says how far
//! the receiver has acknowledged, and holds the batch in flight (its key and its exact body).
//!
//! Invariants:
//! - Replaced atomically and durably (`checkpoint::file::replace`): a crash leaves the old or the
//!   new version.
//! - Written before the batch it holds is sent (by the delivery task, so the reader goes on
//!   meanwhile), and before an acknowledgement it records is reported to the checkpoint: the
//!   saved position is never past what the journal covers.
//! - The body stored is byte for byte the body sent; its length is checked when read back.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::position::Resume;
use crate::sink::LastRead;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The stream (`order::stream_name`) whose batches these are.
    pub stream: String,
    pub acked: Option<Acked>,
    pub in_flight: Option<InFlight>,
}

/// How far the receiver acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acked {
    /// The id of the last event acknowledged that is not a snapshot read (empty: none).
    pub last: String,
    /// That event's transaction is acknowledged whole (the batch did not end inside it).
    pub complete: bool,
    /// Where the acknowledged transactions end (`file:offset`), when any is.
    pub place: Option<Place>,
    /// The last snapshot read acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<LastRead>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Place {
    pub file: String,
    pub offset: u64,
}

impl Place {
    pub fn of(resume: &Resume) -> Place {
        Place { file: resume.file.to_string(), offset: resume.offset }
    }

    pub fn is(&self, file: &str, offset: u64) -> bool {
        self.file == file && self.offset == offset
    }
}

/// The batch sent and not yet known to be acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InFlight {
    pub key: String,
    pub rows: usize,
    /// The id of its last event that is not a snapshot read (empty: none).
    pub last: String,
    /// Its last snapshot read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<LastRead>,
    /// It ends at a transaction's end.
    pub complete: bool,
    /// Where the last transaction it completes ends.
    pub place: Option<Place>,
    /// Bytes of the body that follows the state in the file.
    pub bytes: usize,
}

#[derive(Clone)]
pub struct Journal {
    path: PathBuf,
}

/// The state as the journal's first line.
pub fn head(state: &State) -> Vec<u8> {
    let mut head = serde_json::to_vec(state).expect("a state serializes");
    head.push(b'\n');
    head
}

impl Journal {
    /// The journal of the position file at `position`.
    pub fn beside(position: &Path) -> Journal {
        let mut name = position.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".http");
        Journal { path: position.with_file_name(name) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state and the in-flight body; None when there is no journal.
    pub fn load(&self) -> Result<Option<(State, Bytes)>> {
        let data = match std::fs::read(&self.path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", self.path.display())),
        };
        let corrupt = || {
            format!(
                "the HTTP sink's journal {} is damaged: remove it to go on (the batch it held may then reach the receiver twice, under two keys)",
                self.path.display()
            )
        };
        let split = data.iter().position(|&b| b == b'\n').with_context(corrupt)?;
        let state: State = serde_json::from_slice(&data[..split]).with_context(corrupt)?;
        let body = Bytes::copy_from_slice(&data[split + 1..]);
        if body.len() != state.in_flight.as_ref().map_or(0, |f| f.bytes) {
            bail!(corrupt());
        }
        Ok(Some((state, body)))
    }

    /// Replaces the journal with `head` (a state's) and `body`.
    pub fn save(&self, head: &[u8], body: &[u8]) -> Result<()> {
        crate::checkpoint::file::replace(&self.path, &[head, body])
            .with_context(|| format!("cannot write the HTTP sink's journal {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_batch_reads_back_byte_for_byte_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::beside(&dir.path().join("position.json"));
        assert_eq!(journal.path(), dir.path().join("position.json.http"));
        assert!(journal.load().unwrap().is_none());
        let body = b"{\"a\":1}\n{\"b\":\"\\n\"}\n";
        let state = State {
            stream: "s".into(),
            acked: Some(Acked {
                last: "0-1-2/0".into(),
                complete: true,
                place: Some(Place { file: "b.000001".into(), offset: 9 }),
                read: None,
            }),
            in_flight: Some(InFlight {
                key: "s/0-1-3/0..0-1-3/1".into(),
                rows: 2,
                last: "0-1-3/1".into(),
                read: None,
                complete: true,
                place: None,
                bytes: body.len(),
            }),
        };
        journal.save(&head(&state), body).unwrap();
        let (read, read_body) = journal.load().unwrap().unwrap();
        assert_eq!((read, &read_body[..]), (state.clone(), &body[..]));
        journal.save(&head(&state), &body[1..]).unwrap();
        assert!(journal.load().unwrap_err().to_string().contains("is damaged"));
    }
}
