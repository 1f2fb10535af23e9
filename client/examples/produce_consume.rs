//! Creates a topic, produces keyed records to it, and reads them back.
//!
//! Start a broker, then:
//!
//! ```text
//! cargo run -p strata-server --bin strata-server -- --node-id 1 --listen 127.0.0.1:9092 --data-dir /tmp/strata
//! cargo run -p strata-client --example produce_consume
//! ```
//!
//! The broker list comes from `STRATA_BROKERS` (default `127.0.0.1:9092`).

use std::collections::HashMap;

use strata_client::proto::v1::{ErrorCode, TopicConfig};
use strata_client::{
    Client, ConsumerConfig, ProducerConfig, ProducerRecord, RecordMetadata, StartFrom,
};

const TOPIC: &str = "example-orders";
const PARTITIONS: u32 = 3;
const RECORDS: u32 = 1000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let brokers = strata_client::brokers_from_env();
    let client = Client::connect(&brokers).await?;
    println!("connected to {}", client.address());

    // Creating a topic that exists is fine for an example run twice.
    match client
        .admin()
        .create_topic(TOPIC, PARTITIONS, 1, TopicConfig::default())
        .await
    {
        Ok(_) => println!("created topic {TOPIC}"),
        Err(error) if error.code() == Some(ErrorCode::TopicAlreadyExists) => {
            println!("topic {TOPIC} exists")
        }
        Err(error) => return Err(error.into()),
    }

    // Produce: send() waits only for buffer room; the deliveries resolve once committed.
    let producer = client.producer(ProducerConfig::default())?;
    let mut deliveries = Vec::new();
    for i in 0..RECORDS {
        let record = ProducerRecord::new(TOPIC, format!("order {i}"))
            .key(format!("customer-{}", i % 10))
            .header("source", "example");
        deliveries.push(producer.send(record).await?);
    }
    let mut last: HashMap<u32, RecordMetadata> = HashMap::new();
    for delivery in deliveries {
        let stored = delivery.await?;
        last.insert(stored.partition, stored);
    }
    producer.close().await?;
    println!("produced {RECORDS} records");

    // Consume each partition from the start up to the last offset this run wrote.
    for (partition, stored) in last {
        let mut consumer = client
            .subscribe(
                TOPIC,
                partition,
                StartFrom::Earliest,
                ConsumerConfig::default(),
            )
            .await?;
        let mut count = 0u64;
        while let Some(record) = consumer.next().await? {
            count += 1;
            if record.offset == stored.offset {
                let key = record.key.as_deref().map(String::from_utf8_lossy);
                let value = record.value.as_deref().map(String::from_utf8_lossy);
                println!(
                    "partition {partition}: {count} records, last offset {} key {key:?} value {value:?}",
                    record.offset
                );
                break;
            }
        }
    }
    Ok(())
}
