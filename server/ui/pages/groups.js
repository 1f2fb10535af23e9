// Consumer groups: the list (only the groups the principal may describe), and one group's page:
// members and their assignments, lag per partition in records and in time, the lag over the
// last minutes (sampled by this browser, see samples.js), and a live reset of its committed
// offsets (earliest, latest, an offset, a time, or a shift) previewed with a dry run first and
// applied only after it. Members that run follow a reset at their next heartbeat.
import { call } from '../api.js';
import { h, fill, table } from '../dom.js';
import { lineChart } from '../chart.js';
import { num, duration, time } from '../format.js';
import { failure, done } from '../notice.js';
import { history, groupLag, onSample, SAMPLE_INTERVAL_MS } from '../samples.js';

const tp = (partition) => `${partition.topic}/${num(partition.partition)}`;

export async function renderList(main) {
  let listed;
  try {
    listed = (await call('Groups/ListGroups')).groups || [];
  } catch (error) {
    fill(main, h('h1', {}, 'Consumer groups'), failure('Consumer groups', error));
    return;
  }
  listed.sort((a, b) => a.groupId.localeCompare(b.groupId));
  const described = await Promise.allSettled(listed.map((group) => call('Groups/DescribeGroup', { groupId: group.groupId })));
  const rows = listed.map((group, i) => {
    const result = described[i];
    let lag = '-';
    if (result.status === 'fulfilled') {
      lag = String((result.value.partitions || []).reduce((sum, p) => sum + num(p.lagRecords), 0));
    }
    return h('tr', { 'data-group': group.groupId },
      h('td', {}, h('a', { href: `#/groups/${encodeURIComponent(group.groupId)}` }, group.groupId)),
      h('td', {}, group.state || ''),
      h('td', { class: 'num' }, String(num(group.members))),
      h('td', { class: 'num' }, String(num(group.groupEpoch))),
      h('td', { class: 'num' }, lag));
  });
  fill(main,
    h('h1', {}, 'Consumer groups'),
    rows.length
      ? table(['group', 'state', 'members', 'epoch', 'lag (records)'], rows, { id: 'groups' })
      : h('p', { class: 'muted', id: 'groups' }, 'No consumer groups you may describe.'),
    h('p', { class: 'muted small' }, 'Only the groups you may describe are listed.'));
}

function membersTable(group) {
  const members = group.members || [];
  if (members.length === 0) return h('p', { class: 'muted', id: 'members' }, 'No members: the group is empty.');
  return table(['member', 'client', 'epoch', 'topics', 'assigned', 'pending', 'last heartbeat'],
    members.map((member) => [
      member.memberId,
      member.clientId || '',
      String(num(member.memberEpoch)),
      (member.topics || []).join(', '),
      (member.assignment || []).map(tp).join(', ') || '-',
      (member.pending || []).map(tp).join(', ') || '-',
      `${duration(num(member.lastHeartbeatMsAgo))} ago`,
    ]), { id: 'members' });
}

function partitionsTable(group) {
  const partitions = (group.partitions || []).slice()
    .sort((a, b) => a.topic.localeCompare(b.topic) || num(a.partition) - num(b.partition));
  return table(['topic', 'partition', 'committed', 'log start', 'high watermark', 'lag (records)', 'lag (time)', 'owner'],
    partitions.map((p) => h('tr', { 'data-partition': tp(p) },
      h('td', {}, p.topic),
      h('td', { class: 'num' }, String(num(p.partition))),
      h('td', { class: 'num committed' }, p.committedOffset === undefined ? '-' : String(num(p.committedOffset))),
      h('td', { class: 'num' }, String(num(p.logStartOffset))),
      h('td', { class: 'num' }, String(num(p.highWatermark))),
      h('td', { class: 'num' }, p.lagRecords === undefined ? '-' : String(num(p.lagRecords))),
      h('td', { class: 'num' }, p.lagMs === undefined ? '-' : duration(num(p.lagMs))),
      h('td', {}, p.ownerMemberId || '-'))), { id: 'lag' });
}

function lagChart(groupId) {
  const stored = history();
  return lineChart('Lag (records) over the last minutes',
    [{ name: groupId, class: 'lag', points: groupLag(stored.points, groupId) }],
    (value) => String(Math.round(value)),
    `Sampled by this browser every ${SAMPLE_INTERVAL_MS / 1000} s while the console is open in this tab; the last 10 minutes are kept.`);
}

