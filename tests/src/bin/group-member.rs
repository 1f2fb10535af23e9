//! A consumer group member in its own process, for the tests in `tests/group_consumer.rs`.
//!
//! `group-member BROKER GROUP TOPIC SESSION_MS` joins GROUP, reads TOPIC and prints one line per
//! event on stdout, flushed at once so a test sees it even if the process is killed right after:
//! - `JOINED <member id>`
//! - `CHANGE assigned=<p,p> revoked=<p,p> lost=<bool>` for every assignment change
//! - `REC <partition> <offset> <value>` for every record handed to it
//! - `CLOSED` after a clean close (commit, leave), which standard input reaching its end asks
//!   for.
//!
//! Auto-commit runs every 200 ms so that tests see progress quickly.

use std::io::Write;
use std::time::Duration;

use strata_client::{Client, GroupConsumerConfig};
use tokio::io::AsyncBufReadExt;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn partitions(list: &[strata_client::proto::v1::TopicPartition]) -> String {
    list.iter()
        .map(|tp| tp.partition.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, broker, group, topic, session_ms] = args.as_slice() else {
        eprintln!("usage: group-member BROKER GROUP TOPIC SESSION_MS");
        std::process::exit(2);
    };
    let session = Duration::from_millis(session_ms.parse().expect("SESSION_MS is a number"));
    let client = Client::connect(broker).await.expect("connect");
    let mut config = GroupConsumerConfig::new(group.clone(), [topic.clone()]);
    config.session_timeout = session;
    config.auto_commit = Some(Duration::from_millis(200));
    config.client_id = format!("group-member pid {}", std::process::id());
    let mut consumer = client.group_consumer(config).await.expect("join");
    say(&format!("JOINED {}", consumer.member_id()));
    let mut changes = consumer.assignment_changes();
    tokio::spawn(async move {
        while let Ok(change) = changes.recv().await {
            say(&format!(
                "CHANGE assigned={} revoked={} lost={}",
                partitions(&change.assigned),
                partitions(&change.revoked),
                change.lost
            ));
        }
    });
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = stdin.next_line() => {
                if !matches!(line, Ok(Some(_))) {
                    break;
                }
            }
            record = consumer.next() => {
                match record {
                    Ok(Some(record)) => {
                        let value = record.value.unwrap_or_default();
                        say(&format!(
                            "REC {} {} {}",
                            record.partition,
                            record.offset,
                            String::from_utf8_lossy(&value)
                        ));
                    }
                    Ok(None) => break,
                    Err(error) => {
                        say(&format!("ERROR {error}"));
                        break;
                    }
                }
            }
        }
    }
    consumer.close().await.expect("close");
    say("CLOSED");
}
