//! `strata cluster info`: the cluster's view, whichever node is asked. Each broker answers
//! with what it gathered from every node it could reach (each partition's leader, in-sync
//! replicas and offsets as its replicas report them), saying how old that is and which nodes
//! did not answer; the answers of the brokers given are merged (see
//! [`strata_client::merge_cluster_views`]). A node is up when it answered; a node that did not
//! is marked `*` wherever it is named, since what others last heard of it may be out of date.

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{Value, json};
use strata_client::Client;
use strata_client::proto::v1::ClusterInfoResponse;

use crate::format::Format;
use crate::output::{
    UNANSWERED_LEGEND, count_text, node_list_text, node_text, topic_json, view_text,
};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// The nodes (up or down), which leads the controller, and each partition's leader,
    /// replicas and in-sync replicas, from every node's view.
    Info,
    /// Add a node that is already running (started with an --initial-cluster list that
    /// includes it and the current nodes) to the cluster.
    AddNode {
        /// Its node id.
        node_id: u64,
        /// HOST:PORT it is reached at.
        address: String,
    },
    /// Move every replica off a node, then remove it from the cluster; waits until done (the
    /// node may be stopped afterwards).
    RemoveNode {
        /// Its node id.
        node_id: u64,
        /// Give up after this long, e.g. 5m.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },
}

pub async fn run(client: &Client, command: ClusterCommand, format: Format) -> Result<()> {
    if let ClusterCommand::RemoveNode { node_id, wait } = command {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let step = client
                .admin()
                .remove_node(node_id)
                .await
                .with_context(|| format!("remove node {node_id}"));
            match step {
                Ok(step) if step.removed => break,
                Ok(step) => {
                    if format == Format::Text {
                        eprintln!("moving {} partitions off node {node_id}", step.moving.len());
                    }
                }
                // The controller's leadership may be moving (it was the node being removed).
                Err(error) if tokio::time::Instant::now() < deadline => {
                    if format == Format::Text {
                        eprintln!("{error:#}; retrying");
                    }
                }
                Err(error) => return Err(error),
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "node {node_id} was not removed within {wait:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        match format {
            Format::Json => println!("{}", serde_json::json!({ "removed_node": node_id })),
            Format::Text => println!("removed node {node_id}"),
        }
        return Ok(());
    }
    if let ClusterCommand::AddNode { node_id, address } = command {
        client
            .admin()
            .add_node(node_id, &address)
            .await
            .with_context(|| format!("add node {node_id} at {address}"))?;
        match format {
            Format::Json => println!(
                "{}",
                serde_json::json!({ "added_node": node_id, "address": address })
            ),
            Format::Text => println!("added node {node_id} at {address}"),
        }
        return Ok(());
    }
    let views = client.admin().cluster_views().await;
    if let Some(error) = views.iter().find_map(|view| view.info.as_ref().err())
        && views.iter().all(|view| view.info.is_err())
    {
        return Err(error.clone()).context("cluster info: no broker answered");
    }
    let info = strata_client::merge_cluster_views(&views);
    let unreachable: Vec<(&str, String)> = views
        .iter()
        .filter_map(|view| {
            let error = view.info.as_ref().err()?;
            Some((view.address.as_str(), error.to_string()))
        })
        .collect();
    match format {
        Format::Json => {
            let nodes: Vec<Value> = info
                .nodes
                .iter()
                .map(|node| json!({ "node_id": node.node_id, "address": node.address, "alive": node.alive }))
                .collect();
            let topics: Vec<Value> = info.topics.iter().map(topic_json).collect();
            let unreachable: Vec<Value> = unreachable
                .iter()
                .map(|(address, error)| json!({ "address": address, "error": error }))
                .collect();
            println!(
                "{}",
                json!({
                    "connected_to": client.address(),
                    "controller_leader_node_id": info.controller_leader_node_id,
                    "nodes": nodes,
                    "topics": topics,
                    "unreachable": unreachable,
                    "view_age_ms": info.view_age_ms,
                    "unanswered_node_ids": unanswered_ids(&info),
                })
            );
        }
        Format::Text => print_text(client, &info, &unreachable),
    }
    Ok(())
}

/// The nodes that did not answer: those the brokers could not ask, and those down.
fn unanswered_ids(info: &ClusterInfoResponse) -> Vec<u64> {
    let mut ids = info.unanswered_node_ids.clone();
    ids.extend(info.nodes.iter().filter(|n| !n.alive).map(|n| n.node_id));
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn print_text(client: &Client, info: &ClusterInfoResponse, unreachable: &[(&str, String)]) {
    let node = |id: u64| match id {
        0 => "none".to_owned(),
        id => id.to_string(),
    };
    let unanswered = unanswered_ids(info);
    println!("connected to {}", client.address());
    println!(
        "controller leader: node {}",
        node(info.controller_leader_node_id)
    );
    println!("node  address                status");
    for node in &info.nodes {
        println!(
            "{:>4}  {:21}  {}",
            node.node_id,
            node.address,
            if node.alive { "up" } else { "down" }
        );
    }
    for (address, error) in unreachable {
        println!("unreachable: {address}: {error}");
    }
    let partitions: u32 = info.topics.iter().map(|topic| topic.partitions).sum();
    println!(
        "{}, {}",
        count_text(info.topics.len() as u64, "topic"),
        count_text(partitions, "partition")
    );
    if let Some(view) = view_text(info.view_age_ms, &unanswered) {
        println!("{view}");
    }
    if info.topics.is_empty() {
        return;
    }
    let width = info
        .topics
        .iter()
        .map(|topic| topic.name.len())
        .max()
        .unwrap_or(0)
        .max("topic".len());
    println!("{:width$}  partition  leader  replicas  in-sync", "topic");
    let mut marked = false;
    for topic in &info.topics {
        for partition in &topic.partition_info {
            let leader = node_text(partition.leader_node_id, &unanswered);
            let replicas = node_list_text(&partition.replica_node_ids, &unanswered);
            let in_sync = node_list_text(&partition.in_sync_node_ids, &unanswered);
            marked |= [&leader, &replicas, &in_sync]
                .iter()
                .any(|cell| cell.contains('*'));
            println!(
                "{:width$}  {:>9}  {:>6}  {:8}  {}",
                topic.name, partition.partition, leader, replicas, in_sync,
            );
        }
    }
    if marked {
        println!("{UNANSWERED_LEGEND}");
    }
}