/** `described()` is the group as last described (the preview's "committed now"). */
function resetForm(group, described, refresh) {
  const topics = [...new Set((group.partitions || []).map((p) => p.topic))].sort();
  const topicSelect = h('select', { id: 'reset-topic' }, topics.map((topic) => h('option', { value: topic }, topic)));
  const partitionsInput = h('input', { id: 'reset-partitions', placeholder: 'all', size: 10 });
  const toSelect = h('select', { id: 'reset-to' },
    h('option', { value: 'earliest' }, 'earliest'),
    h('option', { value: 'latest' }, 'latest'),
    h('option', { value: 'offset' }, 'offset'),
    h('option', { value: 'time' }, 'time (UTC)'),
    h('option', { value: 'shift' }, 'shift by'));
  const valueInput = h('input', { id: 'reset-value', hidden: true, size: 20 });
  const previewButton = h('button', { type: 'submit', id: 'reset-preview' }, 'Preview (dry run)');
  const applyButton = h('button', { type: 'button', id: 'reset-apply', class: 'danger', disabled: true }, 'Apply');
  const result = h('div', { class: 'result', id: 'reset-result' });
  const placeholders = { offset: 'e.g. 100', time: 'e.g. 2026-12-01T12:00:00', shift: 'e.g. -50 or 10' };
  toSelect.addEventListener('change', () => {
    valueInput.hidden = !(toSelect.value in placeholders);
    valueInput.placeholder = placeholders[toSelect.value] || '';
  });

  /** The ResetOffsets request the form describes (without dryRun); throws on bad input. */
  const request = () => {
    const body = { groupId: group.groupId, topic: topicSelect.value };
    const listed = partitionsInput.value.trim();
    if (listed) {
      body.partitions = listed.split(',').map((part) => {
        const text = part.trim();
        if (!/^\d+$/.test(text)) throw new Error(`partitions: ${JSON.stringify(text)} is not a partition number (use e.g. 0,2)`);
        return Number(text);
      });
    }
    const value = valueInput.value.trim();
    switch (toSelect.value) {
      case 'earliest': body.earliest = true; break;
      case 'latest': body.latest = true; break;
      case 'offset':
        if (!/^\d+$/.test(value)) throw new Error(`offset: ${JSON.stringify(value)} is not a whole number`);
        body.offset = value;
        break;
      case 'time': {
        const at = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : `${value}Z`);
        if (Number.isNaN(at)) throw new Error(`time: ${JSON.stringify(value)} is not a date and time (e.g. 2026-12-01T12:00:00)`);
        body.timestampMs = String(at);
        break;
      }
      default:
        if (!/^[+-]?\d+$/.test(value)) throw new Error(`shift: ${JSON.stringify(value)} is not a whole number of records`);
        body.shiftBy = String(Number(value));
    }
    return body;
  };

  let previewed = null;
  const invalidate = () => {
    previewed = null;
    applyButton.disabled = true;
  };
  for (const input of [topicSelect, partitionsInput, toSelect, valueInput]) {
    input.addEventListener('input', invalidate);
    input.addEventListener('change', invalidate);
  }

  const form = h('form', { class: 'inline', id: 'reset' },
    h('h2', {}, 'Reset offsets'),
    h('label', {}, 'Topic ', topicSelect),
    h('label', {}, 'Partitions ', partitionsInput),
    h('label', {}, 'To ', toSelect, valueInput),
    previewButton, applyButton,
    h('p', { class: 'muted small' }, 'The preview computes the new offsets without committing them. Apply commits them; running members move to them at their next heartbeat. '
      + 'Offsets from "latest" or a time are computed again when applied, so they may have moved on since the preview.'),
    result);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    invalidate();
    let body;
    try {
      body = request();
    } catch (error) {
      fill(result, h('div', { class: 'notice error' }, error.message));
      return;
    }
    try {
      const reply = await call('Groups/ResetOffsets', { ...body, dryRun: true });
      const current = new Map((described().partitions || []).map((p) => [tp(p), p.committedOffset]));
      const rows = (reply.offsets || []).map((offset) => {
        const before = current.get(tp(offset));
        const after = num(offset.offset);
        const change = before === undefined ? '' : after - num(before);
        return h('tr', { 'data-partition': tp(offset) },
          h('td', {}, offset.topic),
          h('td', { class: 'num' }, String(num(offset.partition))),
          h('td', { class: 'num' }, before === undefined ? '-' : String(num(before))),
          h('td', { class: 'num new-offset' }, String(after)),
          h('td', { class: 'num' }, change === '' ? '-' : `${change > 0 ? '+' : ''}${change}`));
      });
      fill(result,
        h('p', {}, 'Dry run: nothing is committed yet.'),
        table(['topic', 'partition', 'committed now', 'new offset', 'change'], rows, { id: 'reset-preview-table' }));
      previewed = body;
      applyButton.disabled = false;
    } catch (error) {
      fill(result, failure('Reset (dry run)', error));
    }
  });
  applyButton.addEventListener('click', async () => {
    if (!previewed) return;
    const body = previewed;
    invalidate();
    try {
      const reply = await call('Groups/ResetOffsets', { ...body, dryRun: false });
      const moved = (reply.offsets || []).map((o) => `${tp(o)} → ${num(o.offset)}`).join(', ');
      fill(result, done(`Applied (offsets generation ${num(reply.offsetsGeneration)}): ${moved || 'no partitions'}.`));
      await refresh();
    } catch (error) {
      fill(result, failure('Reset', error));
    }
  });
  return form;
}

export async function renderGroup(main, groupId) {
  let group;
  try {
    group = await call('Groups/DescribeGroup', { groupId });
  } catch (error) {
    fill(main, h('p', {}, h('a', { href: '#/groups' }, '← All groups')), h('h1', {}, `Group ${groupId}`), failure(`Group ${groupId}`, error));
    return undefined;
  }
  const summary = h('p', { id: 'group-summary' });
  const members = h('div');
  const lag = h('div');
  const chart = h('div');
  const draw = (described) => {
    fill(summary, `State ${described.state || '-'}, group epoch ${num(described.groupEpoch)}, offsets generation ${num(described.offsetsGeneration)}, `
      + `${(described.members || []).length} member(s), last described ${time(Date.now())}.`);
    fill(members, membersTable(described));
    fill(lag, partitionsTable(described));
  };
  const refresh = async () => {
    try {
      group = await call('Groups/DescribeGroup', { groupId });
      draw(group);
    } catch (error) {
      fill(lag, failure(`Group ${groupId}`, error));
    }
  };
  draw(group);
  fill(chart, lagChart(groupId));
  fill(main,
    h('p', {}, h('a', { href: '#/groups' }, '← All groups')),
    h('h1', {}, `Group ${groupId}`),
    summary,
    h('h2', {}, 'Members'), members,
    h('h2', {}, 'Lag per partition'), lag,
    chart,
    resetForm(group, () => group, refresh));
  const stopSampling = onSample(() => {
    fill(chart, lagChart(groupId));
    refresh();
  });
  return stopSampling;
}
