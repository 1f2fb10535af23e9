// Cluster: nodes up or down, the controller's leader, partitions led per node, partitions
// under-replicated or without a leader, and produce and consume throughput sampled by the
// browser (see samples.js). Refreshed every few seconds while shown.
import { call } from '../api.js';
import { h, fill, table } from '../dom.js';
import { lineChart } from '../chart.js';
import { num, clock, rate } from '../format.js';
import { failure } from '../notice.js';
import { history, rates, SAMPLE_INTERVAL_MS } from '../samples.js';

/** Counts over the partitions this node describes. */
function summarize(info) {
  const ledBy = new Map();
  let partitions = 0;
  let leaderless = 0;
  let underReplicated = 0;
  let inSyncUnknown = 0;
  let notHere = 0;
  for (const topic of info.topics || []) {
    for (const partition of topic.partitionInfo || []) {
      partitions += 1;
      const leader = num(partition.leaderNodeId);
      // No term: this node holds no replica, so it cannot tell who leads (not "leaderless").
      if (leader === 0 && num(partition.leaderTerm) === 0) {
        notHere += 1;
        continue;
      }
      if (leader === 0) {
        leaderless += 1;
        continue;
      }
      ledBy.set(leader, (ledBy.get(leader) || 0) + 1);
      const replicas = (partition.replicaNodeIds || []).length;
      const inSync = (partition.inSyncNodeIds || []).length;
      // The in-sync set is known to the partition's leader only; an empty one is "unknown".
      if (inSync === 0) inSyncUnknown += 1;
      else if (inSync < replicas) underReplicated += 1;
    }
  }
  return { ledBy, partitions, leaderless, underReplicated, inSyncUnknown, notHere };
}

function card(label, value, cls, id) {
  return h('div', { class: `card ${cls || ''}`, id }, h('div', { class: 'value' }, String(value)), h('div', { class: 'label' }, label));
}

function charts() {
  const stored = history();
  const note = `Sampled by this browser every ${SAMPLE_INTERVAL_MS / 1000} s since the console was opened in this tab `
    + `(${clock(stored.startedMs)} UTC); the last 10 minutes are kept. Produce: growth of the summed high watermarks; `
    + 'consume: growth of the summed committed offsets of every group.';
  return h('div', { class: 'charts' },
    lineChart('Produce (records/s)', [{ name: 'produced', class: 'produce', points: rates(stored.points, 'produced') }], rate, note),
    lineChart('Consume (records/s)', [{ name: 'committed', class: 'consume', points: rates(stored.points, 'consumed') }], rate));
}

async function draw(main) {
  let info;
  try {
    info = await call('Admin/ClusterInfo');
  } catch (error) {
    fill(main, h('h1', {}, 'Cluster'), failure('Cluster', error));
    return;
  }
  const nodes = info.nodes || [];
  const summary = summarize(info);
  const controller = num(info.controllerLeaderNodeId);
  const up = nodes.filter((node) => node.alive).length;
  const rows = nodes.map((node) => h('tr', { 'data-node': num(node.nodeId) },
    h('td', {}, String(num(node.nodeId))),
    h('td', {}, node.address || ''),
    h('td', {}, h('span', { class: `status ${node.alive ? 'up' : 'down'}` }, node.alive ? 'up' : 'down')),
    h('td', {}, num(node.nodeId) === controller ? 'leader' : ''),
    h('td', { class: 'num' }, String(summary.ledBy.get(num(node.nodeId)) || 0))));
  fill(main,
    h('h1', {}, 'Cluster'),
    h('div', { class: 'cards' },
      card('nodes up', `${up} / ${nodes.length}`, up === nodes.length ? 'good' : 'bad', 'nodes-up'),
      card('topics', (info.topics || []).length),
      card('partitions', summary.partitions),
      card('under-replicated', summary.underReplicated, summary.underReplicated ? 'bad' : 'good', 'under-replicated'),
      card('without a leader', summary.leaderless, summary.leaderless ? 'bad' : 'good', 'leaderless')),
    summary.inSyncUnknown
      ? h('p', { class: 'muted small' }, `${summary.inSyncUnknown} partition(s) are led by other nodes, which alone know their in-sync replicas; `
        + 'they are not counted as under-replicated here.')
      : null,
    summary.notHere
      ? h('p', { class: 'muted small', id: 'not-here' }, `${summary.notHere} partition(s) have no replica on this node, which therefore does not know their leader; `
        + 'they are not counted as without a leader or in partitions led.')
      : null,
    h('h2', {}, 'Nodes'),
    table(['node', 'address', 'status', 'controller', 'partitions led'], rows, { id: 'nodes' }),
    h('p', { class: 'muted small' }, 'Up: the node serving this console heard from it in the last few seconds. '
      + 'It hears from the nodes it exchanges raft messages with: the controller\'s leader and the nodes it shares partitions with; '
      + 'the controller\'s leader hears from every node.'),
    h('h2', {}, 'Throughput'),
    charts());
}

export async function render(main) {
  await draw(main);
  const timer = setInterval(() => draw(main), SAMPLE_INTERVAL_MS);
  return () => clearInterval(timer);
}
