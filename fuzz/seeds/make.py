#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, generated at fuzz time from real binlog files (never
committed copies): whole files for decode_file, (TABLE_MAP, rows event) pairs for rows_event,
PREVIOUS_GTIDS bodies and GTID texts for gtid_set, position and config texts for
position_config. One binlog is built here: a MySQL JSON column holding every opaque type (the
sample files hold none, and mutation alone did not reach them in a million executions).

Usage: make.py CORPUS_DIR BINLOG...
"""
import hashlib
import os
import shutil
import struct
import sys
import zlib

HEADER = 19
FDE, TABLE_MAP, PREVIOUS_GTIDS = 15, 19, 35
ROWS = {23: 0, 24: 1, 25: 2, 30: 3, 31: 4, 32: 5, 39: 6}  # type -> selector in rows_event


def events(data):
    """(type, body) of each event, checksums stripped as the FDE announces them."""
    at, crc = 4, False
    while at + HEADER <= len(data):
        size = struct.unpack_from("<I", data, at + 9)[0]
        if size < HEADER or at + size > len(data):
            return
        full = data[at:at + size]
        kind = full[4]
        body = full[HEADER:]
        if kind == FDE:
            version = body[2:52].split(b"\0")[0].decode(errors="replace")
            nums = [int(n) if n.isdigit() else 0 for n in version.split("-")[0].split(".")[:3]]
            if nums >= [5, 6, 1] and len(body) >= 61:
                crc = body[-5] == 1
                body = body[:-5]
        elif crc:
            body = body[:-4]
        yield kind, body
        at += size


def read(path):
    with open(path, "rb") as f:
        return f.read()


def put(directory, content):
    os.makedirs(directory, exist_ok=True)
    name = hashlib.sha1(content).hexdigest()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(content)


def varlen(n):
    """Binary JSON's variable-length integer: 7 bits per byte, low bits first."""
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def opaque(field_type, value):
    """A binary JSON opaque value: a MySQL column type and that type's binary form."""
    return bytes([0x0F, field_type]) + varlen(len(value)) + value


def small_array(values):
    """A binary JSON small array of (type byte + data) values, none inlined."""
    header = 4 + 3 * len(values)
    entries, tail = b"", b""
    for value in values:
        entries += bytes([value[0]]) + struct.pack("<H", header + len(tail))
        tail += value[1:]
    return bytes([2]) + struct.pack("<HH", len(values), header + len(tail)) + entries + tail


def json_opaques():
    """One binary JSON document per opaque type MySQL writes, then an array of all of them."""
    ymd = ((2024 * 13 + 2) << 5) | 29
    hms = (12 << 12) | (34 << 6) | 56
    datetime = struct.pack("<q", (((ymd << 17) | hms) << 24) | 500000)
    positive = bytes([0x80, 0x04, 0xD2, 0x16, 0x2E])  # DECIMAL(10,4) 1234.5678
    values = [
        opaque(246, bytes([10, 4]) + positive),  # NEWDECIMAL
        opaque(246, bytes([10, 4]) + bytes(b ^ 0xFF for b in positive)),  # -1234.5678
        opaque(246, bytes([65, 30, 0x80]) + bytes(29)),  # DECIMAL(65,30) zero: 30 bytes
        opaque(10, struct.pack("<q", (ymd << 17) << 24)),  # DATE
        opaque(11, struct.pack("<q", -((hms << 24) | 500000))),  # TIME, negative
        opaque(12, datetime),  # DATETIME
        opaque(7, datetime),  # TIMESTAMP
        opaque(13, b"\x7c"),  # YEAR
        opaque(16, b"\x01\x02"),  # BIT
        opaque(15, b"varchar"),  # VARCHAR (a binary string)
        opaque(253, b"var_string"),  # VAR_STRING
        opaque(254, b"string"),  # STRING
        opaque(252, bytes(range(200))),  # BLOB, a 2-byte length
        opaque(249, b"tiny"),  # TINY_BLOB
        opaque(250, b"medium"),  # MEDIUM_BLOB
        opaque(251, b"long"),  # LONG_BLOB
        opaque(255, bytes(25)),  # GEOMETRY
    ]
    return values + [small_array(values)]


