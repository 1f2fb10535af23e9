//! Capture's commands on the controller metadata: the two compare-and-set commands that move
//! a partition's [`CapturePosition`] (`CaptureWindowOpen`, `CaptureWindowDone`; the
//! exactly-once argument is in `crate::capture`). The data they move is in
//! [`capture_config`](super::capture_config).

use super::capture_config::CapturePosition;
use super::metadata::{CommandRefusal, Metadata, Topic};

impl Metadata {
    /// `CaptureWindowOpen`: records `first..=last` as `partition`'s pending window, only if
    /// its position is `expected_next` with nothing pending.
    pub(super) fn open_capture_window(
        &mut self,
        topic: &str,
        topic_id: u64,
        partition: u32,
        expected_next: u64,
        first: u64,
        last: u64,
    ) -> Result<(), CommandRefusal> {
        // The last offset must leave room for the position after it (`Done` sets `last + 1`):
        // a command from a peer is checked before anything is done with its values.
        if first < expected_next || last < first || last == u64::MAX {
            return Err(CommandRefusal::Invalid(format!(
                "capture window {first}..={last} must start at or after {expected_next}, \
                 not end before it starts, and end below {}",
                u64::MAX
            )));
        }
        let known = self.captured_topic_mut(topic, topic_id, partition)?;
        let mut position = known.capture_position(partition);
        if position.next_offset != expected_next || position.pending.is_some() {
            return Err(CommandRefusal::CaptureMoved(format!(
                "{topic}/{partition} is at {} with {:?} pending, not at {expected_next} \
                 with none",
                position.next_offset, position.pending
            )));
        }
        position.pending = Some((first, last));
        known.capture.insert(partition, position);
        Ok(())
    }

    /// `CaptureWindowDone`: moves `partition`'s position past `window`, only if that window
    /// is the pending one.
    pub(super) fn finish_capture_window(
        &mut self,
        topic: &str,
        topic_id: u64,
        partition: u32,
        window: (u64, u64),
        now_ms: i64,
    ) -> Result<(), CommandRefusal> {
        let (first, last) = window;
        let known = self.captured_topic_mut(topic, topic_id, partition)?;
        let pending = known.capture_position(partition).pending;
        if pending != Some(window) {
            return Err(CommandRefusal::CaptureMoved(format!(
                "{topic}/{partition} has {pending:?} pending, not {first}..={last}"
            )));
        }
        let position = CapturePosition {
            next_offset: last + 1,
            pending: None,
            captured_ms: now_ms,
        };
        known.capture.insert(partition, position);
        Ok(())
    }

    /// The topic with this name and id (a topic deleted and re-created under the name is
    /// another topic), when it has `partition`.
    fn captured_topic_mut(
        &mut self,
        name: &str,
        topic_id: u64,
        partition: u32,
    ) -> Result<&mut Topic, CommandRefusal> {
        let topic = self
            .topics
            .get_mut(name)
            .filter(|topic| topic.id == topic_id)
            .ok_or(CommandRefusal::TopicMissing)?;
        if partition >= topic.partitions() {
            return Err(CommandRefusal::Invalid(format!(
                "topic {name} has no partition {partition}"
            )));
        }
        Ok(topic)
    }
}
