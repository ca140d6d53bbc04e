#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, generated at fuzz time from real binlog files (never
committed copies): whole files for decode_file, (TABLE_MAP, rows event) pairs for rows_event,
PREVIOUS_GTIDS bodies and GTID texts for gtid_set, position and config texts for
position_config.

Usage: make.py CORPUS_DIR BINLOG...
"""
import hashlib
import os
import shutil
import struct
import sys

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


def put(directory, content):
    os.makedirs(directory, exist_ok=True)
    name = hashlib.sha1(content).hexdigest()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(content)


def main():
    corpus, binlogs = sys.argv[1], sys.argv[2:]
    for path in binlogs:
        with open(path, "rb") as f:
            data = f.read()
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
