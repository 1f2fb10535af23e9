"""The Kafka data path against Strata with clients nobody at Strata wrote: confluent-kafka
(librdkafka), kafka-python and aiokafka. Driven by tests/tests/kafka_data.rs, one subcommand per
scenario; each prints JSON lines the Rust test checks (against what it reads over gRPC) and
exits non-zero with a message when a client sees something wrong.

    data.py codecs BOOTSTRAP TOPIC CODEC...   produce keyed records with headers in each codec
                                              with both clients, consume them back from earliest
    data.py acks BOOTSTRAP TOPIC              acks 0, 1 and all (kafka-python: 1 and all)
    data.py timestamps BOOTSTRAP TOPIC        offsets_for_times, earliest and latest offsets
    data.py consume BOOTSTRAP TOPIC COUNT     print COUNT records from earliest (confluent-kafka)
    data.py admin BOOTSTRAP TOPIC             topic admin with kafka-python's admin client
    data.py idempotent BOOTSTRAP TOPIC COUNT [CLIENT]
                                              an idempotent producer sending COUNT records,
                                              printing each acknowledged one; CLIENT is
                                              confluent (the default), kafka-python or aiokafka
    data.py aiokafka BOOTSTRAP TOPIC BEFORE CODEC...
                                              aiokafka: metadata, keyed records with headers in
                                              each codec, offsets by time, and everything
                                              (BEFORE records already there first) read back
                                              from earliest
"""

import asyncio

import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition as KTopicPartition

# Every wait on the server is bounded.
DEADLINE_S = 60
RECORDS_PER_CODEC = 20


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def emit(kind, **fields):
    print(json.dumps({"kind": kind, **fields}), flush=True)


def confluent_producer(bootstrap, **config):
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **config})


def confluent_produce(producer, topic, records):
    """Produces (key, value, headers, timestamp) records to partition 0; returns the delivery
    reports' offsets, failing on any error."""
    reports = []

    def delivered(error, message):
        if error is not None:
            reports.append(("error", str(error)))
        else:
            reports.append(("ok", message.offset()))

    for key, value, headers, timestamp in records:
        extra = {"timestamp": timestamp} if timestamp else {}
        producer.produce(
            topic, value=value, key=key, headers=headers, partition=0, on_delivery=delivered, **extra
        )
        producer.poll(0)
    remaining = producer.flush(DEADLINE_S)
    if remaining:
        fail(f"{remaining} records not delivered within {DEADLINE_S}s")
    errors = [r for r in reports if r[0] == "error"]
    if errors:
        fail(f"delivery errors: {errors}")
    return [offset for _, offset in reports]


def records_for(tag, count):
    return [
        (
            f"k-{tag}-{i}".encode(),
            f"v-{tag}-{i}".encode() * (1 + i % 7),
            [("h", tag.encode()), ("i", str(i).encode())],
            None,
        )
        for i in range(count)
    ]


