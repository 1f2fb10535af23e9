#!/usr/bin/env bash
# What one fdatasync'd append costs on this machine's disk: the floor under the service
# latency of a produce acknowledged after its fsync (the issue 12 target is ~1.5 of these plus
# loopback). Writes COUNT records of SIZE bytes (default 1 KiB) to a file in DIR (default: a
# temporary directory under TMPDIR, on the disk the benches' servers use), each followed by
# fdatasync, one at a time, and prints p50 / p99 / p99.9 / max in microseconds, for three ways
# a log file can grow, alternating ROUNDS times (default 2) in the same run:
#
#   extend     each write extends the file (no preallocation);
#   fallocate  blocks allocated ahead with fallocate(KEEP_SIZE) in 16 KiB steps, as the
#              server's slack: the file still grows at each write;
#   zeros      zeros written ahead (1 MiB at a time, not synced), so that each write
#              overwrites blocks inside the file, as the server's active segment does for
#              small appends (`Segment::write_ahead`).
#
#   benches/fsync-latency.sh                  (COUNT=5000, SIZE=1024)
#   COUNT=400 SIZE=265000 benches/fsync-latency.sh   (a produce batch of 256 records of 1 KiB)
set -euo pipefail
COUNT=${COUNT:-5000}
SIZE=${SIZE:-1024}
ROUNDS=${ROUNDS:-2}
dir=$(mktemp -d "${DIR:-${TMPDIR:-/tmp}}/strata-fsync.XXXXXX")
trap 'rm -rf "$dir"' EXIT
python3 - "$dir/log" "$COUNT" "$SIZE" "$ROUNDS" <<'PY'
import ctypes, os, sys, time
path, count, size, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
libc = ctypes.CDLL(None, use_errno=True)
FALLOC_FL_KEEP_SIZE = 1
SLACK = 16 << 10
AHEAD = 1 << 20
record = os.urandom(size)
zeros = bytes(AHEAD)

def run(mode):
    if os.path.exists(path):
        os.unlink(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    ahead_end = 0
    samples = []
    started = time.perf_counter()
    for n in range(count):
        position = n * size
        end = position + size
        # Space ahead is prepared after the previous write, before this one's clock starts,
        # as the server does it in the append before (its fsync then carries it).
        if mode == "fallocate" and ahead_end < end + SLACK // 2:
            libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, ctypes.c_long(position), ctypes.c_long(SLACK))
            ahead_end = position + SLACK
        if mode == "zeros" and ahead_end < end + AHEAD // 2:
            os.pwrite(fd, zeros, max(ahead_end, position))
            ahead_end = max(ahead_end, position) + AHEAD
        start = time.perf_counter_ns()
        os.pwrite(fd, record, position)
        os.fdatasync(fd)
        samples.append((time.perf_counter_ns() - start) / 1000)
    elapsed = time.perf_counter() - started
    os.close(fd)
    samples.sort()
    q = lambda p: samples[min(len(samples) - 1, int(p * len(samples)))]
    mean = sum(samples) / len(samples)
    print(f"{mode:9}: write {size} B + fdatasync, {count} one at a time: p50 {q(0.5):.0f} us, "
          f"p99 {q(0.99):.0f} us, p99.9 {q(0.999):.0f} us, max {samples[-1]:.0f} us, "
          f"mean {mean:.0f} us; {count * size / elapsed / 1e6:.0f} MB/s overall")

for _ in range(rounds):
    for mode in ("extend", "fallocate", "zeros"):
        run(mode)
PY
