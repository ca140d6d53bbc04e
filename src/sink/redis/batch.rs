//! A batch of entries as the arguments of one call of the writer's script, encoded once, as
//! Redis reads them (RESP bulk strings).
//!
//! Invariant: `args` holds, per entry, its key's number in the call's KEYS (2 and up; 1 is the
//! marker), its field count and its fields, in the order the entries were pushed.

use std::collections::HashMap;

use crate::position::Resume;

#[derive(Default)]
pub struct Batch {
    /// Sequence number of the batch in this run.
    pub n: u64,
    keys: Vec<String>,
    numbers: HashMap<String, usize>,
    args: Vec<u8>,
    count: usize,
    pub entries: usize,
    /// The end of the last transaction the batch completes.
    pub end: Option<Resume>,
    /// The marker's `through` once the batch is applied.
    pub through: String,
    /// The marker's `read` once the batch is applied (`sink::LastRead`, empty: none).
    pub read: String,
}

impl Batch {
    pub fn push(&mut self, key: &str, fields: &[(&[u8], &[u8])]) {
        let number = match self.numbers.get(key) {
            Some(&n) => n,
            None => {
                self.keys.push(key.to_string());
                self.numbers.insert(key.to_string(), self.keys.len() + 1);
                self.keys.len() + 1
            }
        };
        let mut digits = itoa::Buffer::new();
        bulk(&mut self.args, digits.format(number).as_bytes());
        bulk(&mut self.args, digits.format(fields.len()).as_bytes());
        for (name, value) in fields {
            bulk(&mut self.args, name);
            bulk(&mut self.args, value);
        }
        self.count += 2 + 2 * fields.len();
        self.entries += 1;
    }

    /// Bytes of the entries' arguments.
    pub fn bytes(&self) -> usize {
        self.args.len()
    }

    /// The call up to the entries: `EVALSHA sha numkeys marker keys... prev id through maxlen
    /// position read`.
    pub fn head(&self, sha: &str, marker: &str, [prev, id, maxlen, position]: [&str; 4]) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.keys.iter().map(|k| k.len() + 16).sum::<usize>());
        let total = 3 + 1 + self.keys.len() + 6 + self.count;
        out.push(b'*');
        out.extend_from_slice(itoa::Buffer::new().format(total).as_bytes());
        out.extend_from_slice(b"\r\n");
        bulk(&mut out, b"EVALSHA");
        bulk(&mut out, sha.as_bytes());
        bulk(&mut out, itoa::Buffer::new().format(1 + self.keys.len()).as_bytes());
        bulk(&mut out, marker.as_bytes());
        for key in &self.keys {
            bulk(&mut out, key.as_bytes());
        }
        for arg in [prev, id, &self.through, maxlen, position, &self.read] {
            bulk(&mut out, arg.as_bytes());
        }
        out
    }

    /// The entries' arguments, which follow `head`.
    pub fn args(&self) -> &[u8] {
        &self.args
    }
}

/// A RESP bulk string.
fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_one_evalsha_with_keys_numbered_once() {
        let mut b = Batch { through: "0-1-5/1".into(), read: "{}".into(), ..Batch::default() };
        b.push("s:a", &[(b"value", b"{}")]);
        b.push("s:b", &[(b"value", b"1"), (b"key", b"k")]);
        b.push("s:a", &[(b"value", b"2")]);
        let mut call = b.head("sha", "m", ["", "r:0", "", "p"]);
        call.extend_from_slice(b.args());
        let text = String::from_utf8(call).unwrap();
        let parts: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(parts[0], "*26");
        let args: Vec<&str> = parts[2..].iter().step_by(2).copied().collect();
        let expected = [
            "EVALSHA", "sha", "3", "m", "s:a", "s:b", "", "r:0", "0-1-5/1", "", "p", "{}", "2", "1", "value", "{}",
            "3", "2", "value", "1", "key", "k", "2", "1", "value", "2",
        ];
        assert_eq!(args, expected);
    }
}
