//! MySQL's TRANSACTION_PAYLOAD event (binlog_transaction_compression=ON): a header of typed
//! fields, then the transaction's events, compressed with zstd or stored as they are.
//!
//! Invariants: parsed here rather than by mysql_common, whose parser panics on an unknown
//! compression type and on field lengths beyond the event; every length is checked against the
//! bytes of the event, and decompression never produces more than the declared size (plus one
//! byte, to notice a payload that lies about it).

use std::io::Read;

use anyhow::{bail, Context, Result};

use super::value::Cursor;

/// Header field types.
const END_MARK: u64 = 0;
const PAYLOAD_SIZE: u64 = 1;
const COMPRESSION_TYPE: u64 = 2;
const UNCOMPRESSED_SIZE: u64 = 3;

/// Compression types.
const ZSTD: u64 = 0;
const NONE: u64 = 255;

pub struct Payload<'a> {
    zstd: bool,
    /// What the events decompress to, as the header declares it.
    pub uncompressed_size: u64,
    compressed: &'a [u8],
}

impl<'a> Payload<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Payload<'a>> {
        let mut cur = Cursor::new(body);
        let (mut size, mut compression, mut uncompressed) = (None, None, None);
        loop {
            let field = cur.lenenc().context("transaction payload header")?;
            if field == END_MARK {
                break;
            }
            let len = cur.lenenc()?;
            let raw = cur.take(usize::try_from(len)?).context("transaction payload header field")?;
            let value = || Cursor::new(raw).lenenc().context("transaction payload header field");
            match field {
                PAYLOAD_SIZE => size = Some(value()?),
                COMPRESSION_TYPE => compression = Some(value()?),
                UNCOMPRESSED_SIZE => uncompressed = Some(value()?),
                _ => {} // fields of later servers, skipped by length
            }
        }
        let rest = &body[cur.pos..];
        let size = size.context("the transaction payload header has no payload size")?;
        if size != rest.len() as u64 {
            bail!("the transaction payload declares {size} bytes but holds {}", rest.len());
        }
        let zstd = match compression.context("the transaction payload header has no compression type")? {
            ZSTD => true,
            NONE => false,
            other => bail!("the transaction payload uses compression type {other}, which binlog-tail does not know (zstd and none are)"),
        };
        let uncompressed_size = match (zstd, uncompressed) {
            (_, Some(n)) => n,
            (false, None) => size,
            (true, None) => bail!("the compressed transaction payload does not declare its uncompressed size"),
        };
        Ok(Payload { zstd, uncompressed_size, compressed: rest })
    }

    /// The events, decompressed as they are read; at most the declared size plus one byte.
    pub fn events(&self) -> Result<Box<dyn Read + 'a>> {
        let limit = self.uncompressed_size.saturating_add(1);
        Ok(if self.zstd {
            let decoder = zstd::stream::read::Decoder::with_buffer(self.compressed)
                .context("cannot start decompressing the transaction payload")?;
            Box::new(decoder.take(limit))
        } else {
            Box::new(self.compressed.take(limit))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(fields: &[(u64, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(field, value) in fields {
            // Values up to 250 take one byte as length-encoded integers, up to 65535 three.
            let encoded = if value < 251 { vec![value as u8] } else { vec![0xfc, value as u8, (value >> 8) as u8] };
            out.extend([field as u8, encoded.len() as u8]);
            out.extend(encoded);
        }
        out.push(0);
        out
    }

    #[test]
    fn stored_payload() {
        let mut body = header(&[(COMPRESSION_TYPE, NONE), (PAYLOAD_SIZE, 3)]);
        body.extend(b"abc");
        let p = Payload::parse(&body).unwrap();
        let mut out = Vec::new();
        p.events().unwrap().read_to_end(&mut out).unwrap();
        assert_eq!((p.uncompressed_size, &out[..]), (3, &b"abc"[..]));
    }

    #[test]
    fn lies_are_errors() {
        let unknown = header(&[(COMPRESSION_TYPE, 7), (PAYLOAD_SIZE, 0)]);
        let err = Payload::parse(&unknown).err().unwrap().to_string();
        assert!(err.contains("compression type 7"), "{err}");
        let mut long = header(&[(COMPRESSION_TYPE, NONE), (PAYLOAD_SIZE, 200)]);
        long.extend(b"abc");
        let err = Payload::parse(&long).err().unwrap().to_string();
        assert!(err.contains("declares 200 bytes but holds 3"), "{err}");
        // A field whose length runs past the event.
        let err = Payload::parse(&[9, 0xfc, 0xff, 0xff]).err().unwrap();
        assert!(format!("{err:#}").contains("header field"), "{err:#}");
    }
}
