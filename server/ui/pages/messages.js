// Messages: browse one partition from the beginning, the end, an offset or a time, oldest or
// newest first; each record's offset, timestamp, key, value (as text, pretty-printed JSON or
// hex) and headers; follow new records live (long-polling Fetch); and a filter over the records
// loaded. Reads go to this node: a partition it holds no replica of answers NOT_LEADER, shown
// with the leader to ask instead.
import { call } from '../api.js';
import { h, fill } from '../dom.js';
import { num, base64ToBytes, bytesToText, showBytes, time } from '../format.js';
import { failure } from '../notice.js';

/** Records shown at most; following live drops the oldest beyond it. */
const RECORDS_SHOWN_MAX = 1000;
/** Bytes of a key or value shown before it is cut (the rest is left out, and said so). */
const SHOWN_BYTES_MAX = 4096;
/** How long one live-follow Fetch waits for new records. */
const FOLLOW_WAIT_MS = 2000;
/** Fetches per page load at most: a page of records never loops without end. */
const FETCHES_PER_LOAD_MAX = 50;

function cut(bytes) {
  if (bytes === null || bytes.length <= SHOWN_BYTES_MAX) return [bytes, false];
  return [bytes.subarray(0, SHOWN_BYTES_MAX), true];
}

/** A record decoded once; `text` is what the search filter looks in. */
function decode(record) {
  const key = base64ToBytes(record.key);
  const value = base64ToBytes(record.value);
  const headers = (record.headers || []).map((header) => ({ key: header.key || '', value: base64ToBytes(header.value) }));
  const text = [
    String(num(record.offset)),
    bytesToText(key) || '',
    bytesToText(value) || '',
    ...headers.map((header) => `${header.key}=${bytesToText(header.value) || ''}`),
  ].join('\n').toLowerCase();
  return { offset: num(record.offset), timestampMs: num(record.timestampMs), key, value, headers, text };
}

function bytesCell(bytes, mode, cls) {
  if (bytes === null) return h('td', { class: `${cls} muted` }, 'null');
  const [shown, wasCut] = cut(bytes);
  return h('td', { class: cls },
    h('pre', {}, showBytes(shown, mode)),
    wasCut ? h('span', { class: 'muted small' }, `(first ${SHOWN_BYTES_MAX} of ${bytes.length} bytes)`) : null);
}

function row(record, mode) {
  return h('tr', { 'data-offset': record.offset, class: 'record' },
    h('td', { class: 'num' }, String(record.offset)),
    h('td', { class: 'nowrap' }, time(record.timestampMs)),
    bytesCell(record.key, mode === 'hex' ? 'hex' : 'text', 'key'),
    bytesCell(record.value, mode, 'value'),
    h('td', { class: 'headers' }, record.headers.length
      ? h('ul', {}, record.headers.map((header) => h('li', {},
        h('span', { class: 'header-key' }, header.key), ' = ',
        header.value === null ? h('span', { class: 'muted' }, 'null') : h('span', { class: 'header-value' }, showBytes(header.value, mode === 'hex' ? 'hex' : 'text')))))
      : h('span', { class: 'muted' }, '-')));
}

function startPosition(from, offset, at) {
  switch (from) {
    case 'earliest': return { earliest: true };
    case 'offset': return { offset: String(offset) };
    case 'time': return { timestampMs: String(at) };
    default: return { latest: true };
  }
}

/** Records `[from, until)` of the partition (at most `count`), fetched forward. */
async function fetchRange(topic, partition, from, until, count) {
  const out = [];
  let next = from;
  for (let fetches = 0; fetches < FETCHES_PER_LOAD_MAX && next < until && out.length < count; fetches += 1) {
    const reply = await call('Broker/Fetch', { topic, partition, start: { offset: String(next) }, maxWaitMs: 0, decode: true });
    const records = reply.records || [];
    for (const record of records) {
      if (num(record.offset) >= until || out.length >= count) break;
      if (num(record.offset) >= next) out.push(decode(record));
    }
    const after = num(reply.nextOffset);
    if (after <= next) break;
    next = after;
  }
  return out;
}

