#!/usr/bin/env python3
"""A Kafka consumer group on Strata, with a client nobody at Strata wrote.

Driven by tests/tests/kafka_groups.rs. Two members (A, B) share a topic; B leaves and C joins
while records keep coming; every record must be processed, and the offsets committed must be
each partition's end. Members commit synchronously after each record they process, so what
a rebalance moves is redelivered at most (at-least-once): duplicates are allowed, gaps are not.

    groups.py --client {confluent-range,confluent-cooperative,kafka-python,aiokafka}
              --bootstrap HOST:PORT --topic T --group G --partitions 6 --records N

Prints one line `RESULT {json}` (committed offsets and end offsets per partition, as the client
read them back with OffsetFetch and ListOffsets) and exits 0; exits 1 with the reason
otherwise. Every wait has a deadline.
"""

import argparse
import asyncio
import json
import sys
import threading
import time
import traceback

PHASE_TIMEOUT_S = 60.0


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def wait_until(condition, what, timeout_s=PHASE_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


class Shared:
    """What the members report, under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.processed = {}  # value -> times processed
        self.assignments = {}  # member name -> sorted partitions
        self.errors = []

    def process(self, value):
        with self.lock:
            self.processed[value] = self.processed.get(value, 0) + 1

    def assigned(self, name, partitions):
        with self.lock:
            self.assignments[name] = sorted(partitions)

    def distinct(self):
        with self.lock:
            return len(self.processed)

    def assignment(self, name):
        with self.lock:
            return list(self.assignments.get(name, []))


class Member(threading.Thread):
    """One group member: polls, processes, commits after each record; stops on request."""

    def __init__(self, name, client, args, shared):
        super().__init__(name=name, daemon=True)
        self.member = name
        self.client = client
        self.args = args
        self.shared = shared
        self.stop = threading.Event()
        self.stopped = threading.Event()

    def run(self):
        try:
            if self.client.startswith("confluent"):
                self.run_confluent()
            elif self.client == "kafka-python":
                self.run_kafka_python()
            else:
                asyncio.run(self.run_aiokafka())
        except Exception:  # reported to the main thread, which fails the run
            self.shared.errors.append(f"{self.member}: {traceback.format_exc()}")
        finally:
            self.stopped.set()

    def run_confluent(self):
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        strategy = "cooperative-sticky" if self.client == "confluent-cooperative" else "range"
        consumer = Consumer({
            "bootstrap.servers": self.args.bootstrap,
            "group.id": self.args.group,
            "client.id": f"groups-{self.member}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "partition.assignment.strategy": strategy,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500,
            "max.poll.interval.ms": 30000,
        })
        consumer.subscribe([self.args.topic])
        while not self.stop.is_set():
            message = consumer.poll(0.1)
            self.shared.assigned(self.member, [tp.partition for tp in consumer.assignment()])
            if message is None:
                continue
            if message.error():
                # Partition EOF and transient errors are informational here.
                continue
            self.shared.process(message.value().decode())
            try:
                consumer.commit(
                    offsets=[TopicPartition(message.topic(), message.partition(),
                                            message.offset() + 1)],
                    asynchronous=False)
            except KafkaException:
                # A rebalance moved the partition: the record comes again to its new owner.
                pass
        consumer.close()

    def run_kafka_python(self):
        from kafka import KafkaConsumer
        from kafka.errors import CommitFailedError, KafkaError
        from kafka.structs import OffsetAndMetadata

        consumer = KafkaConsumer(
            self.args.topic,
            bootstrap_servers=self.args.bootstrap,
            group_id=self.args.group,
            client_id=f"groups-{self.member}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=10000,
            heartbeat_interval_ms=500,
            max_poll_interval_ms=30000,
        )
        while not self.stop.is_set():
            polled = consumer.poll(timeout_ms=100)
            self.shared.assigned(self.member, [tp.partition for tp in consumer.assignment()])
            for tp, records in polled.items():
                for record in records:
                    self.shared.process(record.value.decode())
                    try:
                        consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
                    except (CommitFailedError, KafkaError):
                        pass
        consumer.close()

    async def run_aiokafka(self):
        from aiokafka import AIOKafkaConsumer
        from aiokafka.errors import CommitFailedError, KafkaError

        consumer = AIOKafkaConsumer(
            self.args.topic,
            bootstrap_servers=self.args.bootstrap,
            group_id=self.args.group,
            client_id=f"groups-{self.member}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=10000,
            heartbeat_interval_ms=500,
            max_poll_interval_ms=30000,
        )
        await consumer.start()
        try:
            while not self.stop.is_set():
                polled = await consumer.getmany(timeout_ms=100)
                self.shared.assigned(self.member,
                                     [tp.partition for tp in consumer.assignment()])
                for tp, records in polled.items():
                    for record in records:
                        self.shared.process(record.value.decode())
                        try:
                            await consumer.commit({tp: record.offset + 1})
                        except (CommitFailedError, KafkaError):
                            pass
        finally:
            await consumer.stop()

    def leave(self):
        self.stop.set()
        if not self.stopped.wait(PHASE_TIMEOUT_S):
            fail(f"member {self.member} did not close within {PHASE_TIMEOUT_S}s")


def produce(args, first, count):
    """Produces values v{first}..v{first+count-1} with keys spreading them over partitions."""
    values = [f"v{i}" for i in range(first, first + count)]
    if args.client.startswith("confluent"):
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": args.bootstrap})
        errors = []

        def delivered(error, _message):
            if error is not None:
                errors.append(str(error))

        for value in values:
            producer.produce(args.topic, key=f"k{value}".encode(), value=value.encode(),
                             on_delivery=delivered)
        left = producer.flush(PHASE_TIMEOUT_S)
        if left != 0 or errors:
            fail(f"confluent producer: {left} records undelivered, errors {errors[:5]}")
    elif args.client == "kafka-python":
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=args.bootstrap)
        futures = [producer.send(args.topic, key=f"k{v}".encode(), value=v.encode())
                   for v in values]
        for future in futures:
            future.get(timeout=PHASE_TIMEOUT_S)
        producer.close()
    else:
        from aiokafka import AIOKafkaProducer

        async def send():
            producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap)
            await producer.start()
            try:
                for value in values:
                    await producer.send_and_wait(args.topic, key=f"k{value}".encode(),
                                                 value=value.encode())
            finally:
                await producer.stop()

        asyncio.run(send())
    return first + count


def read_back(args):
    """Committed offsets (OffsetFetch) and end offsets (ListOffsets), per partition."""
    partitions = range(args.partitions)
    if args.client.startswith("confluent"):
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group,
                             "enable.auto.commit": False})
        committed = consumer.committed([TopicPartition(args.topic, p) for p in partitions],
                                       timeout=PHASE_TIMEOUT_S)
        ends = [consumer.get_watermark_offsets(TopicPartition(args.topic, p),
                                               timeout=PHASE_TIMEOUT_S)[1] for p in partitions]
        consumer.close()
        return [tp.offset for tp in committed], ends
    if args.client == "kafka-python":
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, group_id=args.group,
                                 enable_auto_commit=False)
        tps = [TopicPartition(args.topic, p) for p in partitions]
        committed = [consumer.committed(tp) for tp in tps]
        ends = consumer.end_offsets(tps)
        consumer.close()
        return [-1 if c is None else c for c in committed], [ends[tp] for tp in tps]
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    async def read():
        consumer = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, group_id=args.group,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(args.topic, p) for p in partitions]
            committed = [await consumer.committed(tp) for tp in tps]
            ends = await consumer.end_offsets(tps)
            return [-1 if c is None else c for c in committed], [ends[tp] for tp in tps]
        finally:
            await consumer.stop()

    return asyncio.run(read())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", required=True,
                        choices=["confluent-range", "confluent-cooperative", "kafka-python",
                                 "aiokafka"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--records", type=int, default=300)
    args = parser.parse_args()
    shared = Shared()
    third = args.records // 3

    def check_errors():
        if shared.errors:
            fail("a member failed:\n" + "\n".join(shared.errors))

    def all_processed(count):
        return lambda: (check_errors() or shared.distinct() >= count)

    # Phase 1: A and B share the partitions.
    produced = produce(args, 0, third)
    a = Member("a", args.client, args, shared)
    b = Member("b", args.client, args, shared)
    a.start()
    b.start()
    wait_until(lambda: check_errors() or (
        shared.assignment("a") and shared.assignment("b")
        and len(shared.assignment("a")) + len(shared.assignment("b")) == args.partitions
        and not set(shared.assignment("a")) & set(shared.assignment("b"))),
        "A and B to share the partitions")
    print(f"phase 1: a={shared.assignment('a')} b={shared.assignment('b')}", flush=True)
    wait_until(all_processed(produced), f"{produced} records processed by A and B")
    # Phase 2: B leaves; A takes everything.
    b.leave()
    produced = produce(args, produced, third)
    wait_until(lambda: check_errors() or len(shared.assignment("a")) == args.partitions,
               "A to hold every partition after B left")
    wait_until(all_processed(produced), f"{produced} records processed by A alone")
    print(f"phase 2: a={shared.assignment('a')}", flush=True)
    # Phase 3: C joins and takes a share.
    c = Member("c", args.client, args, shared)
    c.start()
    wait_until(lambda: check_errors() or (
        shared.assignment("c") and shared.assignment("a")
        and len(shared.assignment("a")) + len(shared.assignment("c")) == args.partitions
        and not set(shared.assignment("a")) & set(shared.assignment("c"))),
        "A and C to share the partitions")
    print(f"phase 3: a={shared.assignment('a')} c={shared.assignment('c')}", flush=True)
    produced = produce(args, produced, args.records - 2 * third)
    wait_until(all_processed(produced), f"{produced} records processed by A and C")
    a.leave()
    c.leave()
    check_errors()
    expected = {f"v{i}" for i in range(produced)}
    missing = expected - set(shared.processed)
    if missing:
        fail(f"records never processed: {sorted(missing)[:20]}")
    committed, ends = read_back(args)
    if committed != ends:
        fail(f"committed offsets {committed} are not the partitions' ends {ends}")
    duplicates = sum(times - 1 for times in shared.processed.values())
    print("RESULT " + json.dumps({"committed": committed, "ends": ends,
                                  "processed": len(shared.processed),
                                  "duplicates": duplicates}), flush=True)


if __name__ == "__main__":
    main()
