// A Kafka consumer group on Strata with kafkajs: the scenario of groups.py (two members share a
// topic, one leaves, another joins, every record processed, committed offsets at the
// partitions' ends), driven by tests/tests/kafka_groups.rs.
//
//   node groups.js BOOTSTRAP TOPIC GROUP PARTITIONS RECORDS
//
// Prints `RESULT {json}` and exits 0; exits 1 with the reason otherwise. Every wait has a
// deadline.

const { Kafka, logLevel } = require('kafkajs');

const PHASE_TIMEOUT_MS = 60000;
const [bootstrap, topic, group, partitionsArg, recordsArg] = process.argv.slice(2);
const partitions = Number(partitionsArg);
const records = Number(recordsArg);

const kafka = new Kafka({
  clientId: 'groups-js',
  brokers: bootstrap.split(','),
  logLevel: logLevel.WARN,
  retry: { retries: 10 },
});

const processed = new Map();
const assignments = new Map();

function fail(message) {
  console.log(`FAIL: ${message}`);
  process.exit(1);
}

async function waitUntil(condition, what) {
  const deadline = Date.now() + PHASE_TIMEOUT_MS;
  while (!condition()) {
    if (Date.now() > deadline) fail(`timed out after ${PHASE_TIMEOUT_MS} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function member(name) {
  const consumer = kafka.consumer({
    groupId: group,
    sessionTimeout: 10000,
    heartbeatInterval: 500,
    rebalanceTimeout: 20000,
  });
  consumer.on(consumer.events.GROUP_JOIN, (event) => {
    assignments.set(name, (event.payload.memberAssignment[topic] || []).slice().sort());
  });
  consumer.on(consumer.events.CRASH, (event) => {
    fail(`member ${name} crashed: ${event.payload.error && event.payload.error.stack}`);
  });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ partition, message }) => {
      const value = message.value.toString();
      processed.set(value, (processed.get(value) || 0) + 1);
      try {
        await consumer.commitOffsets([
          { topic, partition, offset: (BigInt(message.offset) + 1n).toString() },
        ]);
      } catch (error) {
        // A rebalance moved the partition: its new owner processes the record again.
      }
    },
  });
  return consumer;
}

const assigned = (name) => assignments.get(name) || [];

function sharing(x, y) {
  const a = assigned(x);
  const b = assigned(y);
  return a.length > 0 && b.length > 0 && a.length + b.length === partitions
    && !a.some((p) => b.includes(p));
}

async function produce(first, count) {
  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = first; i < first + count; i += 1) messages.push({ key: `kv${i}`, value: `v${i}` });
  await producer.send({ topic, messages });
  await producer.disconnect();
  return first + count;
}

async function main() {
  const third = Math.floor(records / 3);
  let produced = await produce(0, third);
  const a = await member('a');
  const b = await member('b');
  await waitUntil(() => sharing('a', 'b'), 'A and B to share the partitions');
  console.log(`phase 1: a=${assigned('a')} b=${assigned('b')}`);
  await waitUntil(() => processed.size >= produced, `${produced} records processed by A and B`);
  await b.disconnect();
  assignments.delete('b');
  produced = await produce(produced, third);
  await waitUntil(() => assigned('a').length === partitions, 'A to hold every partition');
  await waitUntil(() => processed.size >= produced, `${produced} records processed by A alone`);
  console.log(`phase 2: a=${assigned('a')}`);
  const c = await member('c');
  await waitUntil(() => sharing('a', 'c'), 'A and C to share the partitions');
  console.log(`phase 3: a=${assigned('a')} c=${assigned('c')}`);
  produced = await produce(produced, records - 2 * third);
  await waitUntil(() => processed.size >= produced, `${produced} records processed by A and C`);
  await a.disconnect();
  await c.disconnect();
  for (let i = 0; i < produced; i += 1) {
    if (!processed.has(`v${i}`)) fail(`record v${i} never processed`);
  }
  const admin = kafka.admin();
  await admin.connect();
  const fetched = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  const ends = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const committed = new Array(partitions).fill(-1);
  for (const p of fetched[0].partitions) committed[p.partition] = Number(p.offset);
  const highs = new Array(partitions).fill(-1);
  for (const p of ends) highs[p.partition] = Number(p.high);
  if (JSON.stringify(committed) !== JSON.stringify(highs)) {
    fail(`committed offsets ${committed} are not the partitions' ends ${highs}`);
  }
  let duplicates = 0;
  for (const times of processed.values()) duplicates += times - 1;
  console.log(`RESULT ${JSON.stringify({
    committed, ends: highs, processed: processed.size, duplicates,
  })}`);
  process.exit(0);
}

main().catch((error) => fail(error.stack));
