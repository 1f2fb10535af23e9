#!/usr/bin/env bash
# What one fdatasync'd append costs on this machine's disk: the floor under the service
# latency of a produce acknowledged after its fsync (the issue 12 target is ~1.5 of these plus
# loopback). Appends COUNT records of 1 KiB to a file in DIR (default: a temporary directory
# under TMPDIR, on the disk the benches' servers use), each followed by fdatasync, one at a time,
# and prints p50 / p99 / p99.9 / max in microseconds. The file grows as a log does (no
# preallocation), as the server's active segment does between its fallocate'd steps.
#
#   benches/fsync-latency.sh            (COUNT=5000)
set -euo pipefail
COUNT=${COUNT:-5000}
dir=$(mktemp -d "${DIR:-${TMPDIR:-/tmp}}/strata-fsync.XXXXXX")
trap 'rm -rf "$dir"' EXIT
python3 - "$dir/log" "$COUNT" <<'PY'
import os, sys, time
path, count = sys.argv[1], int(sys.argv[2])
record = os.urandom(1024)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
samples = []
for _ in range(count):
    start = time.perf_counter_ns()
    os.write(fd, record)
    os.fdatasync(fd)
    samples.append((time.perf_counter_ns() - start) / 1000)
os.close(fd)
samples.sort()
q = lambda p: samples[min(len(samples) - 1, int(p * len(samples)))]
print(f"write 1 KiB + fdatasync, {count} one at a time: p50 {q(0.5):.0f} us, p99 {q(0.99):.0f} us, "
      f"p99.9 {q(0.999):.0f} us, max {samples[-1]:.0f} us")
PY
