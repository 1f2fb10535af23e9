"""The Strata console (/ui) in a real browser: headless Chromium from Debian's packages, driven
by Playwright. tests/tests/console.rs starts the cluster, prepares data with the CLI and the
gRPC API, runs one scenario of this script per step, and checks the cluster afterwards.

Every wait is Playwright's (expect / wait_for) with a bounded timeout; any page error or
Content-Security-Policy violation fails the scenario. Screenshots go to --screenshots.
"""

import argparse
import base64
import json
import re
import sys
import urllib.request
import ssl

from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 30_000

expect.set_options(timeout=WAIT_MS)


def api(base, method, body, credentials=None):
    """Calls the node's JSON API directly (setup the browser does not do)."""
    request = urllib.request.Request(
        f"{base}/api/v1/{method}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    if credentials:
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = ssl._create_unverified_context()
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        return json.loads(response.read() or b"{}")


class Browser:
    def __init__(self, playwright, args):
        self.args = args
        self.browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        # The nodes' certificates are signed by the test's own CA, which the browser does not
        # know: accept them (what is tested is the console, not the browser's trust store).
        self.context = self.browser.new_context(
            viewport={"width": 1280, "height": 860}, ignore_https_errors=True
        )
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.problems = []
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("console", self.on_console)

    def on_console(self, message):
        text = message.text
        if message.type == "error" and ("Content Security Policy" in text or "Refused to" in text):
            self.problems.append(f"CSP violation: {text}")

    def open(self, fragment):
        self.page.goto(f"{self.args.url}/ui/{fragment}")

    def shot(self, name):
        path = f"{self.args.screenshots}/{name}.png"
        self.page.screenshot(path=path)
        print(json.dumps({"screenshot": path}))

    def close(self):
        self.browser.close()
        assert not self.problems, "\n".join(self.problems)


def cluster(b):
    """The cluster page shows every node up, then the throughput charts once sampled."""
    b.open("#/cluster")
    page = b.page
    expect(page.locator("#nodes tbody tr")).to_have_count(b.args.nodes)
    expect(page.locator("#nodes .status.up")).to_have_count(b.args.nodes)
    expect(page.locator("#nodes-up .value")).to_have_text(f"{b.args.nodes} / {b.args.nodes}")
    expect(page.locator("#nodes tbody td", has_text="leader")).to_have_count(1)
    # Two samples make a rate: the charts draw within two sample intervals.
    expect(page.locator("figure.chart svg")).to_have_count(2)
    b.shot("cluster")


def topics(b):
    """On a follower's console (every change is passed to the controller's leader): creates
    --topic in the UI, alters its retention, creates and deletes --doomed."""
    page = b.page
    follower = lambda fragment: page.goto(f"{b.args.follower_url}/ui/{fragment}")
    follower("#/topics")
    for name, partitions in ((b.args.topic, 3), (b.args.doomed, 1)):
        page.fill("#create-name", name)
        page.fill("#create-partitions", str(partitions))
        page.fill("#create-replication", str(b.args.nodes))
        page.click("#create-topic button[type=submit]")
        expect(page.locator("h1")).to_have_text(f"Topic {name}")
        expect(page.locator("#partitions tbody tr")).to_have_count(partitions)
        if name == b.args.topic:
            # Every partition shows a leader among its replicas once elected.
            for row in range(partitions):
                expect(page.locator(f"#partitions tr[data-partition='{row}'] td").nth(1)).to_have_text(re.compile(r"^[1-9]\d*$"))
            page.fill("#alter-retention-ms", "3600000")
            page.click("#alter-config button[type=submit]")
            expect(page.locator("#alter-config .notice.ok")).to_contain_text("retentionMs")
            b.shot("topic")
            follower("#/topics")
    # Deleting asks for the name first.
    page.click("#delete-topic")
    expect(page.locator("#delete-dialog")).to_be_visible()
    expect(page.locator("#delete-confirm")).to_be_disabled()
    page.fill("#delete-confirm-name", b.args.doomed[:-1])
    expect(page.locator("#delete-confirm")).to_be_disabled()
    page.fill("#delete-confirm-name", b.args.doomed)
    expect(page.locator("#delete-confirm")).to_be_enabled()
    page.click("#delete-confirm")
    expect(page.locator("h1")).to_have_text("Topics")
    expect(page.locator(f"#topics tr[data-topic='{b.args.topic}']")).to_have_count(1)
    expect(page.locator(f"#topics tr[data-topic='{b.args.doomed}']")).to_have_count(0)
    b.shot("topics")


def messages(b):
    """The record the CLI produced shows with its key, value and headers; JSON and hex views;
    the filter; following live shows a record produced afterwards; a partition this node holds
    no replica of is read from the node that holds it."""
    page = b.page
    b.open(f"#/messages/{b.args.topic}/0")
    expect(page.locator("tr.record", has_text=b.args.key)).to_have_count(1)
    # By offset from here on: in hex the key no longer reads as text.
    offset = page.locator("tr.record", has_text=b.args.key).get_attribute("data-offset")
    row = page.locator(f"tr.record[data-offset='{offset}']")
    expect(row.locator("td.value")).to_contain_text(b.args.value)
    for header in b.args.header:
        key, value = header.split("=", 1)
        expect(row.locator("td.headers li", has_text=key)).to_contain_text(value)
    expect(row.locator("td").nth(1)).to_contain_text("UTC")
    # JSON pretty-printed: the value's fields on lines of their own.
    page.select_option("#mode", "json")
    expect(row.locator("td.value pre")).to_contain_text('\n  "')
    page.select_option("#mode", "hex")
    first = b.args.value.encode()[:4].hex(" ")
    expect(row.locator("td.value pre")).to_contain_text(first)
    page.select_option("#mode", "text")
    # The filter hides what does not match, over the loaded page only.
    total = page.locator("tr.record").count()
    assert total >= 2, f"expected at least two records loaded, saw {total}"
    page.fill("#search", b.args.key)
    expect(page.locator("tr.record:visible")).to_have_count(1)
    page.fill("#search", "no record holds this")
    expect(page.locator("tr.record:visible")).to_have_count(0)
    page.fill("#search", "")
    expect(page.locator("tr.record:visible")).to_have_count(total)
    # Oldest first from an offset: the first record shown is that offset.
    page.select_option("#order", "oldest")
    page.select_option("#from", "offset")
    page.fill("#offset", "1")
    page.click("#load")
    expect(page.locator("tr.record").first).to_have_attribute("data-offset", "1")
    # From a time: a time after every record shows nothing.
    page.select_option("#from", "time")
    page.fill("#time", "2100-01-01T00:00:00")
    page.click("#load")
    expect(page.locator("#status")).to_contain_text("0 record(s) loaded")
    # Follow live: a record produced now appears without reloading.
    page.select_option("#from", "latest")
    page.select_option("#order", "newest")
    page.check("#follow")
    expect(page.locator("#status")).to_contain_text("following")
    live = "live-record-after-follow"
    api(b.args.produce_url, "Broker/Produce", {
        "topic": b.args.topic,
        "partition": 0,
        "records": {"records": [{"value": base64.b64encode(live.encode()).decode()}]},
    })
    expect(page.locator("tr.record", has_text=live)).to_have_count(1)
    page.uncheck("#follow")
    b.open(f"#/messages/{b.args.topic}/0")
    expect(page.locator("tr.record", has_text=b.args.key)).to_have_count(1)
    b.shot("messages")
    if b.args.elsewhere_topic:
        # This node holds no replica: the read is passed to the node that does.
        b.open(f"#/messages/{b.args.elsewhere_topic}")
        page.click("#load")
        expect(page.locator("#status")).to_contain_text("1 record(s) loaded")
        expect(page.locator("tr.record", has_text="elsewhere-record")).to_have_count(1)
        expect(page.locator(".notice.not-leader")).to_have_count(0)
        b.shot("messages-from-another-node")


def groups(b):
    """The group shows its lag; a shift reset is previewed (nothing committed), then applied."""
    page = b.page
    b.open("#/groups")
    expect(page.locator(f"#groups tr[data-group='{b.args.group}']")).to_have_count(1)
    b.shot("groups-list")
    page.click(f"#groups tr[data-group='{b.args.group}'] a")
    expect(page.locator("h1")).to_have_text(f"Group {b.args.group}")
    partition = f"{b.args.topic}/0"
    lag_row = page.locator(f"#lag tr[data-partition='{partition}']")
    expect(lag_row.locator("td.committed")).to_have_text(str(b.args.committed))
    page.select_option("#reset-topic", b.args.topic)
    page.fill("#reset-partitions", "0")
    page.select_option("#reset-to", "shift")
    page.fill("#reset-value", str(b.args.shift))
    expect(page.locator("#reset-apply")).to_be_disabled()
    page.click("#reset-preview")
    preview = page.locator(f"#reset-preview-table tr[data-partition='{partition}']")
    expected = b.args.committed + b.args.shift
    expect(preview.locator("td.new-offset")).to_have_text(str(expected))
    expect(page.locator("#reset-apply")).to_be_enabled()
    # A dry run commits nothing: the group still shows the old offset after a refresh.
    expect(page.locator("#reset-result")).to_contain_text("Dry run")
    described = api(b.args.url, "Groups/DescribeGroup", {"groupId": b.args.group})
    committed = {(p["topic"], p.get("partition", 0)): int(p.get("committedOffset", -1)) for p in described.get("partitions", [])}
    assert committed[(b.args.topic, 0)] == b.args.committed, f"the dry run moved the offset: {committed}"
    b.shot("groups-preview")
    page.click("#reset-apply")
    expect(page.locator("#reset-result .notice.ok")).to_contain_text(f"{partition} → {expected}")
    expect(lag_row.locator("td.committed")).to_have_text(str(expected))
    # The lag chart draws once two samples of the group exist.
    expect(page.locator("figure.chart svg")).to_have_count(1)
    b.shot("groups")
    # The cluster page with topics, and a burst of records in its produce chart.
    b.open("#/cluster")
    expect(page.locator("figure.chart svg")).to_have_count(2)
    api(b.args.produce_url, "Broker/Produce", {
        "topic": b.args.topic,
        "partition": 0,
        "records": {"records": [{"value": base64.b64encode(b"burst %d" % i).decode()} for i in range(200)]},
    })
    # The produce chart's scale grows past its floor of 1 record/s once the burst is sampled.
    top = page.locator("figure.chart").first.locator("text.tick").first
    expect(top).not_to_have_text("1.0/s")
    b.shot("cluster-traffic")


def authorization(b):
    """Sign-in required; a wrong password is refused; the user sees only the topics it may
    describe; a refused delete shows the authorizer's reason."""
    page = b.page
    b.open("#/topics")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#login-user", b.args.user)
    page.fill("#login-password", "wrong-password")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-reason")).to_contain_text("refused these credentials")
    page.fill("#login-user", b.args.user)
    page.fill("#login-password", b.args.password)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login")).to_be_hidden()
    expect(page.locator("#who")).to_contain_text(f"Signed in as {b.args.user}")
    expect(page.locator(f"#topics tr[data-topic='{b.args.topic}']")).to_have_count(1)
    expect(page.locator(f"#topics tr[data-topic='{b.args.hidden_topic}']")).to_have_count(0)
    b.shot("auth-topics")
    # Asking for the hidden topic by name is refused with the reason.
    b.open(f"#/topics/{b.args.hidden_topic}")
    refused = page.locator(".notice.refused")
    expect(refused).to_contain_text("refused")
    expect(refused).to_have_attribute("data-error", "ERROR_CODE_AUTHORIZATION_FAILED")
    # Deleting the visible topic is refused in place, with the reason.
    b.open(f"#/topics/{b.args.topic}")
    page.click("#delete-topic")
    page.fill("#delete-confirm-name", b.args.topic)
    page.click("#delete-confirm")
    refused = page.locator(".notice.refused")
    expect(refused).to_contain_text("Delete topic: refused")
    expect(refused).to_contain_text(b.args.user)
    b.shot("auth-refused")
    # Signing out asks again.
    page.click("#sign-out")
    expect(page.locator("#login")).to_be_visible()


SCENARIOS = {
    "cluster": cluster,
    "topics": topics,
    "messages": messages,
    "groups": groups,
    "authorization": authorization,
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--url", required=True, help="the node's http(s)://HOST:PORT")
    parser.add_argument("--screenshots", required=True)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--topic")
    parser.add_argument("--produce-url", help="the console of partition 0's leader, for produces")
    parser.add_argument("--doomed")
    parser.add_argument("--follower-url", help="a console of a node not leading the controller")
    parser.add_argument("--controller", help="the node leading the controller")
    parser.add_argument("--hidden-topic")
    parser.add_argument("--elsewhere-topic")
    parser.add_argument("--key")
    parser.add_argument("--value")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--group")
    parser.add_argument("--committed", type=int)
    parser.add_argument("--shift", type=int)
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()
    with sync_playwright() as playwright:
        browser = Browser(playwright, args)
        try:
            SCENARIOS[args.scenario](browser)
        except Exception:
            try:
                browser.shot(f"failed-{args.scenario}")
            except Exception as error:  # the failure itself matters more than its picture
                print(f"no screenshot of the failure: {error}", file=sys.stderr)
            raise
        browser.close()
    print(json.dumps({"scenario": args.scenario, "ok": True}))


if __name__ == "__main__":
    main()
