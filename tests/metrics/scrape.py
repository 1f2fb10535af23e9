"""HTTP requests for the /metrics tests (tests/tests/metrics_data.rs), with Prometheus's own
OpenMetrics parser reading the exposition. Each subcommand prints one JSON line; an HTTP error
status is printed, not raised, so the Rust test checks it.

    scrape.py scrape URL [USER PASSWORD]   GET URL (a /metrics path), parse the body with
                                         prometheus_client's OpenMetrics parser, print
                                         {"status", "families": {name: type},
                                          "samples": [{"name", "labels", "value"}]}
    scrape.py post URL BODY [USER PASSWORD]
                                         POST BODY (JSON) to URL, print {"status", "body"}

An https URL is verified against the CA file in $STRATA_TEST_CA.
"""

import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

# Every request is bounded.
TIMEOUT_S = 30


def request(url, data=None, credentials=None):
    """Returns (status, body text) of a GET (or POST of `data`), errors included."""
    headers = {}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if credentials is not None:
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    req = urllib.request.Request(url, data=data, headers=headers)
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=os.environ["STRATA_TEST_CA"])
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(url, credentials):
    status, body = request(url, credentials=credentials)
    if status != 200:
        print(json.dumps({"status": status, "body": body}), flush=True)
        return
    families = {}
    samples = []
    # The strict OpenMetrics parser: it refuses a body without "# EOF", a malformed line, a
    # histogram whose buckets do not add up, a counter sample without `_total`.
    for family in text_string_to_metric_families(body):
        families[family.name] = family.type
        for sample in family.samples:
            samples.append(
                {"name": sample.name, "labels": sample.labels, "value": sample.value}
            )
    print(
        json.dumps({"status": status, "families": families, "samples": samples}),
        flush=True,
    )


def main():
    command, url = sys.argv[1], sys.argv[2]
    if command == "scrape":
        credentials = tuple(sys.argv[3:5]) if len(sys.argv) >= 5 else None
        scrape(url, credentials)
    elif command == "post":
        credentials = tuple(sys.argv[4:6]) if len(sys.argv) >= 6 else None
        status, body = request(url, sys.argv[3].encode(), credentials)
        print(json.dumps({"status": status, "body": body}), flush=True)
    else:
        print(f"FAILED: unknown command {command}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
