//! Node resources that must fail a request, never abort the node: file descriptors, disk space
//! and connections (see "Trust and resources" in the architecture).
//!
//! - [`raise_fd_limit`]: the soft `RLIMIT_NOFILE` goes up to the hard limit at start.
//! - [`FdBudget`]: how many partitions this node may host under that limit, after a reserve for
//!   connections and the node's own files; a topic create beyond it is refused.
//! - [`DiskReserve`]: produce is refused while the data directory's free space is below a
//!   reserve, so the space left serves metadata, deletes and raft's own writes.
//! - [`limit_connections`]: an accept layer that closes connections beyond a maximum.
//!
//! Every refusal is a [`ResourceError`] whose message names the numbers (the broker answers it
//! as `BrokerError::ResourceExhausted`).

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;

/// A request refused for want of a node resource; retriable once the resource is freed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// More partitions than the node's file-descriptor budget allows.
    #[error(
        "node {node_id} would host {} partitions ({hosted} now, {adding} more), but its \
         file-descriptor budget allows {partitions_max}: a limit of {fd_limit} descriptors, \
         {FDS_PER_PARTITION} per partition, after {max_connections} kept for connections \
         (--max-connections) and {FDS_NODE_RESERVE} for the node itself; create fewer \
         partitions, delete topics, or raise the limit (ulimit -n)",
        hosted.saturating_add(*adding)
    )]
    Descriptors {
        node_id: u64,
        hosted: u64,
        adding: u64,
        partitions_max: u64,
        fd_limit: u64,
        max_connections: u64,
    },
    /// The data directory's free space is down to the reserve.
    #[error(
        "disk full on node {node_id}: {free_bytes} bytes free in {}, reserve {reserve_bytes} \
         bytes (--disk-reserve-bytes); {what} resumes once retention or a topic delete frees \
         space",
        data_dir.display()
    )]
    DiskFull {
        node_id: u64,
        free_bytes: u64,
        data_dir: PathBuf,
        reserve_bytes: u64,
        what: String,
    },
}

/// Descriptors one hosted partition holds at rest: its active segment's `.log` (its `.index` is
/// opened only to add an entry, and sealed segments hold none; see `storage::segment`).
pub const FDS_PER_PARTITION: u64 = 1;

/// Descriptors kept for the node itself: the runtime (epoll, eventfds, the listener), the
/// controller's log, the lock file, peer connections, files opened briefly (atomic replaces,
/// directory fsyncs, a segment roll) and the standard streams.
pub const FDS_NODE_RESERVE: u64 = 128;

/// Fewest connections the default connection limit allows, however low the descriptor limit.
const CONNECTIONS_DEFAULT_MIN: u64 = 16;
/// Most connections the default connection limit allows, however high the descriptor limit.
const CONNECTIONS_DEFAULT_MAX: u64 = 4096;

/// Disk space a new partition counts for when a topic create is admitted: its files start
/// small (a checkpoint, the raft state, 16 KiB allocated ahead of its log), and the rest leaves
/// room for its first appends, so creates cannot creep into the reserve either.
pub const PARTITION_CREATE_BYTES: u64 = 1 << 20;

/// The default disk reserve on a large volume, and the share of the volume it grows to.
const DISK_RESERVE_BYTES_MIN: u64 = 1 << 30;
const DISK_RESERVE_PERCENT: u64 = 2;
/// The reserve never takes more than this share of a (small) volume.
const DISK_RESERVE_PERCENT_MAX: u64 = 10;

