//! `strata cluster info`.

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{Value, json};
use strata_client::Client;

use crate::output::{Format, topic_json};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// The nodes, which leads the controller, and the topics.
    Info,
}

pub async fn run(client: &Client, command: ClusterCommand, format: Format) -> Result<()> {
    let ClusterCommand::Info = command;
    let info = client
        .admin()
        .cluster_info()
        .await
        .context("cluster info")?;
    match format {
        Format::Json => {
            let nodes: Vec<Value> = info
                .nodes
                .iter()
                .map(|node| json!({ "node_id": node.node_id, "address": node.address, "alive": node.alive }))
                .collect();
            let topics: Vec<Value> = info.topics.iter().map(topic_json).collect();
            println!(
                "{}",
                json!({
                    "connected_to": client.address(),
                    "controller_leader_node_id": info.controller_leader_node_id,
                    "nodes": nodes,
                    "topics": topics,
                })
            );
        }
        Format::Text => {
            println!("connected to {}", client.address());
            let leader = match info.controller_leader_node_id {
                0 => "unknown".to_owned(),
                id => id.to_string(),
            };
            println!("controller leader: node {leader}");
            println!("node  address                alive");
            for node in &info.nodes {
                println!(
                    "{:>4}  {:21}  {}",
                    node.node_id,
                    node.address,
                    if node.alive { "yes" } else { "no" }
                );
            }
            let partitions: u32 = info.topics.iter().map(|topic| topic.partitions).sum();
            println!("{} topics, {partitions} partitions", info.topics.len());
        }
    }
    Ok(())
}
