// Topics: the list (the cluster's view from ClusterInfo, which lists only what the principal
// may describe), creating a
// topic, and one topic's page: its configuration (altered in place), its partitions (leader,
// replicas, in-sync replicas, log start offset, high watermark) and deletion after the user
// types the topic's name.
import { call } from '../api.js';
import { h, fill, table } from '../dom.js';
import { num, duration, bytes } from '../format.js';
import { failure, done } from '../notice.js';

function retention(config) {
  const parts = [];
  if (config && config.retentionMs !== undefined) parts.push(duration(config.retentionMs));
  if (config && config.retentionBytes !== undefined) parts.push(`${bytes(config.retentionBytes)} per partition`);
  return parts.length ? parts.join(', ') : 'forever';
}

function records(topic) {
  return (topic.partitionInfo || [])
    .reduce((sum, p) => sum + Math.max(0, num(p.highWatermark) - num(p.logStartOffset)), 0);
}

/** Bytes on disk of one replica of each partition (the leader's), summed. */
function size(topic) {
  return (topic.partitionInfo || []).reduce((sum, p) => sum + num(p.sizeBytes), 0);
}

/** An optional positive integer from an input: undefined when empty. */
function optionalCount(input) {
  const text = input.value.trim();
  if (text === '') return undefined;
  if (!/^\d+$/.test(text)) throw new Error(`${input.name}: ${JSON.stringify(text)} is not a whole number`);
  return text;
}

function createForm(main) {
  const name = h('input', { name: 'name', id: 'create-name', required: true, placeholder: 'orders', pattern: '[a-zA-Z0-9._-]{1,200}' });
  const partitions = h('input', { name: 'partitions', id: 'create-partitions', type: 'number', min: '1', value: '1', required: true });
  const replication = h('input', { name: 'replication factor', id: 'create-replication', type: 'number', min: '1', value: '1', required: true });
  const retentionMs = h('input', { name: 'retention ms', id: 'create-retention-ms', placeholder: 'forever' });
  const result = h('div', { class: 'result' });
  const form = h('form', { class: 'inline', id: 'create-topic' },
    h('h2', {}, 'Create a topic'),
    h('label', {}, 'Name ', name),
    h('label', {}, 'Partitions ', partitions),
    h('label', {}, 'Replication factor ', replication),
    h('label', {}, 'Retention (ms) ', retentionMs),
    h('button', { type: 'submit' }, 'Create'),
    result);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    fill(result);
    try {
      const config = {};
      const ms = optionalCount(retentionMs);
      if (ms !== undefined) config.retentionMs = ms;
      await call('Admin/CreateTopic', {
        name: name.value.trim(),
        partitions: Number(partitions.value),
        replicationFactor: Number(replication.value),
        config,
      });
      location.hash = `#/topics/${encodeURIComponent(name.value.trim())}`;
    } catch (error) {
      fill(result, error.status !== undefined ? failure('Create topic', error) : h('div', { class: 'notice error' }, error.message));
    }
  });
  return form;
}

export async function renderList(main) {
  let listed;
  try {
    // ClusterInfo, not ListTopics: its topics carry the cluster's view (leaders, offsets and
    // sizes from the nodes that hold each partition), where ListTopics gives this node's.
    listed = await call('Admin/ClusterInfo');
  } catch (error) {
    fill(main, h('h1', {}, 'Topics'), failure('Topics', error));
    return;
  }
  const topics = (listed.topics || []).sort((a, b) => a.name.localeCompare(b.name));
  const rows = topics.map((topic) => h('tr', { 'data-topic': topic.name },
    h('td', {}, h('a', { href: `#/topics/${encodeURIComponent(topic.name)}` }, topic.name)),
    h('td', { class: 'num' }, String(num(topic.partitions))),
    h('td', { class: 'num' }, String(num(topic.replicationFactor))),
    h('td', {}, retention(topic.config)),
    h('td', { class: 'num' }, String(records(topic))),
    h('td', { class: 'num' }, bytes(size(topic))),
    h('td', {}, h('a', { href: `#/messages/${encodeURIComponent(topic.name)}/0` }, 'messages'))));
  fill(main,
    h('h1', {}, 'Topics'),
    topics.length
      ? table(['topic', 'partitions', 'replication', 'retention', 'records stored', 'size', ''], rows, { id: 'topics' })
      : h('p', { class: 'muted', id: 'topics' }, 'No topics you may describe.'),
    h('p', { class: 'muted small' }, 'Only the topics you may describe are listed. Records stored: high watermark minus log start offset, summed over partitions. Size: one replica of each partition on disk (its leader\'s), summed.'),
    createForm(main));
}

