#!/usr/bin/env python3
"""The Kafka listener's security seen from clients nobody at Strata wrote (driven by
tests/tests/kafka_security.rs against a real server with TLS, password authentication and
ACLs on).

Commands (each prints one JSON object on its last line of output):
  metadata  list the cluster's topics with confluent-kafka over SASL_SSL
  produce   produce one record with confluent-kafka; report the delivery's error
  consume   read a partition from the earliest offset with confluent-kafka; report records or
            the first error
  probe     speak the protocol by hand over TLS (Python's ssl): the refusals a client library
            would hide (a request before authentication, an unknown mechanism, SASL out of
            order) and a PLAIN login followed by Metadata

Common flags: --bootstrap HOST:PORT --ca CA.pem --user NAME --password SECRET
[--mechanism PLAIN|SCRAM-SHA-256].
"""

import argparse
import json
import socket
import ssl
import struct
import sys
import time


def client_config(args):
    return {
        "bootstrap.servers": args.bootstrap,
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": args.ca,
        "sasl.mechanisms": args.mechanism,
        "sasl.username": args.user,
        "sasl.password": args.password,
        "socket.timeout.ms": 10000,
        # Fail fast on a refused login instead of reconnecting for the whole timeout.
        "reconnect.backoff.ms": 200,
    }


def report(result):
    print(json.dumps(result, sort_keys=True))
    sys.stdout.flush()


def metadata(args):
    from confluent_kafka.admin import AdminClient

    errors = []
    config = client_config(args)
    config["error_cb"] = lambda error: errors.append(error.name() + ": " + error.str())
    admin = AdminClient(config)
    try:
        listed = admin.list_topics(timeout=args.timeout)
    except Exception as error:  # KafkaException: the timeout after a refused login
        # Error callbacks are served by poll(), which list_topics does not call.
        deadline = time.monotonic() + 5
        while not errors and time.monotonic() < deadline:
            admin.poll(0.2)
        report({"ok": False, "error": str(error), "errors": errors})
        return
    report(
        {
            "ok": True,
            "topics": sorted(
                name for name, topic in listed.topics.items() if topic.error is None
            ),
            "errors": errors,
        }
    )


def produce(args):
    from confluent_kafka import Producer

    errors = []
    delivered = []
    config = client_config(args)
    config.update(
        {
            "acks": "all",
            "enable.idempotence": False,
            "message.timeout.ms": int(args.timeout * 1000),
            "error_cb": lambda error: errors.append(error.name() + ": " + error.str()),
        }
    )
    producer = Producer(config)

    def on_delivery(error, message):
        if error is not None:
            delivered.append({"error": error.name()})
        else:
            delivered.append({"error": None, "offset": message.offset()})

    producer.produce(args.topic, value=args.value.encode(), callback=on_delivery)
    producer.flush(args.timeout + 5)
    if not delivered:
        report({"ok": False, "error": "no delivery report", "errors": errors})
        return
    outcome = delivered[0]
    report({"ok": outcome["error"] is None, **outcome, "errors": errors})


def consume(args):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    errors = []
    config = client_config(args)
    config.update(
        {
            "group.id": "kafka-security-test",
            "enable.auto.commit": False,
            "error_cb": lambda error: errors.append(error.name() + ": " + error.str()),
        }
    )
    consumer = Consumer(config)
    consumer.assign([TopicPartition(args.topic, 0, OFFSET_BEGINNING)])
    values = []
    deadline = time.monotonic() + args.timeout
    failure = None
    while time.monotonic() < deadline and len(values) < args.count:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error() is not None:
            failure = message.error().name()
            break
        values.append(message.value().decode())
    consumer.close()
    report(
        {
            "ok": failure is None and len(values) >= args.count,
            "error": failure,
            "values": values,
            "errors": errors,
        }
    )


# --- the protocol by hand ---------------------------------------------------------------------

METADATA, SASL_HANDSHAKE, API_VERSIONS, SASL_AUTHENTICATE = 3, 17, 18, 36


