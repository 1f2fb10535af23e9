//! `strata topic create|list|describe|delete|alter`.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use strata_client::Client;
use strata_client::proto::v1::{TopicConfig, TopicDescription};

use crate::output::{Format, column_width, config_text, topic_json};

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
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
    Describe { name: String },
    /// Delete a topic and all its records.
    Delete { name: String },
    /// Change a topic's configuration (only the values given).
    Alter {
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// The topic configuration flags; absent ones keep the broker's default (create) or the
/// current value (alter).
#[derive(Args, Debug, Default)]
pub struct ConfigArgs {
    /// Keep a segment this many milliseconds after its newest record.
    #[arg(long)]
    retention_ms: Option<u64>,
    /// Keep at most this many bytes per partition.
    #[arg(long)]
    retention_bytes: Option<u64>,
    /// Roll a partition's active segment at this size.
    #[arg(long)]
    segment_bytes: Option<u64>,
}

impl ConfigArgs {
    fn to_config(&self) -> TopicConfig {
        TopicConfig {
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            segment_bytes: self.segment_bytes,
        }
    }

    fn is_empty(&self) -> bool {
        self.retention_ms.is_none()
            && self.retention_bytes.is_none()
            && self.segment_bytes.is_none()
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
                    "nothing to alter: give --retention-ms, --retention-bytes or --segment-bytes"
                );
            }
            let topic = admin
                .alter_topic_config(&name, config.to_config())
                .await
                .with_context(|| format!("alter topic {name}"))?;
            print_topic(&topic, format, "altered ");
        }
    }
    Ok(())
}

fn print_topic(topic: &TopicDescription, format: Format, verb: &str) {
    match format {
        Format::Json => println!("{}", topic_json(topic)),
        Format::Text => {
            println!(
                "{verb}topic {}: {} partitions, replication factor {}",
                topic.name, topic.partitions, topic.replication_factor
            );
            println!("config: {}", config_text(topic.config.as_ref()));
            if topic.partition_info.is_empty() {
                return;
            }
            println!("partition  leader  replicas  log_start  high_watermark");
            for info in &topic.partition_info {
                let replicas: Vec<String> =
                    info.replica_node_ids.iter().map(u64::to_string).collect();
                let leader = match info.leader_node_id {
                    0 => "-".to_owned(),
                    id => id.to_string(),
                };
                println!(
                    "{:>9}  {:>6}  {:>8}  {:>9}  {:>14}",
                    info.partition,
                    leader,
                    replicas.join(","),
                    info.log_start_offset,
                    info.high_watermark
                );
            }
        }
    }
}