def confluent_consume(bootstrap, topic, count, start=-2):
    """Reads `count` records of partition 0 from `start` (-2: earliest) with a consumer that
    assigns the partition itself (no group)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "strata-data-test-unused",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, 0, start)])
    seen = []
    deadline = time.monotonic() + DEADLINE_S
    while len(seen) < count and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        if message.error():
            fail(f"confluent consumer error: {message.error()}")
        seen.append(
            {
                "offset": message.offset(),
                "key": (message.key() or b"").decode(),
                "value": (message.value() or b"").decode(),
                "headers": [[k, (v or b"").decode()] for k, v in (message.headers() or [])],
                "timestamp": message.timestamp()[1],
            }
        )
    consumer.close()
    if len(seen) < count:
        fail(f"confluent consumer read {len(seen)} of {count} records within {DEADLINE_S}s")
    return seen


def kafka_python_consume(bootstrap, topic, count):
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
        consumer_timeout_ms=DEADLINE_S * 1000,
    )
    partition = KTopicPartition(topic, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    seen = []
    for message in consumer:
        seen.append(
            {
                "offset": message.offset,
                "key": (message.key or b"").decode(),
                "value": (message.value or b"").decode(),
                "headers": [[k, (v or b"").decode()] for k, v in message.headers],
                "timestamp": message.timestamp,
            }
        )
        if len(seen) >= count:
            break
    consumer.close()
    if len(seen) < count:
        fail(f"kafka-python consumer read {len(seen)} of {count} records")
    return seen


def expected(records):
    return [
        {"key": k.decode(), "value": v.decode(), "headers": [[hk, hv.decode()] for hk, hv in h]}
        for k, v, h, _ in records
    ]


def strip(seen):
    return [{"key": r["key"], "value": r["value"], "headers": r["headers"]} for r in seen]


def codecs(bootstrap, topic, codec_names):
    """Each codec with each client: confluent-kafka, then kafka-python; then both consumers
    read everything back and must agree with what was sent."""
    sent = []
    for codec in codec_names:
        records = records_for(f"confluent-{codec}", RECORDS_PER_CODEC)
        producer = confluent_producer(bootstrap, **{"compression.type": codec, "acks": "all"})
        offsets = confluent_produce(producer, topic, records)
        emit("produced", client="confluent-kafka", codec=codec, offsets=offsets)
        sent.extend(records)

        records = records_for(f"kafka-python-{codec}", RECORDS_PER_CODEC)
        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            compression_type=None if codec == "none" else codec,
            acks="all",
            linger_ms=5,
        )
        futures = [
            producer.send(topic, key=k, value=v, headers=h, partition=0) for k, v, h, _ in records
        ]
        producer.flush(DEADLINE_S)
        offsets = [future.get(timeout=DEADLINE_S).offset for future in futures]
        producer.close()
        emit("produced", client="kafka-python", codec=codec, offsets=offsets)
        sent.extend(records)

    want = expected(sent)
    for name, seen in [
        ("confluent-kafka", confluent_consume(bootstrap, topic, len(sent))),
        ("kafka-python", kafka_python_consume(bootstrap, topic, len(sent))),
    ]:
        if strip(seen) != want:
            fail(f"{name} read back something else than was sent:\n{seen}\nwant\n{want}")
        offsets = [r["offset"] for r in seen]
        if offsets != sorted(set(offsets)):
            fail(f"{name} read offsets out of order or twice: {offsets}")
    for record in confluent_consume(bootstrap, topic, len(sent)):
        emit("record", **record)


def acks(bootstrap, topic):
    sent = []
    for setting in ["0", "1", "all"]:
        records = records_for(f"confluent-acks-{setting}", 5)
        producer = confluent_producer(bootstrap, acks=setting)
        offsets = confluent_produce(producer, topic, records)
        # acks 0: the client learns no offset (-1); the records must still arrive.
        if setting != "0" and any(offset < 0 for offset in offsets):
            fail(f"acks {setting}: offsets {offsets}")
        sent.extend(records)
        if setting == "0":
            # kafka-python 2.3 never writes an acks-0 request to its socket (strace shows
            # only its Metadata requests), so acks 0 is confluent-kafka's alone.
            continue
        records = records_for(f"kafka-python-acks-{setting}", 5)
        producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks=int(setting) if setting != "all" else "all"
        )
        futures = [producer.send(topic, key=k, value=v, headers=h, partition=0) for k, v, h, _ in records]
        producer.flush(DEADLINE_S)
        for future in futures:
            future.get(timeout=DEADLINE_S)
        producer.close()
        sent.extend(records)
    # Order across producers is the order they were flushed in.
    seen = strip(confluent_consume(bootstrap, topic, len(sent)))
    if seen != expected(sent):
        fail(f"acks: read back\n{seen}\nwant\n{expected(sent)}")
    emit("acks", records=len(seen))


def timestamps(bootstrap, topic):
    base = 1_700_000_000_000
    records = [
        (f"k{i}".encode(), f"t-{i}".encode(), [], base + 1000 * i) for i in range(10)
    ]
    offsets = confluent_produce(confluent_producer(bootstrap, acks="all"), topic, records)
    first = offsets[0]

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "strata-data-test-unused"})
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=DEADLINE_S)
    if (low, high) != (0, offsets[-1] + 1):
        fail(f"watermarks {(low, high)}, want (0, {offsets[-1] + 1})")
    for i, time_ms in [(0, base), (3, base + 3000), (4, base + 3500), (9, base + 9000)]:
        found = consumer.offsets_for_times([TopicPartition(topic, 0, time_ms)], timeout=DEADLINE_S)
        if found[0].error or found[0].offset != first + i:
            fail(f"confluent offsets_for_times({time_ms}) = {found[0]}, want {first + i}")
    after = consumer.offsets_for_times([TopicPartition(topic, 0, base + 99_000)], timeout=DEADLINE_S)
    # After every record: Kafka answers -1, which librdkafka reports as the end (-1).
    if after[0].offset != -1:
        fail(f"offsets_for_times after every record = {after[0]}, want -1")
    # Consuming from a time: from offset first + 5 on.
    consumer.assign([TopicPartition(topic, 0, first + 5)])
    values = []
    deadline = time.monotonic() + DEADLINE_S
    while len(values) < 5 and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        if message.error():
            fail(f"consumer error {message.error()}")
        values.append((message.value().decode(), message.timestamp()[1]))
    consumer.close()
    want = [(f"t-{i}", base + 1000 * i) for i in range(5, 10)]
    if values != want:
        fail(f"from a time: {values}, want {want}")

    k = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    partition = KTopicPartition(topic, 0)
    found = k.offsets_for_times({partition: base + 2500})
    if found[partition] is None or found[partition].offset != first + 3 or found[partition].timestamp != base + 3000:
        fail(f"kafka-python offsets_for_times = {found}, want offset {first + 3}")
    if k.beginning_offsets([partition])[partition] != 0:
        fail(f"kafka-python beginning_offsets {k.beginning_offsets([partition])}")
    if k.end_offsets([partition])[partition] != offsets[-1] + 1:
        fail(f"kafka-python end_offsets {k.end_offsets([partition])}")
    k.close()
    emit("timestamps", first=first)


def consume(bootstrap, topic, count):
    for record in confluent_consume(bootstrap, topic, count):
        emit("record", **record)


def idempotent(bootstrap, topic, count, client="confluent"):
    """Sends `count` records ("0", "1", ...) paced over a few seconds, so a leader can be
    killed mid-stream, and prints each acknowledged value."""
    if client == "kafka-python":
        return idempotent_kafka_python(bootstrap, topic, count)
    if client == "aiokafka":
        return asyncio.run(idempotent_aiokafka(bootstrap, topic, count))
    if client != "confluent":
        fail(f"unknown idempotent client {client}")
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 2,
            "message.timeout.ms": 120_000,
            "retry.backoff.ms": 100,
            "topic.metadata.refresh.interval.ms": 1000,
        }
    )
    acked = []
    errors = []

    def delivered(error, message):
        if error is not None:
            errors.append(str(error))
        else:
            acked.append((int(message.value().decode()), message.offset()))

    for i in range(count):
        producer.produce(topic, value=str(i).encode(), partition=0, on_delivery=delivered)
        producer.poll(0)
        # Paced: the stream must still be running when the test kills the leader.
        time.sleep(0.003)
    remaining = producer.flush(150)
    report_idempotent(acked, errors, remaining)


def report_idempotent(acked, errors, remaining):
    """Prints each acknowledged (value, offset) and a summary; fails when records were left
    neither delivered nor failed, or acknowledged out of order."""
    for value, offset in acked:
        emit("acked", value=value, offset=offset)
    emit("summary", acked=len(acked), errors=errors, undelivered=remaining)
    if remaining:
        fail(f"{remaining} records neither delivered nor failed")
    values = [value for value, _ in acked]
    if values != sorted(values):
        fail("an idempotent producer's acknowledgements came out of order")


def idempotent_kafka_python(bootstrap, topic, count):
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        retry_backoff_ms=100,
        delivery_timeout_ms=120_000,
        request_timeout_ms=10_000,
        metadata_max_age_ms=1000,
    )
    acked = []
    errors = []
    futures = []
    for i in range(count):
        future = producer.send(topic, value=str(i).encode(), partition=0)
        futures.append((i, future))
        time.sleep(0.003)
    producer.flush(150)
    remaining = 0
    for i, future in futures:
        if not future.is_done:
            remaining += 1
        elif future.failed():
            errors.append(f"{i}: {future.exception!r}")
        else:
            acked.append((i, future.value.offset))
    producer.close(5)
    report_idempotent(acked, errors, remaining)


async def idempotent_aiokafka(bootstrap, topic, count):
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        linger_ms=2,
        retry_backoff_ms=100,
        request_timeout_ms=10_000,
        metadata_max_age_ms=1000,
    )
    await producer.start()
    futures = []
    for i in range(count):
        futures.append(await producer.send(topic, value=str(i).encode(), partition=0))
        await asyncio.sleep(0.003)
    done, pending = await asyncio.wait(futures, timeout=150)
    acked = []
    errors = []
    for i, future in enumerate(futures):
        if future in done:
            if future.exception() is not None:
                errors.append(f"{i}: {future.exception()!r}")
            else:
                acked.append((i, future.result().offset))
    await producer.stop()
    report_idempotent(acked, errors, len(pending))


async def aiokafka_data(bootstrap, topic, before, codec_names):
    """aiokafka end to end on partition 0 of `topic` (which holds `before` records already):
    metadata, keyed records with headers in each codec, offsets by time, then every record of
    the partition from earliest, printed for the Rust test to compare with gRPC."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition as ATopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        request_timeout_ms=DEADLINE_S * 1000,
    )
    await consumer.start()
    # aiokafka's public partitions_for_topic() answers only for topics the consumer follows.
    cluster = await asyncio.wait_for(consumer._client.fetch_all_metadata(), DEADLINE_S)
    partitions = cluster.partitions_for_topic(topic)
    leader = cluster.leader_for_partition(ATopicPartition(topic, 0))
    emit("metadata", partitions=sorted(partitions or []), leader=leader)

    sent = []
    for codec in codec_names:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            compression_type=None if codec == "none" else codec,
            acks="all",
            linger_ms=5,
        )
        await producer.start()
        records = records_for(f"aiokafka-{codec}", RECORDS_PER_CODEC)
        futures = [
            await producer.send(topic, key=k, value=v, headers=h, partition=0) for k, v, h, _ in records
        ]
        results = await asyncio.wait_for(asyncio.gather(*futures), DEADLINE_S)
        await producer.stop()
        emit("produced", client="aiokafka", codec=codec, offsets=[r.offset for r in results])
        sent.extend(records)

    # Offsets by time: records stamped by the client, a second apart, in 2023, on partition 1
    # (partition 0's records are stamped now, later than these: the earliest offset at or
    # after any of these times would be partition 0's first).
    base = 1_700_000_000_000
    timed = [(f"tk{i}".encode(), f"t-{i}".encode(), [("t", b"1")], base + 1000 * i) for i in range(10)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    futures = [
        await producer.send(topic, key=k, value=v, headers=h, partition=1, timestamp_ms=t)
        for k, v, h, t in timed
    ]
    first = (await asyncio.wait_for(asyncio.gather(*futures), DEADLINE_S))[0].offset
    await producer.stop()
    partition = ATopicPartition(topic, 1)
    found = await consumer.offsets_for_times({partition: base + 3500})
    if found[partition] is None or (found[partition].offset, found[partition].timestamp) != (first + 4, base + 4000):
        fail(f"aiokafka offsets_for_times({base + 3500}) = {found}, want offset {first + 4}")
    after = await consumer.offsets_for_times({partition: base + 99_000})
    if after[partition] is not None:
        fail(f"aiokafka offsets_for_times after every record = {after}, want None")
    consumer.assign([partition])
    consumer.seek(partition, found[partition].offset)
    from_time = await consume_aiokafka(consumer, partition, 6)
    want = [(f"t-{i}", base + 1000 * i) for i in range(4, 10)]
    if [(r["value"], r["timestamp"]) for r in from_time] != want:
        fail(f"aiokafka from a time: {from_time}, want {want}")
    await consumer.seek_to_beginning(partition)
    seen = await consume_aiokafka(consumer, partition, len(timed))
    if strip(seen) != expected(timed):
        fail(f"aiokafka read back something else than was sent:\n{seen}\nwant\n{expected(timed)}")
    for record in seen:
        emit("record", partition=1, **record)

    partition = ATopicPartition(topic, 0)
    consumer.assign([partition])
    await consumer.seek_to_beginning(partition)
    seen = await consume_aiokafka(consumer, partition, before + len(sent))
    await consumer.stop()
    if strip(seen[before:]) != expected(sent):
        fail(f"aiokafka read back something else than was sent:\n{seen[before:]}\nwant\n{expected(sent)}")
    for record in seen:
        emit("record", partition=0, **record)


async def consume_aiokafka(consumer, partition, count):
    seen = []
    deadline = time.monotonic() + DEADLINE_S
    while len(seen) < count and time.monotonic() < deadline:
        batches = await consumer.getmany(partition, timeout_ms=1000, max_records=count - len(seen))
        for message in batches.get(partition, []):
            seen.append(
                {
                    "offset": message.offset,
                    "key": (message.key or b"").decode(),
                    "value": (message.value or b"").decode(),
                    "headers": [[k, (v or b"").decode()] for k, v in message.headers],
                    "timestamp": message.timestamp,
                }
            )
    if len(seen) < count:
        fail(f"aiokafka consumer read {len(seen)} of {count} records within {DEADLINE_S}s")
    return seen


def find_configs(described):
    """The {name: value} of the one resource in kafka-python's DescribeConfigs answers."""
    for response in described:
        for resource in response.resources:
            return {entry[0]: entry[1] for entry in resource[4]}
    return None


def admin(bootstrap, topic):
    """kafka-python's admin client: create with configs, validate only, refusals, describe
    configs, delete."""
    from kafka import errors
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

    client = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=DEADLINE_S * 1000)
    client.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1,
                                   topic_configs={"retention.ms": "60000",
                                                  "segment.bytes": "1048576"})])
    client.create_topics([NewTopic(topic + "-v", num_partitions=1, replication_factor=1)],
                         validate_only=True)
    try:
        client.create_topics([NewTopic(topic + "-bad", num_partitions=1, replication_factor=1,
                                       topic_configs={"cleanup.policy": "compact"})])
        fail("an unsupported config was accepted")
    except errors.InvalidConfigurationError as error:
        if "cleanup.policy" not in str(error):
            fail(f"the refusal does not name the config: {error}")
    try:
        client.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        fail("a topic was created twice")
    except errors.TopicAlreadyExistsError:
        pass
    described = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    configs = find_configs(described)
    if configs is None:
        fail(f"no configs described: {described}")
    want = {"retention.ms": "60000", "segment.bytes": "1048576", "cleanup.policy": "delete", "retention.bytes": "-1"}
    got = {key: configs.get(key) for key in want}
    if got != want:
        fail(f"described configs {got}, want {want} (all: {described})")
    listed = client.list_topics()
    if topic not in listed or topic + "-v" in listed or topic + "-bad" in listed:
        fail(f"topics after creating: {listed}")
    client.delete_topics([topic])
    deadline = time.monotonic() + DEADLINE_S
    while topic in client.list_topics():
        if time.monotonic() > deadline:
            fail(f"{topic} still listed {DEADLINE_S}s after its deletion")
        time.sleep(0.1)
    client.close()
    emit("admin", configs=got)


def main():
    command, bootstrap, topic, *rest = sys.argv[1:]
    if command == "codecs":
        codecs(bootstrap, topic, rest)
    elif command == "acks":
        acks(bootstrap, topic)
    elif command == "timestamps":
        timestamps(bootstrap, topic)
    elif command == "consume":
        consume(bootstrap, topic, int(rest[0]))
    elif command == "admin":
        admin(bootstrap, topic)
    elif command == "idempotent":
        idempotent(bootstrap, topic, int(rest[0]), *rest[1:])
    elif command == "aiokafka":
        asyncio.run(aiokafka_data(bootstrap, topic, int(rest[0]), rest[1:]))
    else:
        fail(f"unknown command {command}")


if __name__ == "__main__":
    main()
