//! Checks on raft messages from other nodes before a group steps them.
//!
//! Nothing from the network is trusted: a message a peer sends is stepped only when it could
//! have come from a member of its group, and a snapshot (which resets a replica's log to start
//! at its point, discarding what the replica holds) only when it comes from the leader this node
//! follows, in the current term. The transport has already checked that the message names the
//! stream's node as its sender and this node as its receiver (see `peer`).
//!
//! Without authentication a peer can still claim to be a member; mutual TLS between nodes binds
//! the claim to a certificate. What these checks remove is the damage a single stray or forged
//! message could do on its own: a snapshot from outside the group or from a term nobody
//! elected, snapshot data that does not parse, entries that the log would refuse to append.

use raft::prelude::{EntryType, Message, MessageType};
use raft::{RawNode, StateRole};

use super::handle::{CONTROLLER, RaftGroupId};
use super::raft_storage::{RaftStorage, snapshot_start_offset};
use crate::storage::batch::BatchHeader;

/// The largest term a log can hold: batches carry the term as a 31-bit leader epoch.
pub const TERM_MAX: u64 = i32::MAX as u64;

/// Why a peer's message was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("node {from} is not a member of the group")]
    NotMember { from: u64 },
    #[error("term {term} is no peer's: 0 marks local messages, and {TERM_MAX} is the largest")]
    ImpossibleTerm { term: u64 },
    #[error("{kind:?} is a node's own message, never a peer's")]
    LocalOnly { kind: MessageType },
    #[error(
        "{kind:?} from node {from} in term {term}, but this node follows node {leader} in term \
         {current_term}"
    )]
    NotFromLeader {
        kind: MessageType,
        from: u64,
        term: u64,
        leader: u64,
        current_term: u64,
    },
    #[error("snapshot is malformed: {0}")]
    MalformedSnapshot(String),
    #[error("entry {index} cannot be appended: {reason}")]
    MalformedEntry { index: u64, reason: String },
}

