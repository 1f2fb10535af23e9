"""Parses a Strata /metrics exposition with the Prometheus project's own parser.

Usage: parse.py FILE [PREFIX]

Reads FILE (an OpenMetrics text exposition, as `/metrics` serves it), parses it with
prometheus_client's OpenMetrics parser (which rejects a malformed exposition), and prints one
JSON line per sample whose name starts with PREFIX (default "strata_"):
{"name": ..., "labels": {...}, "value": ...}. The Rust test compares these with its own parse.
"""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main():
    path = sys.argv[1]
    prefix = sys.argv[2] if len(sys.argv) > 2 else "strata_"
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith(prefix):
                continue
            print(
                json.dumps(
                    {
                        "name": sample.name,
                        "labels": dict(sample.labels),
                        "value": float(sample.value),
                    },
                    sort_keys=True,
                )
            )


if __name__ == "__main__":
    main()
