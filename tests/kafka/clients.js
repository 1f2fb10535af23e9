// The Kafka data path against Strata with kafkajs (a client nobody at Strata wrote). Driven by
// tests/tests/kafka_clients.rs, one subcommand per scenario; prints JSON lines the Rust test
// checks against what it reads over gRPC, and exits non-zero with a message when kafkajs sees
// something wrong.
//
//   clients.js data BOOTSTRAP TOPIC CODEC...    metadata; keyed records with headers in each
//                                               codec (none, gzip: kafkajs has no other codec
//                                               without a codec package); offsets by time
//   clients.js idempotent BOOTSTRAP TOPIC COUNT an idempotent producer (maxInFlightRequests 1)
//                                               sending COUNT records, printing each acked one
//
// kafkajs has no consumer without a consumer group, so records are read back by the Rust test
// over gRPC (and by kcat), not by kafkajs.

const { Kafka, CompressionTypes, logLevel } = require("kafkajs");

// Every wait on the server is bounded.
const DEADLINE_MS = 60_000;
const RECORDS_PER_CODEC = 20;

function fail(message) {
  process.stderr.write(`FAILED: ${message}\n`);
  process.exit(1);
}

function emit(kind, fields) {
  process.stdout.write(JSON.stringify({ kind, ...fields }) + "\n");
}

// kafkajs logs JSON to stdout by default; its logs go to stderr, so stdout holds only our lines.
function kafka(bootstrap, extra = {}) {
  return new Kafka({
    clientId: "strata-interop",
    brokers: bootstrap.split(","),
    connectionTimeout: 5_000,
    requestTimeout: 10_000,
    logLevel: logLevel.WARN,
    logCreator: () => ({ namespace, level, log }) =>
      process.stderr.write(`kafkajs ${level} ${namespace} ${JSON.stringify(log)}\n`),
    ...extra,
  });
}

const CODECS = { none: CompressionTypes.None, gzip: CompressionTypes.GZIP };

function recordsFor(tag, count) {
  const records = [];
  for (let i = 0; i < count; i++) {
    records.push({
      key: `k-${tag}-${i}`,
      value: `v-${tag}-${i}`.repeat(1 + (i % 7)),
      headers: { h: tag, i: String(i) },
    });
  }
  return records;
}

async function data(bootstrap, topic, codecs) {
  const client = kafka(bootstrap);
  const admin = client.admin();
  await admin.connect();
  const metadata = await admin.fetchTopicMetadata({ topics: [topic] });
  const described = metadata.topics.find((t) => t.name === topic);
  if (!described) fail(`metadata has no ${topic}: ${JSON.stringify(metadata)}`);
  emit("metadata", {
    partitions: described.partitions.map((p) => p.partitionId).sort(),
    leader: described.partitions.find((p) => p.partitionId === 0).leader,
  });

  const producer = client.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  for (const codec of codecs) {
    if (!(codec in CODECS)) fail(`kafkajs has no ${codec} codec without a codec package`);
    const records = recordsFor(`kafkajs-${codec}`, RECORDS_PER_CODEC);
    const [answer] = await producer.send({
      topic,
      acks: -1,
      compression: CODECS[codec],
      messages: records.map((r) => ({ ...r, partition: 0 })),
    });
    if (answer.errorCode !== 0) fail(`produce ${codec}: ${JSON.stringify(answer)}`);
    const base = Number(answer.baseOffset);
    records.forEach((r, i) =>
      emit("sent", {
        offset: base + i,
        key: r.key,
        value: r.value,
        headers: Object.entries(r.headers),
      }),
    );
  }

  // Offsets by time: records stamped by the client, a second apart, in 2023, on partition 1
  // (partition 0's records are stamped now, later than these: the earliest offset at or after
  // any of these times would be partition 0's first).
  const base = 1_700_000_000_000;
  const timed = [];
  for (let i = 0; i < 10; i++) {
    timed.push({ key: `tk${i}`, value: `t-${i}`, timestamp: String(base + 1000 * i), partition: 1 });
  }
  const [answer] = await producer.send({ topic, acks: -1, messages: timed });
  const first = Number(answer.baseOffset);
  timed.forEach((r, i) =>
    emit("sent", { partition: 1, offset: first + i, key: r.key, value: r.value, headers: [], timestamp: base + 1000 * i }),
  );
  const found = await admin.fetchTopicOffsetsByTimestamp(topic, base + 3500);
  const partition = found.find((p) => p.partition === 1);
  if (!partition || Number(partition.offset) !== first + 4) {
    fail(`fetchTopicOffsetsByTimestamp(${base + 3500}) = ${JSON.stringify(found)}, want ${first + 4}`);
  }
  const ends = await admin.fetchTopicOffsets(topic);
  const end = ends.find((p) => p.partition === 1);
  if (Number(end.high) !== first + 10 || Number(end.low) !== 0) {
    fail(`fetchTopicOffsets = ${JSON.stringify(ends)}, want low 0, high ${first + 10}`);
  }
  emit("timestamps", { first, found: Number(partition.offset) });
  await producer.disconnect();
  await admin.disconnect();
}

async function idempotent(bootstrap, topic, count) {
  const client = kafka(bootstrap, {
    retry: { initialRetryTime: 100, maxRetryTime: 2_000, retries: 30 },
  });
  const producer = client.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    metadataMaxAge: 1_000,
  });
  await producer.connect();
  const acked = [];
  const errors = [];
  // Small sends one after another, so the stream still runs when the test kills the leader.
  const perSend = 10;
  for (let start = 0; start < count; start += perSend) {
    const values = [];
    for (let i = start; i < Math.min(count, start + perSend); i++) values.push(i);
    try {
      const [answer] = await producer.send({
        topic,
        acks: -1,
        messages: values.map((v) => ({ value: String(v), partition: 0 })),
      });
      const base = Number(answer.baseOffset);
      values.forEach((v, i) => acked.push([v, base + i]));
    } catch (error) {
      errors.push(`${start}: ${error.name}: ${error.message}`);
    }
  }
  await producer.disconnect();
  for (const [value, offset] of acked) emit("acked", { value, offset });
  emit("summary", { acked: acked.length, errors, undelivered: 0 });
  for (let i = 1; i < acked.length; i++) {
    if (acked[i][0] <= acked[i - 1][0]) fail("acknowledgements came out of order");
  }
}

async function main() {
  const [command, bootstrap, topic, ...rest] = process.argv.slice(2);
  const timer = setTimeout(() => fail(`${command} did not finish within 200 s`), 200_000);
  if (command === "data") await data(bootstrap, topic, rest);
  else if (command === "idempotent") await idempotent(bootstrap, topic, Number(rest[0]));
  else fail(`unknown command ${command}`);
  clearTimeout(timer);
}

main().catch((error) => fail(error.stack || String(error)));
