"""scripts/flink-check's two halves: the workload (SQL on stdout), and Flink SQL reading each
format's dump back into a table compared with MariaDB's (written as JSON lines by the script).

Flink applies the changelog itself (its debezium-json, maxwell-json and canal-json formats turn
each event into +I/-U/+U/-D rows); this script only collects those rows into the final multiset.
"""

import base64
import collections
import datetime
import decimal
import json
import random
import sys

COLUMNS = """id INT, name STRING, price DECIMAL(12,2), qty INT, big DECIMAL(20,0), ratio DOUBLE,
  born DATE, updated TIMESTAMP(3), seen TIMESTAMP(6), t TIME(0), data BYTES, note STRING"""


def workload(ops):
    rnd = random.Random(11)
    out = ["SET time_zone = '+00:00';", "CREATE DATABASE flink;",
           "CREATE TABLE flink.items (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL, price DECIMAL(12,2),"
           " qty INT, big BIGINT UNSIGNED, ratio DOUBLE, born DATE, updated DATETIME(3), seen TIMESTAMP(6) NULL,"
           " t TIME, data VARBINARY(16), note TEXT) CHARACTER SET utf8mb4;"]
    names = ["plain", "Zoë", "ü ß", "😀 emoji", "quote '' and \\\\ backslash", 'dq " x', "tab\\tnewline\\n"]

    def maybe(v):
        return "NULL" if rnd.random() < 0.15 else v

    def values(i):
        return ", ".join([
            str(i), "'%s'" % rnd.choice(names),
            maybe("%d.%02d" % (rnd.randint(-99999, 99999), rnd.randint(0, 99))),
            maybe(str(rnd.randint(-2**31, 2**31 - 1))),
            maybe(rnd.choice(["18446744073709551615", "0", str(rnd.randint(0, 2**63))])),
            maybe(str(rnd.randint(-1000, 1000) / 8)),
            maybe("'%04d-%02d-%02d'" % (rnd.randint(1000, 9999), rnd.randint(1, 12), rnd.randint(1, 28))),
            maybe("'%04d-%02d-%02d %02d:%02d:%02d.%03d'" % (rnd.randint(1900, 2100), rnd.randint(1, 12), rnd.randint(1, 28),
                                                           rnd.randint(0, 23), rnd.randint(0, 59), rnd.randint(0, 59), rnd.randint(0, 999))),
            maybe("'%04d-%02d-%02d %02d:%02d:%02d.%06d'" % (rnd.randint(1971, 2037), rnd.randint(1, 12), rnd.randint(1, 28),
                                                           rnd.randint(0, 23), rnd.randint(0, 59), rnd.randint(0, 59), rnd.randint(0, 999999))),
            maybe("'%02d:%02d:%02d'" % (rnd.randint(0, 23), rnd.randint(0, 59), rnd.randint(0, 59))),
            maybe("x'%s'" % bytes(rnd.randint(0, 255) for _ in range(rnd.randint(0, 16))).hex()),
            maybe("'%s'" % rnd.choice(names)),
        ])

    live = set()
    done = 0
    while done < ops:
        out.append("START TRANSACTION;")
        for _ in range(rnd.randint(1, 5)):
            i = rnd.randint(1, 80)
            r = rnd.random()
            if i not in live:
                out.append("INSERT INTO flink.items VALUES (%s);" % values(i))
                live.add(i)
            elif r < 0.45:
                row = values(i).split(", ", 2)
                out.append("UPDATE flink.items SET name = %s, qty = %s WHERE id = %d;"
                           % (row[1], maybe(str(rnd.randint(0, 1000))), i))
            elif r < 0.55:
                new = rnd.randint(81, 400)
                if new not in live:
                    out.append("UPDATE flink.items SET id = %d WHERE id = %d;" % (new, i))
                    live.discard(i)
                    live.add(new)
            elif r < 0.65:
                out.append("UPDATE flink.items SET price = price + 1, born = NULL WHERE id BETWEEN %d AND %d;" % (i, i + 10))
            else:
                out.append("DELETE FROM flink.items WHERE id = %d;" % i)
                live.discard(i)
            done += 1
        out.append("COMMIT;")
    print("\n".join(out))


