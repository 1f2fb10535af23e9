"""Reads back what `strata export` wrote (tests/tests/export.rs) with DuckDB and pyarrow and
checks every row against the formula the test produced from.

Record i (0 <= i < N) went to partition i % P with
  key       b"k%07d" % i
  value     '{"i":I,"name":"nI%97","ratio":(I%8).5,"ok":true|false,"tag":"tag-I%1000-abcdefghijklmnopqrstuvwxyz"}'
  headers   seq = str(i); every odd i also odd = b"\\x01\\xff"; every i % 5 == 0 also nul = null
  timestamp BASE + i (ms)

Usage: export_check.py MODE FILE N P BASE [FIRST END]
  MODE parquet|jsonl|csv: the file holds exactly the records FIRST <= i < END (default 0..N)
  in partition then offset order; MODE types: the Parquet file of --value-format text has the
  columns of the schema with DuckDB's types.
Prints one line per check; exits non-zero with the first mismatch.
"""

import base64
import json
import sys

import duckdb
import pyarrow.parquet as pq

TAIL = "abcdefghijklmnopqrstuvwxyz"


def key(i):
    return b"k%07d" % i


def value(i):
    ok = "true" if i % 2 == 0 else "false"
    return (
        f'{{"i":{i},"name":"n{i % 97}","ratio":{i % 8}.5,"ok":{ok},'
        f'"tag":"tag-{i % 1000:04}-{TAIL}"}}'
    )


def headers(i):
    pairs = [("seq", str(i).encode())]
    if i % 2 == 1:
        pairs.append(("odd", b"\x01\xff"))
    if i % 5 == 0:
        pairs.append(("nul", None))
    return pairs


def fail(message):
    print("MISMATCH:", message)
    sys.exit(1)


def check_rows(rows, first, end, partitions, base, what):
    """rows: (partition, offset, timestamp_ms, key bytes, value text, headers list) in file order."""
    expected = [i for i in range(first, end)]
    expected.sort(key=lambda i: (i % partitions, i))
    if len(rows) != len(expected):
        fail(f"{what}: {len(rows)} rows, expected {len(expected)}")
    last_offset = {}
    for row, i in zip(rows, expected):
        partition, offset, timestamp, k, v, h = row
        if k != key(i):
            fail(f"{what}: row for record {i} has key {k!r}")
        if partition != i % partitions:
            fail(f"{what}: record {i} in partition {partition}")
        if v != value(i):
            fail(f"{what}: record {i} value {v!r} != {value(i)!r}")
        if timestamp != base + i:
            fail(f"{what}: record {i} timestamp {timestamp} != {base + i}")
        if h != headers(i):
            fail(f"{what}: record {i} headers {h!r} != {headers(i)!r}")
        previous = last_offset.get(partition)
        if previous is not None and offset != previous + 1:
            fail(f"{what}: partition {partition} offset {offset} after {previous}: not contiguous")
        last_offset[partition] = offset
    print(f"{what}: {len(rows)} rows equal to what was produced, offsets contiguous")


def check_duckdb_parquet(path, first, end, partitions, base):
    con = duckdb.connect()
    count, distinct, low, high = con.execute(
        "SELECT count(*), count(DISTINCT key), min(decode(key)), max(decode(key)) "
        f"FROM read_parquet('{path}')"
    ).fetchone()
    if count != end - first or distinct != count:
        fail(f"duckdb: {count} rows, {distinct} distinct keys, expected {end - first}")
    if low != key(first).decode() or high != key(end - 1).decode():
        fail(f"duckdb: keys {low}..{high}")
    for partition, rows, low, high in con.execute(
        "SELECT \"partition\", count(*), min(\"offset\"), max(\"offset\") "
        f"FROM read_parquet('{path}') GROUP BY \"partition\" ORDER BY \"partition\""
    ).fetchall():
        if high - low + 1 != rows:
            fail(f"duckdb: partition {partition} offsets {low}..{high} for {rows} rows")
    # Every row's fields from the formula, in SQL over the whole file.
    bad = con.execute(
        "SELECT count(*) FROM (SELECT CAST(substr(decode(key), 2) AS BIGINT) AS i, * "
        f"FROM read_parquet('{path}')) WHERE \"partition\" != i % {partitions} "
        f"OR epoch_ms(timestamp) != {base} + i "
        "OR decode(value) != printf('{\"i\":%d,\"name\":\"n%d\",\"ratio\":%d.5,\"ok\":%s,"
        "\"tag\":\"tag-%04d-" + TAIL + "\"}', i, i % 97, i % 8, "
        "CASE WHEN i % 2 = 0 THEN 'true' ELSE 'false' END, i % 1000) "
        "OR decode(headers['seq']) != CAST(i AS VARCHAR)"
    ).fetchone()[0]
    if bad:
        fail(f"duckdb: {bad} rows differ from the formula")
    print(f"duckdb: {count} rows, offsets contiguous per partition, every field as produced")


