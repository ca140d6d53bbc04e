//! Every column type, edge values included, written by a real MariaDB and compared with the
//! hand-written expectation in fixtures/types.expected.json.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::util::{in_db, ok_events, root, MariaDb};

#[test]
fn every_type_decodes_to_the_expected_json() {
    let server = MariaDb::shared();
    let db = server.fresh_db("types_cov");
    let start = server.gtid_pos();
    let sql = std::fs::read_to_string(root().join("fixtures/types.sql")).unwrap();
    server.sql(&format!("USE {db};\n{sql}"));

    let events = in_db(ok_events(&server.dump(&["--start", &start])), &db);
    let expected: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(root().join("fixtures/types.expected.json")).unwrap()).unwrap();
    assert_eq!(events.len(), expected.len(), "events: {events:#?}");
    for (got, want) in events.iter().zip(&expected) {
        assert_eq!(got.table, "types");
        assert_eq!(json!(got.op), want["op"]);
        assert_eq!(json!(got.row), want["row"]);
        assert_eq!(json!(got.commit), want["commit"]);
        for image in ["before", "after"] {
            let got_image = if image == "before" { &got.before } else { &got.after };
            let got_image = serde_json::to_value(got_image).unwrap();
            if let (Some(g), Some(w)) = (got_image.as_object(), want[image].as_object()) {
                for (col, w) in w {
                    assert_eq!(g.get(col), Some(w), "{} row {}: column {col} of the {image} image", got.op, got.row);
                }
                assert_eq!(g.len(), w.len(), "{image} image has extra columns: {g:?}");
            } else {
                assert_eq!(got_image, want[image], "{image} image");
            }
        }
        let key_image = got.after.as_ref().or(got.before.as_ref()).unwrap();
        assert_eq!(got.pk.as_ref().unwrap()["id"], key_image["id"]);
        assert!(got.gtid.as_deref().is_some_and(|g| g.starts_with("0-1-")), "MariaDB GTID: {:?}", got.gtid);
        let (file, offset) = got.pos.rsplit_once(':').unwrap();
        assert!(file.starts_with("binlog.0") && offset.parse::<u64>().unwrap() >= 4, "pos {}", got.pos);
        assert_eq!(got.xid.is_some(), got.commit, "xid is known exactly on the commit row");
    }
    // The three inserts are one transaction; update and delete are one each.
    assert_eq!(events[0].gtid, events[2].gtid);
    assert_ne!(events[2].gtid, events[3].gtid);
}

#[test]
fn a_blob_over_one_mebibyte_arrives_whole() {
    let server = MariaDb::shared();
    let db = server.fresh_db("big_blob");
    let start = server.gtid_pos();
    server.sql(&format!(
        "CREATE TABLE {db}.b (id INT PRIMARY KEY, data LONGBLOB);
         INSERT INTO {db}.b VALUES (1, CONCAT(REPEAT('0123456789abcdef', 65536), 'tail'));"
    ));
    let events = in_db(ok_events(&server.dump(&["--start", &start])), &db);
    assert_eq!(events.len(), 1);
    let b64 = events[0].after.as_ref().unwrap()["data"].as_str().unwrap().to_string();
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    assert_eq!(bytes.len(), 1_048_576 + 4);
    assert!(bytes.starts_with(b"0123456789abcdef0123"));
    assert!(bytes.ends_with(b"cdeftail"));
}