/// How long a free-space reading is trusted before `statvfs` is asked again. Produce is
/// bounded in flight (256 MiB), so within this time the disk cannot fill much past a reading.
const DISK_REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// How often refused connections (and failed accepts) are logged at most.
const REFUSED_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// How long accepting pauses after a failed accept (EMFILE, ENFILE): the listener stays
/// readable, and tonic's accept loop would otherwise spin on the same error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The descriptor limits of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimits {
    /// The soft limit before [`raise_fd_limit`] raised it.
    pub soft_before: u64,
    /// The soft limit in force: what the process may open.
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (many systems start processes at a soft
/// 1024 while allowing far more) and returns the limits; logs both.
///
/// # Errors
/// The OS error of `getrlimit` or `setrlimit`.
pub fn raise_fd_limit() -> std::io::Result<FdLimits> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let soft_before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we pass; raising the soft limit up to the hard
        // limit is always permitted.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let limits = FdLimits {
        soft_before,
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    };
    tracing::info!(
        soft_before = limits.soft_before,
        soft = limits.soft,
        hard = limits.hard,
        "file descriptor limit (RLIMIT_NOFILE) raised to the hard limit"
    );
    Ok(limits)
}

/// The default `--max-connections` under a descriptor limit: an eighth of the descriptors,
/// between 16 and 4096, so most descriptors stay for partitions.
pub fn default_max_connections(fd_limit: u64) -> usize {
    (fd_limit / 8).clamp(CONNECTIONS_DEFAULT_MIN, CONNECTIONS_DEFAULT_MAX) as usize
}

/// How many partitions the node may host: the descriptor limit less the connection limit and
/// the node's own reserve, at [`FDS_PER_PARTITION`] each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    pub fd_limit: u64,
    pub max_connections: u64,
}

impl FdBudget {
    /// Partitions the budget allows (0 when the limit does not even cover the reserves).
    pub fn partitions_max(&self) -> u64 {
        self.fd_limit
            .saturating_sub(FDS_NODE_RESERVE)
            .saturating_sub(self.max_connections)
            / FDS_PER_PARTITION
    }

    /// Checks that the node may host `adding` more partitions besides the `hosted` it has.
    ///
    /// # Errors
    /// [`ResourceError::Descriptors`] naming the numbers.
    pub fn check(&self, node_id: u64, hosted: u64, adding: u64) -> Result<(), ResourceError> {
        let partitions_max = self.partitions_max();
        if hosted.saturating_add(adding) <= partitions_max {
            return Ok(());
        }
        Err(ResourceError::Descriptors {
            node_id,
            hosted,
            adding,
            partitions_max,
            fd_limit: self.fd_limit,
            max_connections: self.max_connections,
        })
    }
}

/// The default disk reserve of a volume of `total_bytes`: the larger of 1 GiB and 2 % of the
/// volume, but never more than 10 % of it (so a small volume keeps most of its room).
pub fn default_disk_reserve_bytes(total_bytes: u64) -> u64 {
    let reserve = DISK_RESERVE_BYTES_MIN.max(total_bytes / 100 * DISK_RESERVE_PERCENT);
    reserve.min(total_bytes / 100 * DISK_RESERVE_PERCENT_MAX)
}