def check_parquet(path, first, end, partitions, base):
    check_duckdb_parquet(path, first, end, partitions, base)
    table = pq.read_table(path)
    metadata = pq.read_metadata(path)
    print(f"pyarrow: {metadata.num_rows} rows in {metadata.num_row_groups} row groups")
    columns = [
        table.column("partition").to_pylist(),
        table.column("offset").to_pylist(),
        table.column("timestamp").cast("int64").to_pylist(),
        table.column("key").to_pylist(),
        [v.decode() if isinstance(v, bytes) else v for v in table.column("value").to_pylist()],
        table.column("headers").to_pylist(),
    ]
    if table.schema.field("timestamp").type.tz != "UTC":
        fail(f"pyarrow: timestamp type {table.schema.field('timestamp').type}")
    check_rows(list(zip(*columns)), first, end, partitions, base, "pyarrow")


def check_types(path):
    con = duckdb.connect()
    types = {name: kind for name, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM '{path}'").fetchall()}
    expected = {
        "topic": "VARCHAR",
        "partition": "INTEGER",
        "offset": "BIGINT",
        "timestamp": "TIMESTAMP WITH TIME ZONE",
        "key": "BLOB",
        "value": "VARCHAR",
        "headers": "MAP(VARCHAR, BLOB)",
    }
    if types != expected:
        fail(f"duckdb DESCRIBE: {types} != {expected}")
    print(f"duckdb DESCRIBE: {types}")


def check_json_columns(path, first, end, partitions, base):
    """--value-format json: value is a struct of typed fields, equal to the formula's."""
    con = duckdb.connect()
    types = {name: kind for name, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM '{path}'").fetchall()}
    expected = "STRUCT(i BIGINT, \"name\" VARCHAR, ok BOOLEAN, ratio DOUBLE, tag VARCHAR)"
    if types["value"] != expected:
        fail(f"duckdb DESCRIBE value: {types['value']} != {expected}")
    rows = con.execute(
        "SELECT CAST(substr(decode(key), 2) AS BIGINT) AS i, value.i, value.name, value.ratio, "
        f"value.ok, value.tag FROM read_parquet('{path}')"
    ).fetchall()
    if len(rows) != end - first:
        fail(f"json columns: {len(rows)} rows, expected {end - first}")
    for i, vi, name, ratio, ok, tag in rows:
        if (vi, name, ratio, ok, tag) != (i, f"n{i % 97}", i % 8 + 0.5, i % 2 == 0,
                                          f"tag-{i % 1000:04}-{TAIL}"):
            fail(f"json columns: record {i}: {(vi, name, ratio, ok, tag)}")
    print(f"duckdb: value {types['value']}, {len(rows)} rows typed as produced")


def check_mismatch_null(path):
    """The mixed topic exported with --on-mismatch null: the value that did not fit is null."""
    con = duckdb.connect()
    rows = con.execute(f"SELECT \"offset\", value.n FROM read_parquet('{path}') ORDER BY 1").fetchall()
    values = [n for _, n in rows]
    if values != [1, 2, None, 4]:
        fail(f"mismatch null: {rows}")
    print(f"duckdb: the value that did not fit is null: {rows}")


def json_bytes(field):
    if field is None:
        return None
    if isinstance(field, dict):
        return base64.b64decode(field["base64"])
    return field.encode()


def check_jsonl(path, first, end, partitions, base):
    con = duckdb.connect()
    count = con.execute(f"SELECT count(*) FROM read_json('{path}', format='newline_delimited')").fetchone()[0]
    if count != end - first:
        fail(f"duckdb read_json: {count} rows, expected {end - first}")
    print(f"duckdb read_json: {count} rows")
    rows = []
    with open(path) as lines:
        for line in lines:
            record = json.loads(line)
            rows.append((
                record["partition"], record["offset"], record["timestamp"],
                json_bytes(record["key"]), record["value"],
                [(h["key"], json_bytes(h["value"])) for h in record["headers"]],
            ))
    check_rows(rows, first, end, partitions, base, "jsonl")


def check_csv(path, first, end, partitions, base):
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT \"partition\", \"offset\", epoch_ms(timestamp::TIMESTAMPTZ), key, value, headers "
        f"FROM read_csv('{path}', header=true, types={{'key': 'VARCHAR', 'value': 'VARCHAR', "
        f"'headers': 'VARCHAR', 'timestamp': 'VARCHAR'}})"
    ).fetchall()
    print(f"duckdb read_csv: {len(rows)} rows")
    rows = [
        (p, o, t, k.encode(), v,
         [(h["key"], json_bytes(h["value"])) for h in json.loads(hs)])
        for p, o, t, k, v, hs in rows
    ]
    check_rows(rows, first, end, partitions, base, "csv")


def main():
    mode, path, n, partitions, base = sys.argv[1:6]
    n, partitions, base = int(n), int(partitions), int(base)
    first, end = (int(sys.argv[6]), int(sys.argv[7])) if len(sys.argv) > 6 else (0, n)
    if mode == "parquet":
        check_parquet(path, first, end, partitions, base)
    elif mode == "types":
        check_types(path)
    elif mode == "json":
        check_json_columns(path, first, end, partitions, base)
    elif mode == "mismatch-null":
        check_mismatch_null(path)
    elif mode == "jsonl":
        check_jsonl(path, first, end, partitions, base)
    elif mode == "csv":
        check_csv(path, first, end, partitions, base)
    else:
        fail(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
