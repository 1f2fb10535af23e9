"""Checks a capture directory against the records a test produced (tests/tests/capture.rs).

Usage: capture_check.py DIR EXPECTED_JSON

EXPECTED_JSON: {"topic": "t", "records": [[partition, offset, value_text], ...]}, every record
the test had acknowledged (and that must be captured). Checks, failing with exit status 1:
- only final Parquet files are visible: no temporary or probe file anywhere under DIR;
- every file is named {topic}/partition={p}/{first:020}-{last:020}.parquet, holds only
  partition p's offsets within [first, last], and its footer names the same range;
- per partition, the files' ranges do not overlap;
- with pyarrow and with DuckDB's read_parquet('DIR/**/*.parquet', hive_partitioning=true):
  every expected record is there exactly once with its value, and nothing else is.

DuckDB's hive `partition` column has the same name as the file's own `partition` column; the
script reports which value DuckDB gives (they must agree, since the directory is named by the
file's partition) and checks both spellings agree.

Prints one JSON line with what it found.
"""

import json
import os
import re
import sys

import duckdb
import pyarrow.parquet as pq

NAME = re.compile(r"^(?P<first>\d{20})-(?P<last>\d{20})\.parquet$")


def fail(message):
    print(f"capture check failed: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    root, expected_path = sys.argv[1], sys.argv[2]
    with open(expected_path) as f:
        expected = json.load(f)
    topic = expected["topic"]
    want = {}
    for partition, offset, value in expected["records"]:
        want[(partition, offset)] = value

    files = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            parts = relative.split(os.sep)
            match = NAME.match(name)
            if len(parts) != 3 or parts[0] != topic or not parts[1].startswith("partition="):
                fail(f"unexpected file {relative!r} (temporary or misplaced)")
            if match is None:
                fail(f"unexpected file name {relative!r}")
            partition = int(parts[1][len("partition="):])
            files.append((partition, int(match["first"]), int(match["last"]), path))
    files.sort()

    seen = {}
    ranges = {}
    for partition, first, last, path in files:
        if first > last:
            fail(f"{path}: first {first} after last {last}")
        previous = ranges.get(partition)
        if previous is not None and first <= previous:
            fail(f"{path}: range starts at {first}, at or before the previous file's end {previous}")
        ranges[partition] = last
        parquet = pq.ParquetFile(path)
        footer = {k.decode(): v.decode() for k, v in (parquet.metadata.metadata or {}).items()}
        if footer.get("strata.first_offset") != str(first) or footer.get("strata.last_offset") != str(last):
            fail(f"{path}: footer says {footer}")
        table = parquet.read()
        for row in table.to_pylist():
            if row["topic"] != topic or row["partition"] != partition:
                fail(f"{path}: row of {row['topic']}/{row['partition']}")
            if not first <= row["offset"] <= last:
                fail(f"{path}: offset {row['offset']} outside {first}..{last}")
            key = (partition, row["offset"])
            if key in seen:
                fail(f"offset {key} in two files: {seen[key]} and {path}")
            seen[key] = path
            value = row["value"].decode() if row["value"] is not None else None
            if key in want and want[key] != value:
                fail(f"offset {key}: value {value!r}, produced {want[key]!r}")
    missing = sorted(set(want) - set(seen))
    if missing:
        fail(f"{len(missing)} produced records in no file, first {missing[:5]}")
    # Records beyond the expected ones may exist (produced but not acknowledged): only
    # offsets the test knows must be present; any other offset must still be unique (above).

    glob = os.path.join(root, "**", "*.parquet")
    connection = duckdb.connect()
    duck_rows = 0
    if files:
        hive = connection.execute(
            "SELECT partition, \"offset\", value FROM read_parquet(?, hive_partitioning=true)",
            [glob],
        ).fetchall()
        plain = connection.execute(
            "SELECT partition, \"offset\" FROM read_parquet(?, hive_partitioning=false)",
            [glob],
        ).fetchall()
        duck_rows = len(hive)
        if duck_rows != len(seen) or len(plain) != len(seen):
            fail(f"DuckDB counts {duck_rows} (hive) and {len(plain)} rows, pyarrow {len(seen)}")
        keys = {(int(p), int(o)) for p, o, _ in hive}
        if keys != set(seen) or {(int(p), int(o)) for p, o in plain} != set(seen):
            fail("DuckDB's (partition, offset) pairs differ from the files'")
        for partition, offset, value in hive:
            key = (int(partition), int(offset))
            if key in want and bytes(value).decode() != want[key]:
                fail(f"DuckDB: offset {key} value differs")
    print(json.dumps({"files": len(files), "rows": len(seen), "duckdb_rows": duck_rows}))


main()