/// Free and total bytes of the file system holding `path` (`statvfs`; free is what an
/// unprivileged writer may still use).
///
/// # Errors
/// The OS error of `statvfs`.
pub fn disk_space(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a zeroed statvfs is a valid value of this plain C struct.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stat` a struct statvfs fills.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let block = stat.f_frsize as u64;
    Ok((
        (stat.f_bavail as u64).saturating_mul(block),
        (stat.f_blocks as u64).saturating_mul(block),
    ))
}

/// Refuses produce while the data directory's free space is below the reserve. Readings are
/// cached for `DISK_REFRESH_INTERVAL`, so the check costs a lock and a clock read; bytes
/// admitted since the reading count as used already, so a burst of produce inside one interval
/// cannot run past the reserve either.
#[derive(Debug)]
pub struct DiskReserve {
    data_dir: PathBuf,
    reserve_bytes: u64,
    /// The last reading; std Mutex: held for one statvfs at most, never across an await.
    reading: Mutex<Reading>,
}

#[derive(Debug, Default)]
struct Reading {
    /// When free space was read (`None` before the first reading).
    at: Option<Instant>,
    free_bytes: u64,
    /// Bytes admitted since, not yet visible in a reading.
    admitted_bytes: u64,
}

impl DiskReserve {
    /// A reserve of `reserve_bytes` on the file system of `data_dir`.
    pub fn new(data_dir: PathBuf, reserve_bytes: u64) -> Self {
        Self {
            data_dir,
            reserve_bytes,
            reading: Mutex::new(Reading::default()),
        }
    }

    /// Admits `bytes` for `what` (named in the refusal: "produce", "creating topics") on node
    /// `node_id` when the free space, less what was admitted since it was read, stays at or
    /// above the reserve after them. A failed reading counts as plenty: not knowing is no
    /// reason to stop a node that worked.
    ///
    /// # Errors
    /// [`ResourceError::DiskFull`]: "disk full on node N: X free, reserve Y".
    pub fn admit(&self, node_id: u64, what: &str, bytes: u64) -> Result<(), ResourceError> {
        let now = Instant::now();
        let mut reading = self.reading.lock().expect("disk reading lock poisoned");
        if reading
            .at
            .is_none_or(|at| now.duration_since(at) >= DISK_REFRESH_INTERVAL)
        {
            let free_bytes = match disk_space(&self.data_dir) {
                Ok((free, _)) => free,
                Err(error) => {
                    tracing::warn!(dir = %self.data_dir.display(), %error, "statvfs failed");
                    u64::MAX
                }
            };
            *reading = Reading {
                at: Some(now),
                free_bytes,
                admitted_bytes: 0,
            };
        }
        let free = reading.free_bytes.saturating_sub(reading.admitted_bytes);
        if free.saturating_sub(bytes) >= self.reserve_bytes {
            reading.admitted_bytes = reading.admitted_bytes.saturating_add(bytes);
            return Ok(());
        }
        Err(ResourceError::DiskFull {
            node_id,
            free_bytes: free,
            data_dir: self.data_dir.clone(),
            reserve_bytes: self.reserve_bytes,
            what: what.to_string(),
        })
    }
}

/// What a node enforces about its resources; see the module doc.
#[derive(Debug)]
pub struct Resources {
    pub fds: FdBudget,
    pub disk: DiskReserve,
}

/// Accepted connections past `max_connections` open at once are closed at once (the client
/// sees its connection reset and may retry), so a flood cannot take the descriptors that
/// partitions and existing clients need. Refusals are logged at most once a second.
///
/// `open` counts the listener's open connections: the limit reads it, and it is the
/// listener's `strata_connections` gauge (see [`crate::metrics::data`]).
pub fn limit_connections<S>(
    accepted: S,
    max_connections: usize,
    open: OpenConnections,
) -> impl Stream<Item = std::io::Result<CountedConnection>>
where
    S: Stream<Item = std::io::Result<TcpStream>>,
{
    let refused = Arc::new(AtomicU64::new(0));
    let mut last_log: Option<Instant> = None;
    let mut last_error_log: Option<Instant> = None;
    accepted.filter_map(move |accepted| {
        let mut pause = false;
        let outcome = match accepted {
            Err(error) => {
                pause = true;
                let now = Instant::now();
                if last_error_log.is_none_or(|at| now.duration_since(at) >= REFUSED_LOG_INTERVAL)
                {
                    last_error_log = Some(now);
                    tracing::warn!(%error, "accepting a connection failed; pausing accepts briefly");
                }
                Some(Err(error))
            }
            Ok(stream) => {
                // Only this stream adds to the count, so a load then an add cannot overshoot.
                if usize::try_from(open.get()).unwrap_or(0) >= max_connections {
                    drop(stream);
                    let total = refused.fetch_add(1, Ordering::Relaxed) + 1;
                    let now = Instant::now();
                    if last_log.is_none_or(|at| now.duration_since(at) >= REFUSED_LOG_INTERVAL) {
                        last_log = Some(now);
                        tracing::warn!(
                            max_connections,
                            refused_total = total,
                            "connection refused: the node has --max-connections open"
                        );
                    }
                    None
                } else {
                    open.inc();
                    Some(Ok(CountedConnection {
                        stream,
                        open: open.clone(),
                    }))
                }
            }
        };
        async move {
            if pause {
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
            outcome
        }
    })
}

/// An accepted connection that counts as open until dropped.
#[derive(Debug)]
pub struct CountedConnection {
    stream: TcpStream,
    open: OpenConnections,
}

/// A listener's count of open connections (see [`limit_connections`]).
pub type OpenConnections =
    prometheus_client::metrics::gauge::Gauge<i64, std::sync::atomic::AtomicI64>;

impl Drop for CountedConnection {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl tonic::transport::server::Connected for CountedConnection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for CountedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepted connections with Nagle's algorithm off: replies are small and must not wait for the
/// client's delayed ACK (40 ms on Linux). tonic sets this only for listeners it binds itself.
pub fn nodelay_incoming(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_disk_reserve_follows_the_rule() {
        const GIB: u64 = 1 << 30;
        let table = [
            (160 << 20, 16 << 20, "a small volume keeps 10 %"),
            (5 * GIB, GIB / 2, "10 % when 1 GiB would be more"),
            (20 * GIB, GIB, "1 GiB on a mid-sized volume"),
            (1000 * GIB, 20 * GIB, "2 % on a large volume"),
        ];
        for (total, expected, why) in table {
            let reserve = default_disk_reserve_bytes(total);
            // Integer percentages of sizes that are not multiples of 100 round down a little.
            assert!(reserve <= expected, "{why}: {reserve} > {expected}");
            assert!(reserve >= expected - expected / 50, "{why}: {reserve}");
        }
    }

    #[test]
    fn fd_budget_counts_partitions_after_the_reserves() {
        let budget = FdBudget {
            fd_limit: 1024,
            max_connections: default_max_connections(1024) as u64,
        };
        assert_eq!(budget.max_connections, 128);
        assert_eq!(budget.partitions_max(), 1024 - 128 - 128);
        assert!(budget.check(1, 700, 68).is_ok());
        let error = budget.check(7, 700, 69).expect_err("over budget");
        let message = error.to_string();
        for expected in ["node 7", "769 partitions", "allows 768", "1024 descriptors"] {
            assert!(message.contains(expected), "{expected:?} in {message}");
        }
        let tiny = FdBudget {
            fd_limit: 64,
            max_connections: 16,
        };
        assert_eq!(tiny.partitions_max(), 0);
        assert_eq!(default_max_connections(1 << 20), 4096);
        assert_eq!(default_max_connections(20), 16);
    }

    #[test]
    fn disk_reserve_refuses_below_the_reserve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (free, total) = disk_space(dir.path()).expect("statvfs");
        assert!(free <= total);
        let reserve = DiskReserve::new(dir.path().to_path_buf(), 0);
        assert!(reserve.admit(1, "produce", 0).is_ok());
        let error = DiskReserve::new(dir.path().to_path_buf(), u64::MAX)
            .admit(3, "produce", 0)
            .expect_err("no disk has that much room");
        let message = error.to_string();
        assert!(message.contains("disk full on node 3"), "{message}");
        assert!(message.contains("produce resumes"), "{message}");
        // Admitted bytes count at once: within one reading, the room above the reserve goes.
        let room = free / 2;
        let reserve = DiskReserve::new(dir.path().to_path_buf(), free - room);
        let chunk = room / 4 + 1;
        let admitted = (0..8)
            .take_while(|_| reserve.admit(1, "produce", chunk).is_ok())
            .count();
        // Other writers on this disk may move free space a little between readings.
        assert!(
            (2..=4).contains(&admitted),
            "{admitted} chunks of {chunk} admitted"
        );
    }
}
