//! `strata topic create|list|describe|delete|alter|add-partitions`.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use strata_client::Client;
use strata_client::proto::v1::{TopicConfig, TopicDescription};

use crate::format::Format;
use crate::output::{
    UNANSWERED_LEGEND, column_width, config_text, count_text, node_list_text, node_text,
    topic_json, view_text,
};
use crate::units::{Limit, parse_duration_ms, parse_duration_ms_limit, parse_size};

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// The topic's name: 1 to 200 characters of a-z, A-Z, 0-9, '.', '_', '-'.
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Copies of each partition, on distinct nodes.
        #[arg(long, default_value_t = 1)]
        replication_factor: u32,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List every topic.
    List,
    /// Describe a topic: partitions, leaders, offsets and configuration.
    Describe {
        /// The topic to describe.
        name: String,
    },
    /// Delete a topic and all its records.
    Delete {
        /// The topic to delete.
        name: String,
    },
    /// Change a topic's configuration (only the values given).
    Alter {
        /// The topic to change.
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Grow a topic to TOTAL partitions. Existing partitions and their records stay as they
    /// are; as in Kafka, records with a key may go to a different partition than the same
    /// key did before (the key hash is taken modulo the partition count).
    AddPartitions {
        /// The topic to grow.
        name: String,
        /// The number of partitions the topic has afterwards (more than it has now), not the
        /// number to add.
        total: u32,
    },
}

/// The topic configuration flags; absent ones keep the broker's default (create) or the
/// current value (alter).
#[derive(Args, Debug, Default)]
pub struct ConfigArgs {
    /// Keep a segment this long after its newest record: milliseconds, or a duration such as
    /// 7d, 12h, 30m; `unlimited` keeps records forever (the default).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms_limit)]
    retention_ms: Option<Limit>,
    /// Keep at most this much per partition: bytes, or a size such as 512MiB, 10GB;
    /// `unlimited` sets no size limit (the default).
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size_limit)]
    retention_bytes: Option<Limit>,
    /// Roll a partition's active segment at this size: bytes, or a size such as 64MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    segment_bytes: Option<u64>,
    /// Capture the topic continuously: each partition's leader writes closed windows of
    /// committed records as Parquet files under this absolute directory (or
    /// s3://bucket/prefix), named {topic}/partition={p}/{first}-{last}.parquet. `none` stops
    /// capture (alter).
    #[arg(long, value_name = "DIR")]
    capture_dir: Option<String>,
    /// Close a capture window this long after its leader first saw uncaptured data:
    /// milliseconds, or a duration such as 5m (default 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    capture_interval: Option<u64>,
    /// Close a capture window when its records reach this size: bytes, or a size such as
    /// 256MiB (the default).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    capture_max_bytes: Option<u64>,
    /// The capture file format: parquet (the only one, and the default).
    #[arg(long, value_name = "FORMAT")]
    capture_format: Option<String>,
    /// Whether retention waits for records to be captured (true, the default) or removes
    /// them anyway, the gap logged (false).
    #[arg(long, value_name = "BOOL")]
    capture_block_retention: Option<bool>,
}

impl ConfigArgs {
    /// The values to set; `unlimited` sets nothing (see [`Self::unset`]).
    fn to_config(&self) -> TopicConfig {
        let value = |limit: Option<Limit>| match limit {
            Some(Limit::Value(value)) => Some(value),
            Some(Limit::Unlimited) | None => None,
        };
        TopicConfig {
            retention_ms: value(self.retention_ms),
            retention_bytes: value(self.retention_bytes),
            segment_bytes: self.segment_bytes,
            capture_dir: self
                .capture_dir
                .clone()
                .filter(|dir| dir != CAPTURE_DIR_NONE),
            capture_interval_ms: self.capture_interval,
            capture_max_bytes: self.capture_max_bytes,
            capture_format: self.capture_format.clone(),
            capture_block_retention: self.capture_block_retention,
        }
    }

    /// The config names given as `unlimited`, to unset on alter (on create, unset is the
    /// default already).
    fn unset(&self) -> Vec<String> {
        let mut unset = Vec::new();
        if self.retention_ms == Some(Limit::Unlimited) {
            unset.push("retention_ms".to_owned());
        }
        if self.retention_bytes == Some(Limit::Unlimited) {
            unset.push("retention_bytes".to_owned());
        }
        if self.capture_dir.as_deref() == Some(CAPTURE_DIR_NONE) {
            unset.push("capture_dir".to_owned());
        }
        unset
    }

    fn is_empty(&self) -> bool {
        self.retention_ms.is_none()
            && self.retention_bytes.is_none()
            && self.segment_bytes.is_none()
            && self.capture_dir.is_none()
            && self.capture_interval.is_none()
            && self.capture_max_bytes.is_none()
            && self.capture_format.is_none()
            && self.capture_block_retention.is_none()
    }
}