def canonical_mariadb(row):
    """MariaDB's JSON_OBJECT row, in the Python types Flink returns."""
    def dt(v, fmt):
        return None if v is None else datetime.datetime.strptime(v, fmt)
    frac = lambda v: v if v is None or "." in v else v + ".0"
    return (
        row["id"], row["name"], row["price"], row["qty"], row["big"],
        None if row["ratio"] is None else float(row["ratio"]),
        None if row["born"] is None else datetime.date.fromisoformat(row["born"]),
        dt(frac(row["updated"]), "%Y-%m-%d %H:%M:%S.%f"),
        dt(frac(row["seen"]), "%Y-%m-%d %H:%M:%S.%f"),
        None if row["t"] is None else datetime.time.fromisoformat(row["t"]),
        None if row["data"] is None else base64.b64decode(row["data"]),
        row["note"],
    )


def canonical_flink(row):
    values = list(row)
    for ts in (7, 8):
        values[ts] = None if values[ts] is None else datetime.datetime.strptime(values[ts], "%Y-%m-%d %H:%M:%S.%f")
    values[10] = None if values[10] is None else bytes(values[10])
    return tuple(values)


def compare(work):
    from pyflink.common import RowKind
    from pyflink.table import EnvironmentSettings, TableEnvironment

    with open(f"{work}/expected.json") as f:
        expected = collections.Counter(canonical_mariadb(normalize(json.loads(line, parse_float=decimal.Decimal))) for line in f)
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    env.get_config().set("parallelism.default", "1")
    failed = False
    for fmt in ["debezium", "maxwell", "canal"]:
        env.execute_sql(f"""CREATE TABLE {fmt}_items ({COLUMNS}) WITH (
            'connector' = 'filesystem', 'path' = 'file://{work}/{fmt}', 'format' = '{fmt}-json')""")
        table = collections.Counter()
        changes = 0
        # PyFlink's collect() cuts timestamps to milliseconds: read them as Flink's own text.
        query = (f"SELECT id, name, price, qty, big, ratio, born, CAST(updated AS STRING), CAST(seen AS STRING), "
                 f"t, data, note FROM {fmt}_items")
        with env.execute_sql(query).collect() as rows:
            for r in rows:
                changes += 1
                key = canonical_flink(r)
                if r.get_row_kind() in (RowKind.INSERT, RowKind.UPDATE_AFTER):
                    table[key] += 1
                else:
                    table[key] -= 1
                    if table[key] == 0:
                        del table[key]
        negative = [k for k, n in table.items() if n < 0]
        missing = expected - table
        extra = table - expected
        verdict = "equal" if not (missing or extra or negative) else "DIFFERENT"
        print(f"{fmt}-json: Flink read {changes} changelog rows; final table {sum(table.values())} rows, "
              f"MariaDB {sum(expected.values())}: {verdict}")
        for what, rows in [("missing", missing), ("extra", extra)]:
            for k in list(rows)[:5]:
                print(f"  {what}: {k}")
        failed |= verdict != "equal"
    if failed:
        sys.exit(1)
    print("Flink reads every format into the MariaDB table")


def normalize(row):
    """JSON_OBJECT writes integers as numbers: keep them ints; DECIMAL stays Decimal."""
    for col in ("id", "qty"):
        if row[col] is not None:
            row[col] = int(row[col])
    if row["big"] is not None:
        row["big"] = decimal.Decimal(row["big"])
    return row


if __name__ == "__main__":
    if sys.argv[1] == "workload":
        workload(int(sys.argv[2]))
    else:
        compare(sys.argv[2])