class Wire:
    """One TLS connection speaking Kafka's framing (request header v1, response header v0)."""

    def __init__(self, args):
        host, port = args.bootstrap.rsplit(":", 1)
        context = ssl.create_default_context(cafile=args.ca)
        raw = socket.create_connection((host, int(port)), timeout=10)
        self.socket = context.wrap_socket(raw, server_hostname=host)
        self.correlation = 0

    def send(self, api_key, version, body):
        self.correlation += 1
        client_id = b"security-probe"
        header = struct.pack(">hhih", api_key, version, self.correlation, len(client_id))
        frame = header + client_id + body
        self.socket.sendall(struct.pack(">i", len(frame)) + frame)

    def receive(self):
        """The response body after the correlation id, or None when the server closed."""
        size = self._exactly(4)
        if size is None:
            return None
        frame = self._exactly(struct.unpack(">i", size)[0])
        if frame is None:
            return None
        (correlation,) = struct.unpack(">i", frame[:4])
        assert correlation == self.correlation, (correlation, self.correlation)
        return frame[4:]

    def closed(self):
        """Whether the server closed the connection (EOF, or a reset)."""
        try:
            return self.socket.recv(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True

    def _exactly(self, count):
        data = b""
        while len(data) < count:
            try:
                chunk = self.socket.recv(count - len(data))
            except (ConnectionError, ssl.SSLError):
                return None
            if not chunk:
                return None
            data += chunk
        return data


def string(text):
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def handshake(wire, mechanism):
    wire.send(SASL_HANDSHAKE, 1, string(mechanism))
    body = wire.receive()
    assert body is not None, "no SaslHandshake answer"
    error, count = struct.unpack(">hi", body[:6])
    mechanisms, rest = [], body[6:]
    for _ in range(count):
        (length,) = struct.unpack(">h", rest[:2])
        mechanisms.append(rest[2 : 2 + length].decode())
        rest = rest[2 + length :]
    return error, mechanisms


def authenticate(wire, version, auth_bytes):
    wire.send(SASL_AUTHENTICATE, version, struct.pack(">i", len(auth_bytes)) + auth_bytes)
    body = wire.receive()
    assert body is not None, "no SaslAuthenticate answer"
    error, message_length = struct.unpack(">hh", body[:4])
    rest = body[4:]
    message = None
    if message_length >= 0:
        message, rest = rest[:message_length].decode(), rest[message_length:]
    (auth_length,) = struct.unpack(">i", rest[:4])
    rest = rest[4 + max(auth_length, 0) :]
    lifetime = struct.unpack(">q", rest[:8])[0] if version >= 1 else None
    return error, message, lifetime


def metadata_v1(wire):
    wire.send(METADATA, 1, struct.pack(">i", -1))
    return wire.receive()


def probe(args):
    checks = []

    # Anything but ApiVersions and SASL before authentication closes the connection.
    wire = Wire(args)
    wire.send(API_VERSIONS, 0, b"")
    versions = wire.receive()
    assert versions is not None and struct.unpack(">h", versions[:2])[0] == 0, "ApiVersions"
    assert metadata_v1(wire) is None, "Metadata answered before authentication"
    checks.append("metadata before authentication closes the connection")

    # Before authentication a frame is read up to 512 KiB only: a larger one closes the
    # connection (ApiVersions v0 with padding, which its decoder leaves unread).
    padded = b"\0" * (600 << 10)
    wire = Wire(args)
    try:
        wire.send(API_VERSIONS, 0, padded)
    except OSError:
        pass  # closed while sending: refused before the whole frame was read
    assert wire.receive() is None, "a 600 KiB frame was read before authentication"
    checks.append("a 600 KiB frame before authentication closes the connection")

    # An unknown mechanism: UNSUPPORTED_SASL_MECHANISM (33) with the list, then closed.
    wire = Wire(args)
    error, mechanisms = handshake(wire, "GSSAPI")
    assert error == 33, error
    assert mechanisms == ["PLAIN", "SCRAM-SHA-256"], mechanisms
    assert wire.closed(), "open after an unsupported mechanism"
    checks.append("an unknown mechanism is refused with the list")

    # SaslAuthenticate before the handshake: ILLEGAL_SASL_STATE (34), then closed.
    wire = Wire(args)
    error, _, _ = authenticate(wire, 1, b"\0" + args.user.encode() + b"\0x")
    assert error == 34, error
    assert wire.closed(), "open after SASL out of order"
    checks.append("SaslAuthenticate before the handshake is refused")

    # A wrong PLAIN password: SASL_AUTHENTICATION_FAILED (58) with a message, then closed.
    wire = Wire(args)
    assert handshake(wire, "PLAIN")[0] == 0
    error, message, _ = authenticate(wire, 1, b"\0" + args.user.encode() + b"\0wrong")
    assert error == 58 and message and "Authentication failed" in message, (error, message)
    assert wire.closed(), "open after a failed login"
    checks.append("a wrong PLAIN password is refused: " + message)

    # The right one (v0 and v1), then Metadata is served; a second handshake is out of place
    # but the session stays.
    for version in (0, 1):
        wire = Wire(args)
        assert handshake(wire, "PLAIN")[0] == 0
        credentials = b"\0" + args.user.encode() + b"\0" + args.password.encode()
        error, message, lifetime = authenticate(wire, version, credentials)
        assert error == 0, (error, message)
        assert lifetime in (None, 0), lifetime
        # The full request limit applies from the first frame after the login's answer.
        wire.send(API_VERSIONS, 0, padded)
        assert wire.receive() is not None, "a 600 KiB frame refused after authentication"
        assert metadata_v1(wire) is not None, "no Metadata after authentication"
        error, _ = handshake(wire, "PLAIN")
        assert error == 34, error
        assert metadata_v1(wire) is not None, "closed after a second handshake"
        checks.append(f"PLAIN over SaslAuthenticate v{version}, then a 600 KiB frame and Metadata")
    report({"ok": True, "checks": checks})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["metadata", "produce", "consume", "probe"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--mechanism", default="SCRAM-SHA-256")
    parser.add_argument("--topic")
    parser.add_argument("--value", default="secret record")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    {"metadata": metadata, "produce": produce, "consume": consume, "probe": probe}[
        args.command
    ](args)


if __name__ == "__main__":
    main()
