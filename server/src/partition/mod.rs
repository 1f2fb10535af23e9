//! # Partition: one partition replica's world
//!
//! - [`producers`]: the producer table (idempotence): which batches of which producers the
//!   partition holds, rebuilt from the log.

pub mod producers;
