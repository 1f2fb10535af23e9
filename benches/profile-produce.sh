#!/usr/bin/env bash
# Where a one-node server's CPU goes on the produce path: `perf record` of a release
# `strata-server` (SERVER_BIN, default this tree's) while `strata bench produce` sends 300 000
# records of 1 KiB in batches of up to 256 records, one in flight (the produce phase of
# benches/broker-vs-peers.sh), then the samples grouped by what the code is doing, and the top
# symbols. perf comes from Debian (`apt-get install linux-perf`); hardware counters are not
# available on this VM, so it samples the cpu-clock.
#
#   benches/profile-produce.sh                 (this tree's server)
#   SERVER_BIN=/path/strata-server benches/profile-produce.sh
#
# perf.data stays in the printed directory, for `perf report -i DIR/perf.data` (call graphs:
# `--children`). Run on a quiet machine: no build running.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf > /dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 2; }
cargo build -q --release -p strata-server -p strata-tools
server_bin=${SERVER_BIN:-target/release/strata-server}
strata=target/release/strata
work=$(mktemp -d "${TMPDIR:-/tmp}/strata-profile.XXXXXX")
echo "results in $work" >&2
fifo=$work/server.out
mkfifo "$fifo"
"$server_bin" --listen 127.0.0.1:0 --data-dir "$work/data" > "$fifo" 2> "$work/server.err" &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work/data"' EXIT
exec 3< "$fifo"
read -r -t 60 line <&3
address=${line#strata-server listening on }
bench() {
  $strata --brokers "$address" bench produce --topic profile --partitions 1 --count "$1" \
      --record-size 1024 --batch-bytes 265000 --in-flight 1 2>/dev/null
}
bench 20000 > /dev/null # warm up: topic created, files open
perf record -e cpu-clock -F 1999 -g -p "$server" -o "$work/perf.data" 2> "$work/perf.err" &
perf=$!
sleep 0.5
bench 300000 | tail -2
kill -INT $perf
wait $perf || true
perf report -i "$work/perf.data" --no-children --sort sym -g none --percent-limit 0 2> /dev/null \
    | grep -E '^ +[0-9.]+%' > "$work/symbols.txt"
python3 - "$work/symbols.txt" <<'PY'
import re, sys
groups = [
    ("kernel: copy into the page cache (pwrite)", r"copy_folio_from_iter|copy_user|__memcpy|filemap|folio|ext4_(da|es|block|write)|generic_perform_write"),
    ("kernel: fsync and block I/O", r"fdatasync|blk_|bio|iowrite|writepages|jbd2|flush|nvme|virtio|scsi"),
    ("kernel: task switch and wake-ups", r"finish_task_switch|schedule|try_to_wake_up|futex|_raw_spin_unlock_irq|ttwu|update_curr|pick_next|enqueue|dequeue"),
    ("kernel: sockets (TCP receive and send)", r"tcp_|_copy_to_iter|skb|sock|__sys_recv|__sys_send|inet|ip_|net_|softirq|napi"),
    ("user: memmove / memcpy (copies)", r"memmove|memcpy"),
    ("user: CRC-32C", r"crc32c|crc_u64|crc_fast|crc32_iscsi"),
    ("user: record walk (validation)", r"strata_proto::batch::decode"),
    ("user: allocation", r"malloc|_int_free|free|realloc|cfree|__libc_calloc|slab|kmem_cache"),
    ("user: tokio, h2, tonic, prost", r"tokio::|h2::|tonic::|prost::|hyper::|bytes::|tower::"),
    ("user: raft", r"raft::|raft_proto|protobuf::"),
    ("user: strata (other)", r"strata_server::|strata_proto::"),
]
totals = {name: 0.0 for name, _ in groups}
other, rows = 0.0, []
for line in open(sys.argv[1]):
    m = re.match(r"\s*([0-9.]+)%\s+\[(.)\]\s+(.*)", line)
    if not m:
        continue
    pct, _, sym = float(m.group(1)), m.group(2), m.group(3).strip()
    rows.append((pct, sym))
    for name, pattern in groups:
        if re.search(pattern, sym):
            totals[name] += pct
            break
    else:
        other += pct
print("share of server CPU samples, by what the code does:")
for name, _ in groups:
    print(f"  {totals[name]:5.1f} %  {name}")
print(f"  {other:5.1f} %  everything else")
print("top symbols:")
for pct, sym in rows[:15]:
    print(f"  {pct:5.2f} %  {sym[:100]}")
PY