def mysql_json_binlog(docs):
    """A MySQL 8.0 binlog (CRC32 checksums) of one WRITE_ROWS_V2 event, one row per binary JSON
    document in a table of one JSON column."""
    out = bytearray(b"\xfebin")

    def event(kind, body):
        size, start = HEADER + len(body) + 4, len(out)
        out.extend(struct.pack("<IBIIIH", 1, kind, 1, size, start + size, 0) + body)
        out.extend(struct.pack("<I", zlib.crc32(out[start:])))

    fde = (b"\x04\x00" + b"8.0.36").ljust(56, b"\0") + bytes([HEADER])
    # MySQL 8.0's post-header lengths, by event type from 1; then the checksum algorithm, CRC32.
    fde += bytes([0, 13, 0, 8, 0, 0, 0, 0, 4, 0, 4, 0, 0, 0, 97, 0, 4, 26, 8, 0, 0, 0, 8, 8, 8, 2, 0, 0, 0, 10,
                  10, 10, 42, 42, 0, 18, 52, 0, 10, 40, 1])
    event(FDE, fde)
    event(TABLE_MAP, bytes([7, 0, 0, 0, 0, 0, 1, 0, 2]) + b"db\0" + bytes([1]) + b"t\0" + bytes([1, 0xF5, 1, 4, 1]))
    rows = bytes([7, 0, 0, 0, 0, 0, 1, 0, 2, 0, 1, 1])  # table, flags, extra data, 1 column, present
    for doc in docs:
        rows += b"\0" + struct.pack("<I", len(doc)) + doc  # null bitmap, JSON length, JSON
    event(30, rows)
    event(16, struct.pack("<Q", 1))  # XID
    return bytes(out)


def main():
    corpus, binlogs = sys.argv[1], sys.argv[2:]
    built = [mysql_json_binlog(json_opaques())]
    for data in [read(path) for path in binlogs] + built:
        if not data.startswith(b"\xfebin"):
            continue
        put(f"{corpus}/decode_file", data)
        table_map = None
        for kind, body in events(data):
            if kind == TABLE_MAP:
                table_map = body
            elif kind in ROWS and table_map is not None:
                put(f"{corpus}/rows_event", bytes([ROWS[kind]]) + struct.pack("<H", len(table_map)) + table_map + body)
            elif kind == PREVIOUS_GTIDS:
                put(f"{corpus}/gtid_set", body)
    for text in [
        "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7,8a94f357-aab4-11df-86ab-c80aa9429563:tag_1:1-3",
        "0-1-100,1-2-5",
        "binlog.000003:1234",
        "earliest",
    ]:
        put(f"{corpus}/gtid_set", text.encode())
    position = ('{"version":1,"flavor":"mariadb","gtid_set":"0-1-42","file":"binlog.000001",'
                '"offset":1234,"server":{"uuid":null,"server_id":1,"hostname":"db"},'
                '"updated_at":"2026-01-01T00:00:00Z"}')
    config = "\n".join([
        'url = "mysql://repl@db:3306"', 'position_file = "/var/lib/pos.json"', 'sink = "stdout"',
        'checkpoint_every = 1000', 'checkpoint_interval = 1.0', 'resume_by = "gtid"',
        'start = "0-1-5"', 'include = ["shop.*"]', 'exclude = ["*.audit_?"]', 'ops = "insert,update"',
        'drop_columns = ["shop.users.password"]', '[kafka]', '"security.protocol" = "SSL"',
        '[[outbox]]', 'table = "shop.outbox"', 'topic = "events.{aggregate_type}"', '',
    ])
    put(f"{corpus}/position_config", position.encode())
    put(f"{corpus}/position_config", config.encode())


if __name__ == "__main__":
    main()
