"""confluent-kafka (librdkafka) producing or consuming COUNT records of SIZE bytes on one
partition, for benches/kafka-vs-grpc.sh. Prints one JSON line: records, bytes, seconds."""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

mode, bootstrap, topic, count, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
if mode == "produce":
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 262144,
        "queue.buffering.max.kbytes": 1048576,
        "enable.idempotence": False,
    })
    value = b"x" * size
    failed = []
    def report(error, _message):
        if error is not None:
            failed.append(error)
    started = time.monotonic()
    for _ in range(count):
        while True:
            try:
                producer.produce(topic, value, partition=0, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(120)
    elapsed = time.monotonic() - started
    if failed:
        sys.exit(f"{len(failed)} deliveries failed, first: {failed[0]}")
else:
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "kafka-bench",
        "enable.auto.commit": False,
        "fetch.max.bytes": 52428800,
        "max.partition.fetch.bytes": 10485760,
    })
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen = 0
    started = time.monotonic()
    while seen < count:
        messages = consumer.consume(10000, 10)
        if not messages and time.monotonic() - started > 120:
            sys.exit(f"only {seen} of {count} records consumed in 120 s")
        for message in messages:
            if message.error():
                sys.exit(f"consume failed: {message.error()}")
        seen += len(messages)
    elapsed = time.monotonic() - started
    consumer.close()
print(json.dumps({"records": count, "bytes": count * size, "seconds": elapsed}))
