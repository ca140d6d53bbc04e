//! Column information from `information_schema`, for tables whose binlog metadata is MINIMAL
//! (the binlog then names no columns, and no enum or set values).

use std::time::Duration;

use anyhow::{bail, Result};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tokio::runtime::Handle;

use super::connection::connect;
use crate::decode::table::ColumnInfo;
use crate::decode::SchemaLookup;
use crate::text::Escaped;

/// `information_schema` lookups for tables whose binlog metadata is MINIMAL.
pub struct InfoSchema {
    rt: Handle,
    opts: Opts,
    conn: Option<Conn>,
}

impl InfoSchema {
    pub fn new(rt: Handle, opts: Opts) -> Self {
        InfoSchema { rt, opts, conn: None }
    }
}

impl SchemaLookup for InfoSchema {
    fn columns(&mut self, db: &str, table: &str) -> Result<Vec<ColumnInfo>> {
        let rows: Vec<(String, String, Option<String>, String, String)> = self.rt.block_on(async {
            if self.conn.is_none() {
                self.conn = Some(connect(&self.opts, Duration::ZERO).await?);
            }
            let conn = self.conn.as_mut().expect("just connected");
            let rows = conn
                .exec(
                    "SELECT COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME, COLUMN_KEY, DATA_TYPE FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                    (db, table),
                )
                .await?;
            Ok::<_, anyhow::Error>(rows)
        })?;
        if rows.is_empty() {
            bail!("`{db}`.`{table}` is not in information_schema (dropped since?), and the binlog has no column metadata: set binlog_row_metadata=FULL on the server", db = Escaped(db), table = Escaped(table));
        }
        Ok(rows
            .into_iter()
            .map(|(name, column_type, charset, key, data_type)| ColumnInfo {
                name,
                unsigned: column_type.contains("unsigned"),
                charset,
                values: enum_values(&column_type),
                is_pk: key == "PRI",
                data_type: data_type.to_ascii_lowercase(),
            })
            .collect())
    }
}

/// `enum('a','it''s')` -> ["a", "it's"]; None for other types.
fn enum_values(column_type: &str) -> Option<Vec<String>> {
    let inner = column_type.strip_prefix("enum(").or_else(|| column_type.strip_prefix("set("))?.strip_suffix(')')?;
    let mut values = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut v = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    v.push('\'');
                }
                '\'' => break,
                '\\' => v.extend(chars.next()),
                c => v.push(c),
            }
        }
        values.push(v);
    }
    Some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_values_from_column_type() {
        assert_eq!(enum_values("enum('a','it''s','b,c')").unwrap(), ["a", "it's", "b,c"]);
        assert_eq!(enum_values("set('x','y')").unwrap(), ["x", "y"]);
        assert_eq!(enum_values("int(10) unsigned"), None);
    }
}
