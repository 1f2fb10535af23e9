"""Known Kafka traffic for tests/tests/metrics_data.rs: confluent-kafka (librdkafka) produces
COUNT records of known sizes to partition 0 of TOPIC, then consumes them back from offset 0
with an assigned (not group-managed) consumer. Prints one JSON line
{"produced": N, "consumed": N, "value_bytes": N}; exits non-zero when a client sees an error.

    kafka_traffic.py BOOTSTRAP TOPIC COUNT
"""

import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

# Every wait on the server is bounded.
DEADLINE_S = 60


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def value(n):
    """Record n's value: 10 to 109 bytes, so batches are of varied, known sizes."""
    return b"v" * (10 + (n * 37) % 100)


def main():
    bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    errors = []
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"}
    )
    for n in range(count):
        producer.produce(
            topic,
            value=value(n),
            partition=0,
            on_delivery=lambda error, _message: errors.append(error) if error else None,
        )
    if producer.flush(DEADLINE_S) != 0:
        fail("records still unacknowledged after the deadline")
    if errors:
        fail(f"produce errors: {errors}")

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "metrics-unused",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    consumed = 0
    deadline = time.monotonic() + DEADLINE_S
    while consumed < count:
        if time.monotonic() > deadline:
            fail(f"consumed {consumed} of {count} records before the deadline")
        message = consumer.poll(1.0)
        if message is None:
            continue
        if message.error():
            fail(f"consume error: {message.error()}")
        if message.value() != value(message.offset()):
            fail(f"record {message.offset()} has the wrong value")
        consumed += 1
    consumer.close()
    value_bytes = sum(len(value(n)) for n in range(count))
    print(
        json.dumps({"produced": count, "consumed": consumed, "value_bytes": value_bytes}),
        flush=True,
    )


if __name__ == "__main__":
    main()
