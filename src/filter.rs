//! Table, operation and column filters, decided once per table map.
//!
//! Invariants: a table is in the output if it matches an `--include` pattern (or there are none)
//! and no `--exclude` pattern — exclude wins. The decision is taken when the TABLE_MAP arrives,
//! so rows of excluded tables and excluded operations are skipped without being decoded.
//! Dropped columns never reach any sink.

use anyhow::{bail, Result};

use crate::event::Op;

/// A `db.table` pattern with `*` and `?` wildcards in each part; `db` alone means every table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    db: String,
    table: String,
}

impl TablePattern {
    pub fn parse(text: &str) -> Result<TablePattern> {
        let (db, table) = text.split_once('.').unwrap_or((text, "*"));
        if db.is_empty() || table.is_empty() {
            bail!("`{text}` is not a table pattern: use db.table, with * and ? wildcards (e.g. shop.*, *.audit_*)");
        }
        only_our_wildcards(text)?;
        Ok(TablePattern { db: db.to_string(), table: table.to_string() })
    }

    pub fn matches(&self, db: &str, table: &str) -> bool {
        glob(&self.db, db) && glob(&self.table, table)
    }

    /// The database, if the pattern names exactly one (no wildcard in it).
    pub fn exact_db(&self) -> Option<&str> {
        (!self.db.contains(['*', '?'])).then_some(self.db.as_str())
    }

    /// The table, if the pattern names exactly one.
    pub fn exact_table(&self) -> Option<(&str, &str)> {
        self.exact_db().filter(|_| !self.table.contains(['*', '?'])).map(|db| (db, self.table.as_str()))
    }
}

/// A `db.table.column` pattern (wildcards allowed in each part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPattern {
    table: TablePattern,
    column: String,
}

impl ColumnPattern {
    pub fn parse(text: &str) -> Result<ColumnPattern> {
        let parts: Vec<&str> = text.splitn(3, '.').collect();
        let [db, table, column] = parts.as_slice() else {
            bail!("`{text}` is not a column pattern: use db.table.column (e.g. shop.users.password_hash)");
        };
        if column.is_empty() {
            bail!("`{text}` names no column");
        }
        only_our_wildcards(text)?;
        Ok(ColumnPattern { table: TablePattern::parse(&format!("{db}.{table}"))?, column: column.to_string() })
    }
}

/// Other tools read `[...]` as a class and `{a,b}` as alternatives; taken literally here they
/// would silently match nothing, so they are refused.
fn only_our_wildcards(text: &str) -> Result<()> {
    match text.chars().find(|c| "[]{}".contains(*c)) {
        Some(c) => bail!(
            "`{text}`: `{c}` is not pattern syntax here; patterns know only * (any run of characters) and ? (one character), e.g. shop.order_*"
        ),
        None => Ok(()),
    }
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub include: Vec<TablePattern>,
    pub exclude: Vec<TablePattern>,
    /// Operations to emit; empty means all.
    pub ops: Vec<Op>,
    pub drop_columns: Vec<ColumnPattern>,
}

impl Filter {
    pub fn includes_table(&self, db: &str, table: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(db, table)))
            && !self.exclude.iter().any(|p| p.matches(db, table))
    }

    /// For statements (DDL), which name a database but no table map: the database is wanted if
    /// an include pattern names it (or there are none).
    pub fn includes_db(&self, db: &str) -> bool {
        self.include.is_empty() || self.include.iter().any(|p| glob(&p.db, db))
    }

    pub fn includes_op(&self, op: Op) -> bool {
        self.ops.is_empty() || self.ops.contains(&op)
    }

    pub fn drops_column(&self, db: &str, table: &str, column: &str) -> bool {
        self.drop_columns.iter().any(|p| p.table.matches(db, table) && glob(&p.column, column))
    }
}

pub fn parse_ops(text: &str) -> Result<Vec<Op>> {
    text.split(',')
        .map(|o| match o.trim() {
            "insert" => Ok(Op::Insert),
            "update" => Ok(Op::Update),
            "delete" => Ok(Op::Delete),
            "read" => Ok(Op::Read),
            other => bail!("`{other}` is not an operation: use insert, update, delete, read (comma-separated)"),
        })
        .collect()
}

/// Wildcard match: `*` any run of characters, `?` any one character; case-sensitive, like
/// MySQL names on Linux.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("audit_*", "audit_log"));
        assert!(!glob("audit_*", "x_audit_log"));
        assert!(glob("*_log", "audit_log"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*a*b*", "xxaxxbxx"));
    }

    #[test]
    fn exact_names() {
        let p = |t: &str| TablePattern::parse(t).unwrap();
        assert_eq!(p("shop.orders").exact_table(), Some(("shop", "orders")));
        assert_eq!((p("shop.order_*").exact_table(), p("shop.order_*").exact_db()), (None, Some("shop")));
        assert_eq!((p("crm").exact_table(), p("crm").exact_db()), (None, Some("crm")));
        assert_eq!((p("s?op.orders").exact_table(), p("*.orders").exact_db()), (None, None));
    }

    #[test]
    fn include_exclude_exclude_wins() {
        let f = Filter {
            include: vec![TablePattern::parse("shop.*").unwrap(), TablePattern::parse("crm").unwrap()],
            exclude: vec![TablePattern::parse("*.audit_*").unwrap()],
            ..Filter::default()
        };
        assert!(f.includes_table("shop", "orders"));
        assert!(f.includes_table("crm", "contacts"));
        assert!(!f.includes_table("shop", "audit_orders"));
        assert!(!f.includes_table("other", "orders"));
        assert!(Filter::default().includes_table("any", "thing"));
    }

    #[test]
    fn columns_and_ops() {
        let f = Filter {
            drop_columns: vec![ColumnPattern::parse("shop.users.password_*").unwrap()],
            ops: parse_ops("insert,delete").unwrap(),
            ..Filter::default()
        };
        assert!(f.drops_column("shop", "users", "password_hash"));
        assert!(!f.drops_column("shop", "users", "email"));
        assert!(!f.drops_column("shop", "admins", "password_hash"));
        assert!(f.includes_op(Op::Insert) && !f.includes_op(Op::Update));
        assert!(parse_ops("insert,upsert").is_err());
        assert!(ColumnPattern::parse("shop.users").is_err());
        assert!(TablePattern::parse(".x").is_err());
        for bad in ["[", "shop.[ab]*", "shop.{a,b}"] {
            assert!(TablePattern::parse(bad).is_err(), "{bad}");
        }
        assert!(ColumnPattern::parse("shop.users.[x]").is_err());
    }
}