pub async fn run(client: &Client, command: TopicCommand, format: Format) -> Result<()> {
    let admin = client.admin();
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            config,
        } => {
            let topic = admin
                .create_topic(&name, partitions, replication_factor, config.to_config())
                .await
                .with_context(|| format!("create topic {name}"))?;
            print_topic(&topic, format, "created ");
        }
        TopicCommand::List => {
            let mut topics = admin.list_topics().await.context("list topics")?;
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            match format {
                Format::Json => {
                    let list: Vec<Value> = topics.iter().map(topic_json).collect();
                    println!("{}", Value::Array(list));
                }
                Format::Text => {
                    let width = column_width(topics.iter().map(|t| t.name.as_str()), "topic");
                    println!("{:width$}  partitions  replication", "topic");
                    for topic in &topics {
                        println!(
                            "{:width$}  {:>10}  {:>11}",
                            topic.name, topic.partitions, topic.replication_factor
                        );
                    }
                }
            }
        }
        TopicCommand::Describe { name } => {
            let topic = admin
                .describe_topic(&name)
                .await
                .with_context(|| format!("describe topic {name}"))?;
            print_topic(&topic, format, "");
        }
        TopicCommand::Delete { name } => {
            admin
                .delete_topic(&name)
                .await
                .with_context(|| format!("delete topic {name}"))?;
            match format {
                Format::Json => println!("{}", serde_json::json!({ "deleted": name })),
                Format::Text => println!("deleted topic {name}"),
            }
        }
        TopicCommand::Alter { name, config } => {
            if config.is_empty() {
                bail!(
                    "nothing to alter: give --retention-ms, --retention-bytes, --segment-bytes \
                     or a --capture-* flag"
                );
            }
            let topic = admin
                .alter_and_unset_topic_config(&name, config.to_config(), config.unset())
                .await
                .with_context(|| format!("alter topic {name}"))?;
            print_topic(&topic, format, "altered ");
        }
        TopicCommand::AddPartitions { name, total } => {
            let topic = admin
                .add_partitions(&name, total)
                .await
                .with_context(|| format!("add partitions to topic {name}"))?;
            if format == Format::Text {
                // On stderr: a note for the person, not part of the description.
                eprintln!("{KEY_MOVE_CAVEAT}");
            }
            print_topic(&topic, format, "grown ");
        }
    }
    Ok(())
}

/// The `--capture-dir` value that stops capture.
const CAPTURE_DIR_NONE: &str = "none";

/// What growing a topic means for keyed records, as Kafka's tools say it.
const KEY_MOVE_CAVEAT: &str = "note: records with a key are placed by the key's hash modulo the \
     partition count, so a key may now go to a different partition than before: per-key order \
     holds only among records produced after this change";

fn print_topic(topic: &TopicDescription, format: Format, verb: &str) {
    match format {
        Format::Json => println!("{}", topic_json(topic)),
        Format::Text => {
            println!(
                "{verb}topic {}: {}, replication factor {}",
                topic.name,
                count_text(topic.partitions, "partition"),
                topic.replication_factor
            );
            println!("config: {}", config_text(topic.config.as_ref()));
            if let Some(view) = view_text(topic.view_age_ms, &topic.unanswered_node_ids) {
                println!("{view}");
            }
            if topic.partition_info.is_empty() {
                return;
            }
            let unanswered = &topic.unanswered_node_ids;
            let rows: Vec<[String; 6]> = topic
                .partition_info
                .iter()
                .map(|info| {
                    [
                        info.partition.to_string(),
                        node_text(info.leader_node_id, unanswered),
                        node_list_text(&info.replica_node_ids, unanswered),
                        node_list_text(&info.in_sync_node_ids, unanswered),
                        info.log_start_offset.to_string(),
                        info.high_watermark.to_string(),
                    ]
                })
                .collect();
            let headers = [
                "partition",
                "leader",
                "replicas",
                "in-sync",
                "log_start",
                "high_watermark",
            ];
            let widths: Vec<usize> = (0..headers.len())
                .map(|column| {
                    column_width(rows.iter().map(|row| row[column].as_str()), headers[column])
                })
                .collect();
            let line = |cells: [&str; 6]| {
                let cells: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .map(|(cell, width)| format!("{cell:>width$}"))
                    .collect();
                println!("{}", cells.join("  "));
            };
            line(headers);
            for row in &rows {
                line([
                    row[0].as_str(),
                    row[1].as_str(),
                    row[2].as_str(),
                    row[3].as_str(),
                    row[4].as_str(),
                    row[5].as_str(),
                ]);
            }
            if rows
                .iter()
                .any(|row| row[1..4].iter().any(|cell| cell.contains('*')))
            {
                println!("{UNANSWERED_LEGEND}");
            }
            for info in &topic.partition_info {
                if let Some(next_offset) = info.capture_next_offset {
                    println!(
                        "capture: partition {} captured below offset {next_offset}, lag {}",
                        info.partition,
                        count_text(info.high_watermark.saturating_sub(next_offset), "record")
                    );
                }
            }
        }
    }
}
