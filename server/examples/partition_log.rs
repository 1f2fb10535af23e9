//! Writes a small partition log, reads it back, and leaves it on disk for `strata log dump`.
//!
//! ```text
//! cargo run -p strata-server --example partition_log -- /tmp/strata-demo
//! cargo run -p strata-tools -- log dump /tmp/strata-demo
//! ```

use std::path::PathBuf;

use strata_server::storage::batch::{BatchBuilder, decode_records, split_batches};
use strata_server::storage::{LogConfig, PartitionLog};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: partition_log DIR")?;
    // Small segments, so the demo shows several.
    let config = LogConfig {
        segment_bytes_max: 16 * 1024,
        batch_bytes_max: 16 * 1024,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(&dir, config)?;
    let first = log.next_offset();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    for batch_number in 0..100 {
        let mut builder = BatchBuilder::new();
        for i in 0..10 {
            let key = format!("sensor-{}", i % 3);
            let value = format!("{{\"batch\":{batch_number},\"reading\":{i}}}");
            builder.push(
                now_ms,
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                &[("source", Some(b"demo"))],
            );
        }
        log.append(&builder.finish(), 1, now_ms)?;
    }
    // One fsync makes all 100 appends durable (group commit).
    log.sync()?;

    let mut read = 0;
    let mut offset = first;
    while offset < log.next_offset() {
        for span in log.read(offset, 64 * 1024)? {
            for split in split_batches(span) {
                let (header, batch) = split?;
                read += decode_records(&batch)?.len();
                offset = header.base_offset as u64 + header.offset_count();
            }
        }
    }
    println!(
        "{}: appended 1000 records at offsets {first}..{}, read back {read}, {} segments",
        dir.display(),
        log.next_offset(),
        log.segments().len()
    );
    Ok(())
}