/** The configuration form; `saved(description)` gets the topic as AlterTopicConfig left it. */
function configForm(topic, saved) {
  const config = topic.config || {};
  const field = (label, key, id) => {
    const input = h('input', { name: label, id, value: config[key] ?? '', placeholder: 'unlimited' });
    return [h('label', {}, `${label} `, input), input];
  };
  const [msLabel, ms] = field('Retention (ms)', 'retentionMs', 'alter-retention-ms');
  const [bytesLabel, bytesInput] = field('Retention (bytes per partition)', 'retentionBytes', 'alter-retention-bytes');
  const [segmentLabel, segment] = field('Segment size (bytes)', 'segmentBytes', 'alter-segment-bytes');
  const result = h('div', { class: 'result' });
  const form = h('form', { class: 'inline', id: 'alter-config' },
    h('h2', {}, 'Configuration'), msLabel, bytesLabel, segmentLabel,
    h('button', { type: 'submit' }, 'Save changes'), result);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    fill(result);
    // Only the fields changed are sent: AlterTopicConfig leaves the others as they are.
    const changed = {};
    try {
      for (const [input, key] of [[ms, 'retentionMs'], [bytesInput, 'retentionBytes'], [segment, 'segmentBytes']]) {
        const value = optionalCount(input);
        if (value !== undefined && value !== String(config[key] ?? '')) changed[key] = value;
      }
    } catch (error) {
      fill(result, h('div', { class: 'notice error' }, error.message));
      return;
    }
    if (Object.keys(changed).length === 0) {
      fill(result, h('div', { class: 'notice' }, 'Nothing changed.'));
      return;
    }
    try {
      const altered = await call('Admin/AlterTopicConfig', { name: topic.name, config: changed });
      fill(result, done(`Saved: ${Object.keys(changed).join(', ')}.`));
      saved(altered);
    } catch (error) {
      fill(result, failure('Alter configuration', error));
    }
  });
  return form;
}

function deleteSection(topic) {
  const confirmInput = h('input', { id: 'delete-confirm-name', placeholder: topic.name, autocomplete: 'off' });
  const confirmButton = h('button', { type: 'submit', class: 'danger', id: 'delete-confirm', disabled: true }, 'Delete for good');
  const result = h('div', { class: 'result' });
  const dialog = h('dialog', { id: 'delete-dialog' },
    h('form', { method: 'dialog' },
      h('p', {}, 'Deleting ', h('strong', {}, topic.name), ' removes all its partitions and records on every node. This cannot be undone.'),
      h('label', {}, 'Type the topic name to confirm ', confirmInput),
      h('div', { class: 'buttons' },
        h('button', { type: 'button', id: 'delete-cancel', onclick: () => dialog.close() }, 'Cancel'),
        confirmButton)));
  confirmInput.addEventListener('input', () => { confirmButton.disabled = confirmInput.value !== topic.name; });
  confirmButton.addEventListener('click', async (event) => {
    event.preventDefault();
    dialog.close();
    try {
      await call('Admin/DeleteTopic', { name: topic.name });
      location.hash = '#/topics';
    } catch (error) {
      fill(result, failure('Delete topic', error));
    }
  });
  return h('section', {},
    h('h2', {}, 'Delete'),
    h('button', { type: 'button', class: 'danger', id: 'delete-topic', onclick: () => { confirmInput.value = ''; confirmButton.disabled = true; dialog.showModal(); } }, 'Delete topic…'),
    dialog, result);
}

/** The leader as this node knows it: without a replica here (no term) it cannot know. */
function leaderText(partition) {
  if (num(partition.leaderNodeId)) return String(num(partition.leaderNodeId));
  return num(partition.leaderTerm) ? 'none' : 'not known here';
}

function partitionsTable(topic) {
  const ids = (list) => (list || []).map(num).join(', ');
  const rows = (topic.partitionInfo || []).map((p) => h('tr', { 'data-partition': num(p.partition) },
    h('td', { class: 'num' }, String(num(p.partition))),
    h('td', { class: 'num' }, leaderText(p)),
    h('td', {}, ids(p.replicaNodeIds)),
    h('td', {}, (p.inSyncNodeIds || []).length ? ids(p.inSyncNodeIds) : h('span', { class: 'muted', title: 'Only the partition\'s leader knows; open its console.' }, 'known to the leader')),
    h('td', { class: 'num' }, String(num(p.logStartOffset))),
    h('td', { class: 'num' }, String(num(p.highWatermark))),
    h('td', { class: 'num' }, bytes(num(p.sizeBytes))),
    h('td', {}, h('a', { href: `#/messages/${encodeURIComponent(topic.name)}/${num(p.partition)}` }, 'browse'))));
  return table(['partition', 'leader', 'replicas', 'in sync', 'log start offset', 'high watermark', 'size', ''], rows, { id: 'partitions' });
}

function summaryLine(topic) {
  return `${num(topic.partitions)} partition(s), replication factor ${num(topic.replicationFactor)}, `
    + `retention ${retention(topic.config)}, ${records(topic)} records stored, ${bytes(size(topic))}.`;
}

/** How often the partitions of a shown topic are described again (leaders, offsets). */
const TOPIC_REFRESH_MS = 5000;

export async function renderTopic(main, name) {
  let topic;
  try {
    topic = await call('Admin/DescribeTopic', { name });
  } catch (error) {
    fill(main, h('h1', {}, `Topic ${name}`), failure(`Topic ${name}`, error), h('p', {}, h('a', { href: '#/topics' }, 'All topics')));
    return undefined;
  }
  const summary = h('p', { id: 'topic-summary' }, summaryLine(topic));
  const partitions = h('div', {}, partitionsTable(topic));
  fill(main,
    h('p', {}, h('a', { href: '#/topics' }, '← All topics')),
    h('h1', {}, `Topic ${topic.name}`),
    summary,
    h('h2', {}, 'Partitions'),
    partitions,
    configForm(topic, (altered) => fill(summary, summaryLine(altered))),
    deleteSection(topic));
  // Leaders and offsets change: the partitions are described again while the page shows
  // (the forms are left alone, so nothing typed is lost).
  const timer = setInterval(async () => {
    try {
      const fresh = await call('Admin/DescribeTopic', { name });
      fill(summary, summaryLine(fresh));
      fill(partitions, partitionsTable(fresh));
    } catch (error) {
      fill(partitions, failure(`Topic ${name}`, error));
    }
  }, TOPIC_REFRESH_MS);
  return () => clearInterval(timer);
}