/// Checks `message` for group `id` on this node (`node`).
///
/// # Errors
/// The first check the message fails; it must be dropped, not stepped.
pub fn check(
    id: RaftGroupId,
    node: &RawNode<RaftStorage>,
    desired_voters: Option<&[u64]>,
    batch_bytes_max: usize,
    message: &Message,
) -> Result<(), Rejection> {
    let raft = &node.raft;
    let from = message.from;
    // Members are the voters and learners of the applied configuration (both halves of a
    // joint one) and the replicas the metadata names: a replica that lags behind a membership
    // change must still hear from the members that change added, or it never catches up. The
    // controller's membership changes only by conf changes its nodes replicate among
    // themselves, so a lagging controller replica has the same need; its joining nodes are in
    // its metadata, which this layer does not see: the controller takes any node.
    let member = id == CONTROLLER
        || raft.prs().get(from).is_some()
        || desired_voters.is_some_and(|voters| voters.contains(&from));
    if !member {
        return Err(Rejection::NotMember { from });
    }
    // Terms are stamped into batches as a 31-bit leader epoch, so no real term passes it; a
    // term near u64::MAX would make raft overflow when it next campaigns.
    // Term 0 marks a node's own local messages in raft: stepped from a peer, it would skip
    // every term check. So do the local message types.
    if message.term == 0 || message.term > TERM_MAX {
        return Err(Rejection::ImpossibleTerm { term: message.term });
    }
    if matches!(
        message.msg_type,
        MessageType::MsgHup
            | MessageType::MsgBeat
            | MessageType::MsgPropose
            | MessageType::MsgUnreachable
            | MessageType::MsgSnapStatus
            | MessageType::MsgCheckQuorum
            | MessageType::MsgTransferLeader
            | MessageType::MsgReadIndex
            | MessageType::MsgReadIndexResp
    ) {
        return Err(Rejection::LocalOnly {
            kind: message.msg_type,
        });
    }
    let not_from_leader = || Rejection::NotFromLeader {
        kind: message.msg_type,
        from,
        term: message.term,
        leader: raft.leader_id,
        current_term: raft.term,
    };
    // Only the leader, in its term, tells a follower to campaign at once (a hand-over).
    if message.msg_type == MessageType::MsgTimeoutNow
        && (raft.leader_id != from || raft.term != message.term)
    {
        return Err(not_from_leader());
    }
    if message.msg_type == MessageType::MsgSnapshot {
        let follows = raft.state == StateRole::Follower
            && raft.leader_id == from
            && raft.term == message.term;
        if !follows {
            return Err(not_from_leader());
        }
        let snapshot = message.get_snapshot();
        let metadata = snapshot.get_metadata();
        let start_offset = snapshot_start_offset(&snapshot.data)
            .map_err(|error| Rejection::MalformedSnapshot(error.to_string()))?;
        // Offsets never go back: a snapshot past this node's commit index starts at or after
        // the offset that follows what this node has committed.
        let committed = raft.raft_log.committed;
        if metadata.index > committed {
            let log = node.store().log().read().expect("log lock poisoned");
            let floor = log
                .offset_after_raft_index(committed)
                .unwrap_or_else(|_| log.log_start_offset());
            if start_offset < floor {
                return Err(Rejection::MalformedSnapshot(format!(
                    "it starts the log at offset {start_offset}, below offset {floor} that \
                     follows what this node committed"
                )));
            }
        }
        if metadata.index == 0 || metadata.term == 0 || metadata.term > message.term {
            return Err(Rejection::MalformedSnapshot(format!(
                "index {} term {} in a message of term {}",
                metadata.index, metadata.term, message.term
            )));
        }
        if metadata.get_conf_state().voters.is_empty() {
            return Err(Rejection::MalformedSnapshot(
                "its configuration has no voters".to_string(),
            ));
        }
    }
    if message.msg_type == MessageType::MsgAppend {
        // Entries follow the message's index, one after another, in terms that never go back
        // and never pass the message's own: raft (and the log under it) takes that for given.
        let mut previous = (message.index, message.log_term);
        for entry in message.get_entries() {
            let (index, term) = previous;
            if index.checked_add(1) != Some(entry.index)
                || entry.term < term
                || entry.term > message.term
            {
                return Err(Rejection::MalformedEntry {
                    index: entry.index,
                    reason: format!(
                        "entry {} of term {} cannot follow entry {index} of term {term} in a \
                         message of term {}",
                        entry.index, entry.term, message.term
                    ),
                });
            }
            previous = (entry.index, entry.term);
            if entry.entry_type != EntryType::EntryNormal || entry.data.is_empty() {
                continue;
            }
            let reason = if entry.data.len() > batch_bytes_max {
                Some(format!(
                    "a batch of {} bytes is over the log's limit of {batch_bytes_max}",
                    entry.data.len()
                ))
            } else {
                BatchHeader::validate(&entry.data)
                    .err()
                    .map(|error| error.to_string())
            };
            if let Some(reason) = reason {
                return Err(Rejection::MalformedEntry {
                    index: entry.index,
                    reason,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};

    use bytes::{BufMut, Bytes, BytesMut};
    use raft::prelude::{ConfState, Entry, Snapshot};

    use super::*;
    use crate::storage::batch::BatchBuilder;
    use crate::storage::{LogConfig, PartitionLog};

    const GROUP: RaftGroupId = 7;

    /// Node 1 of group {1, 2, 3}, following node 2 in term 5.
    fn follower(dir: &std::path::Path) -> RawNode<RaftStorage> {
        let log = PartitionLog::open(dir, LogConfig::default()).expect("open");
        let storage = RaftStorage::open(Arc::new(RwLock::new(log)), &[1, 2, 3]).expect("storage");
        let config = raft::Config {
            id: 1,
            ..raft::Config::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut node = RawNode::new(&config, storage, &logger).expect("raw node");
        let mut heartbeat = message(2, MessageType::MsgHeartbeat, 5);
        heartbeat.commit = 0;
        node.step(heartbeat).expect("heartbeat");
        assert_eq!((node.raft.leader_id, node.raft.term), (2, 5));
        node
    }

    fn message(from: u64, kind: MessageType, term: u64) -> Message {
        Message {
            from,
            to: 1,
            msg_type: kind,
            term,
            ..Message::default()
        }
    }

    /// A snapshot message at raft index 100 of `term`, whose data is `data`.
    fn snapshot(from: u64, term: u64, data: Bytes) -> Message {
        let mut snapshot = Snapshot::default();
        let metadata = snapshot.mut_metadata();
        metadata.index = 100;
        metadata.term = term;
        metadata.set_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
        snapshot.data = data;
        let mut message = message(from, MessageType::MsgSnapshot, term);
        message.set_snapshot(snapshot);
        message
    }

    fn start_offset(offset: u64) -> Bytes {
        let mut data = BytesMut::new();
        data.put_u64(offset);
        data.freeze()
    }

    /// The forged messages of the hostile-input report, and what a member may send.
    #[test]
    fn only_members_and_the_followed_leader_get_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = follower(dir.path());
        let check = |message: &Message| check(GROUP, &node, None, 1 << 20, message);

        assert_eq!(
            check(&message(99, MessageType::MsgHeartbeat, 5)),
            Err(Rejection::NotMember { from: 99 })
        );
        assert_eq!(check(&message(3, MessageType::MsgHeartbeat, 5)), Ok(()));
        // The erasing snapshot: from no node, far in the future, moving the log start.
        assert!(matches!(
            check(&snapshot(99, 1000, start_offset(5_000_000))),
            Err(Rejection::NotMember { .. })
        ));
        // From a member that is not the leader, or from the leader in a term nobody elected.
        assert!(matches!(
            check(&snapshot(3, 5, start_offset(10))),
            Err(Rejection::NotFromLeader { .. })
        ));
        assert!(matches!(
            check(&snapshot(2, 1000, start_offset(10))),
            Err(Rejection::NotFromLeader { .. })
        ));
        // From the leader, in its term: only well-formed data.
        assert!(matches!(
            check(&snapshot(2, 5, Bytes::from_static(b"short"))),
            Err(Rejection::MalformedSnapshot(_))
        ));
        assert_eq!(check(&snapshot(2, 5, start_offset(10))), Ok(()));
        // Desired voters (the metadata's replicas) count as members.
        let joining = message(4, MessageType::MsgHeartbeat, 5);
        assert!(check(&joining).is_err());
        assert_eq!(
            super::check(GROUP, &node, Some(&[1, 2, 4]), 1 << 20, &joining),
            Ok(())
        );
        // The controller hears from any node (its joining nodes are in its metadata).
        assert_eq!(
            super::check(CONTROLLER, &node, None, 1 << 20, &joining),
            Ok(())
        );
    }

    /// Entries the log would refuse (a bad CRC, over the batch limit) are refused with the
    /// message, before raft takes them.
    #[test]
    fn appends_carry_only_batches_the_log_takes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = follower(dir.path());
        let mut builder = BatchBuilder::new();
        builder.push(1, None, Some(b"value"), &[]);
        let good = builder.finish().freeze();
        let mut bad = BytesMut::from(&good[..]);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let append = |data: Bytes| {
            let mut message = message(2, MessageType::MsgAppend, 5);
            message.set_entries(
                vec![Entry {
                    index: 1,
                    term: 5,
                    data,
                    ..Entry::default()
                }]
                .into(),
            );
            message
        };
        assert_eq!(
            check(GROUP, &node, None, 1 << 20, &append(good.clone())),
            Ok(())
        );
        assert!(matches!(
            check(GROUP, &node, None, 1 << 20, &append(bad.freeze())),
            Err(Rejection::MalformedEntry { index: 1, .. })
        ));
        assert!(matches!(
            check(GROUP, &node, None, 16, &append(good)),
            Err(Rejection::MalformedEntry { index: 1, .. })
        ));
    }

    /// A batch of three records, as a producer would send it.
    fn three_records() -> Bytes {
        let mut builder = BatchBuilder::new();
        for value in [&b"one"[..], b"two", b"three"] {
            builder.push(1, Some(b"key"), Some(value), &[]);
        }
        builder.finish().freeze()
    }

    /// An append from node 2, leader of term 5, of `entries` at raft indexes 1, 2, ...
    fn append_of(entries: Vec<Bytes>, commit: u64) -> Message {
        let mut append = message(2, MessageType::MsgAppend, 5);
        append.commit = commit;
        append.set_entries(
            (1..)
                .zip(entries)
                .map(|(index, data)| Entry {
                    index,
                    term: 5,
                    data,
                    ..Entry::default()
                })
                .collect::<Vec<_>>()
                .into(),
        );
        append
    }

    /// This is the only check of a replicated batch before the follower's log takes it (the
    /// log no longer checks CRCs on append): a bit flipped in any byte the CRC or the framing
    /// covers, anywhere in a message of several entries, refuses the whole message. Only the
    /// base offset (bytes 0..8) and the leader epoch (12..16) are free: the broker stamps
    /// them at append, outside the CRC.
    #[test]
    fn any_corrupted_byte_of_any_entry_refuses_the_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = follower(dir.path());
        let good = three_records();
        assert_eq!(
            check(
                GROUP,
                &node,
                None,
                1 << 20,
                &append_of(vec![good.clone(); 3], 0)
            ),
            Ok(())
        );
        let stamped = |at: usize| (0..8).contains(&at) || (12..16).contains(&at);
        for at in 0..good.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = BytesMut::from(&good[..]);
                bad[at] ^= bit;
                let append = append_of(vec![good.clone(), bad.freeze(), good.clone()], 0);
                let checked = check(GROUP, &node, None, 1 << 20, &append);
                if stamped(at) {
                    assert_eq!(checked, Ok(()), "byte {at} is the broker's to stamp");
                } else {
                    assert!(
                        matches!(checked, Err(Rejection::MalformedEntry { index: 2, .. })),
                        "bit {bit:#x} of byte {at} flipped: {checked:?}"
                    );
                }
            }
        }
        // Framing: a batch cut short, or with bytes after its end. (Cut to nothing it is a
        // leader's empty entry, which raft appends to commit its term: allowed.)
        for cut in [1, 20, 60, good.len() - 1] {
            let append = append_of(vec![good.slice(..cut)], 0);
            assert!(
                matches!(
                    check(GROUP, &node, None, 1 << 20, &append),
                    Err(Rejection::MalformedEntry { index: 1, .. })
                ),
                "cut at {cut}"
            );
        }
        let mut longer = BytesMut::from(&good[..]);
        longer.put_u8(0);
        assert!(matches!(
            check(
                GROUP,
                &node,
                None,
                1 << 20,
                &append_of(vec![longer.freeze()], 0)
            ),
            Err(Rejection::MalformedEntry { index: 1, .. })
        ));
    }

    /// Through the driver: an append with a corrupted entry is dropped whole and counted, the
    /// follower's log stays as it was, and the same append without the damage is taken.
    #[test]
    fn the_driver_drops_an_append_with_a_corrupted_entry() {
        use crate::replication::GroupSpec;
        use crate::replication::driver::Driver;
        use crate::replication::handle::Command;
        use raft::Storage as _;
        use tokio::sync::watch;

        let dir = tempfile::tempdir().expect("tempdir");
        let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
        let log = Arc::new(RwLock::new(log));
        let mut driver = Driver::for_simulation(1, Arc::new(crate::replication::NoPeers));
        driver
            .add_group(GroupSpec {
                id: GROUP,
                log: log.clone(),
                voters: vec![1, 2, 3],
                machine: crate::simulation::LogMachine,
                applied: 0,
                replay_committed: false,
                high_watermark: watch::channel(0).0,
                leader: watch::channel(0).0,
                term: Default::default(),
                in_sync: watch::channel(Vec::new()).0,
                preferred_leader: None,
                stopped: None,
            })
            .expect("add group");
        let mut step = |message: Message| {
            driver.handle(Command::Step(vec![(GROUP, message)], Arc::from("test")));
            driver.process_ready();
            driver.process_ready();
            let last = driver.groups[&GROUP]
                .node
                .store()
                .last_index()
                .expect("last index");
            (last, driver.rejected_messages())
        };
        let mut heartbeat = message(2, MessageType::MsgHeartbeat, 5);
        heartbeat.commit = 0;
        assert_eq!(step(heartbeat), (0, 0));

        let good = three_records();
        let mut bad = BytesMut::from(&good[..]);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let corrupted = append_of(vec![good.clone(), bad.freeze(), good.clone()], 3);
        assert_eq!(
            step(corrupted),
            (0, 1),
            "the corrupted append was refused whole"
        );
        assert_eq!(log.read().expect("log").next_offset(), 0);

        let intact = append_of(vec![good.clone(); 3], 3);
        assert_eq!(step(intact), (3, 1), "the intact append was taken");
        assert_eq!(log.read().expect("log").next_offset(), 9);
    }
}
