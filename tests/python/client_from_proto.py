"""A Strata client written from proto/ alone: generate the stubs, create a topic, produce
records, consume them decoded. Exits non-zero on any mismatch.

    python3 -m grpc_tools.protoc -I proto --python_out=OUT --grpc_python_out=OUT \
        proto/strata/v1/strata.proto
    PYTHONPATH=OUT python3 client_from_proto.py HOST:PORT
"""

import sys

import grpc

from strata.v1 import strata_pb2 as pb
from strata.v1 import strata_pb2_grpc as rpc


def main(address: str) -> None:
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=10)
    admin = rpc.AdminStub(channel)
    broker = rpc.BrokerStub(channel)

    topic = admin.CreateTopic(
        pb.CreateTopicRequest(name="from-python", partitions=2, replication_factor=1),
        timeout=10,
    )
    assert topic.partitions == 2, topic

    sent = []
    for i in range(50):
        key = f"key-{i % 5}".encode()
        value = f"value-{i}".encode()
        reply = broker.Produce(
            pb.ProduceRequest(
                topic="from-python",
                partition_key=key,
                records=pb.RecordList(
                    records=[
                        pb.Record(
                            key=key,
                            value=value,
                            headers=[pb.RecordHeader(key="lang", value=b"python")],
                        )
                    ]
                ),
            ),
            timeout=10,
        )
        sent.append((reply.partition, reply.base_offset, key, value))

    received = {}
    for partition in range(2):
        fetched = broker.Fetch(
            pb.FetchRequest(
                topic="from-python",
                partition=partition,
                start=pb.StartPosition(earliest=True),
                decode=True,
                max_bytes=1 << 20,
            ),
            timeout=10,
        )
        for record in fetched.records:
            assert record.headers[0].key == "lang" and record.headers[0].value == b"python"
            received[(partition, record.offset)] = (record.key, record.value)

    for partition, offset, key, value in sent:
        assert received[(partition, offset)] == (key, value), (partition, offset)
    assert len(received) == len(sent)

    try:
        broker.Fetch(pb.FetchRequest(topic="missing", partition=0), timeout=10)
        raise AssertionError("fetch of a missing topic succeeded")
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND, error
        codes = dict(error.trailing_metadata())
        assert codes.get("strata-error-code") == "ERROR_CODE_UNKNOWN_TOPIC_OR_PARTITION", codes

    print(f"python client: {len(sent)} records produced and consumed")


if __name__ == "__main__":
    main(sys.argv[1])