export async function render(main, topicParam, partitionParam) {
  let topics;
  try {
    topics = ((await call('Admin/ListTopics')).topics || []).sort((a, b) => a.name.localeCompare(b.name));
  } catch (error) {
    fill(main, h('h1', {}, 'Messages'), failure('Topics', error));
    return undefined;
  }
  if (topics.length === 0) {
    fill(main, h('h1', {}, 'Messages'), h('p', { class: 'muted' }, 'No topics you may describe.'));
    return undefined;
  }
  const topicSelect = h('select', { id: 'topic' }, topics.map((topic) => h('option', { value: topic.name }, topic.name)));
  topicSelect.value = topics.some((t) => t.name === topicParam) ? topicParam : topics[0].name;
  const partitionSelect = h('select', { id: 'partition' });
  const fillPartitions = () => {
    const topic = topics.find((t) => t.name === topicSelect.value);
    fill(partitionSelect, Array.from({ length: num(topic.partitions) }, (_, i) => h('option', { value: String(i) }, String(i))));
  };
  fillPartitions();
  if (partitionParam !== undefined && Number(partitionParam) < partitionSelect.options.length) partitionSelect.value = String(Number(partitionParam));
  const fromSelect = h('select', { id: 'from' },
    h('option', { value: 'latest' }, 'the end (latest)'),
    h('option', { value: 'earliest' }, 'the beginning (earliest)'),
    h('option', { value: 'offset' }, 'an offset'),
    h('option', { value: 'time' }, 'a time (UTC)'));
  const offsetInput = h('input', { id: 'offset', type: 'number', min: '0', value: '0', hidden: true });
  const timeInput = h('input', { id: 'time', type: 'datetime-local', step: '1', hidden: true });
  const orderSelect = h('select', { id: 'order' },
    h('option', { value: 'newest' }, 'newest first'),
    h('option', { value: 'oldest' }, 'oldest first'));
  const countInput = h('input', { id: 'count', type: 'number', min: '1', max: String(RECORDS_SHOWN_MAX), value: '50' });
  const modeSelect = h('select', { id: 'mode' },
    h('option', { value: 'text' }, 'text'),
    h('option', { value: 'json' }, 'JSON (pretty)'),
    h('option', { value: 'hex' }, 'hex'));
  const loadButton = h('button', { type: 'submit', id: 'load' }, 'Load');
  const followBox = h('input', { type: 'checkbox', id: 'follow' });
  const searchInput = h('input', { id: 'search', type: 'search', placeholder: 'filter the loaded records' });
  const status = h('div', { id: 'status', class: 'muted' });
  const body = h('tbody', { id: 'records' });
  const results = h('div', { id: 'results' });

  const range = h('p', { class: 'muted small', id: 'range' });
  const showRange = (logStart, end) => {
    range.textContent = `Partition ${partitionSelect.value} holds offsets ${logStart} to ${end === 0 ? '-' : end - 1} (high watermark ${end}).`;
  };
  let records = [];
  let order = 'newest';
  let following = null;

  const applyFilter = () => {
    const query = searchInput.value.trim().toLowerCase();
    let shown = 0;
    for (const tr of body.children) {
      const record = tr.record;
      const visible = !query || record.text.includes(query);
      tr.hidden = !visible;
      if (visible) shown += 1;
    }
    status.textContent = `${records.length} record(s) loaded${query ? `, ${shown} match "${searchInput.value.trim()}"` : ''}${following ? '; following new records live' : ''}.`;
  };
  const redraw = () => {
    const mode = modeSelect.value;
    const ordered = order === 'newest' ? [...records].reverse() : records;
    body.replaceChildren(...ordered.map((record) => {
      const tr = row(record, mode);
      tr.record = record;
      return tr;
    }));
    applyFilter();
  };
  const stopFollowing = () => {
    if (following) following.stopped = true;
    following = null;
  };
  const follow = (topic, partition, from) => {
    stopFollowing();
    const state = { stopped: false };
    following = state;
    (async () => {
      let next = from;
      while (!state.stopped) {
        try {
          const reply = await call('Broker/Fetch', { topic, partition, start: { offset: String(next) }, maxWaitMs: FOLLOW_WAIT_MS, decode: true });
          if (state.stopped) return;
          const fresh = (reply.records || []).filter((r) => num(r.offset) >= next).map(decode);
          next = Math.max(next, num(reply.nextOffset));
          showRange(num(reply.logStartOffset), num(reply.highWatermark));
          if (fresh.length) {
            records = records.concat(fresh).slice(-RECORDS_SHOWN_MAX);
            redraw();
          }
        } catch (error) {
          if (state.stopped) return;
          fill(results, failure(`${topic} partition ${partition}`, error));
          followBox.checked = false;
          stopFollowing();
          return;
        }
      }
    })();
  };

  const load = async () => {
    stopFollowing();
    fill(results);
    const topic = topicSelect.value;
    const partition = Number(partitionSelect.value);
    order = orderSelect.value;
    const count = Math.max(1, Math.min(RECORDS_SHOWN_MAX, Number(countInput.value) || 50));
    const from = fromSelect.value;
    let at = 0;
    if (from === 'time') {
      // datetime-local has no zone: the console reads it as UTC, as it shows times.
      at = Date.parse(`${timeInput.value}Z`);
      if (Number.isNaN(at)) {
        fill(results, h('div', { class: 'notice error' }, 'Pick a time to start from.'));
        return;
      }
    }
    status.textContent = 'Loading…';
    try {
      const position = await call('Broker/ListOffsets', { topic, partition, position: startPosition(from, Number(offsetInput.value) || 0, at) });
      const start = num(position.offset);
      const logStart = num(position.logStartOffset);
      const end = num(position.highWatermark);
      if (order === 'oldest') {
        records = await fetchRange(topic, partition, Math.max(start, logStart), end, count);
      } else {
        // Newest first: the records before the position (an offset includes itself).
        // From the beginning, newest first: the first `count` records, the last of them on top.
        let until = Math.min(end, from === 'offset' ? start + 1 : start);
        if (from === 'earliest') until = Math.min(end, logStart + count);
        records = await fetchRange(topic, partition, Math.max(logStart, until - count), until, count);
      }
      showRange(logStart, end);
      fill(results, range);
      redraw();
      if (followBox.checked) {
        follow(topic, partition, end);
        applyFilter();
      }
    } catch (error) {
      records = [];
      redraw();
      fill(results, failure(`${topic} partition ${partition}`, error));
    }
  };

  topicSelect.addEventListener('change', fillPartitions);
  fromSelect.addEventListener('change', () => {
    offsetInput.hidden = fromSelect.value !== 'offset';
    timeInput.hidden = fromSelect.value !== 'time';
  });
  modeSelect.addEventListener('change', redraw);
  searchInput.addEventListener('input', applyFilter);
  followBox.addEventListener('change', () => {
    if (followBox.checked) load();
    else {
      stopFollowing();
      applyFilter();
    }
  });
  const form = h('form', { class: 'inline', id: 'browse' },
    h('label', {}, 'Topic ', topicSelect),
    h('label', {}, 'Partition ', partitionSelect),
    h('label', {}, 'From ', fromSelect, offsetInput, timeInput),
    h('label', {}, 'Order ', orderSelect),
    h('label', {}, 'Records ', countInput),
    h('label', {}, 'Show values as ', modeSelect),
    loadButton,
    h('label', { class: 'check' }, followBox, ' Follow live'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    load();
  });
  fill(main,
    h('h1', {}, 'Messages'),
    form,
    h('div', { class: 'search' }, searchInput),
    results,
    status,
    h('table', { class: 'records' },
      h('thead', {}, h('tr', {}, ['offset', 'timestamp', 'key', 'value', 'headers'].map((name) => h('th', {}, name)))),
      body));
  await load();
  return stopFollowing;
}
