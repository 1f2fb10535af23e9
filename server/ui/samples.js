// Throughput and lag over the last minutes, sampled by this browser: the cluster keeps no
// history, so the console samples the totals every SAMPLE_INTERVAL_MS while it is open and
// keeps a bounded window in sessionStorage (it survives page changes and reloads of this tab,
// and starts when the console is first opened in it). Rates are differences of totals:
// - produced: the sum of every partition's high watermark (ClusterInfo);
// - consumed: the sum of every group's committed offsets (DescribeGroup);
// - per group: the summed lag in records and the largest lag in time.
// A total that goes down (a topic deleted, offsets reset backwards) counts as no traffic.
import { call } from './api.js';
import { num } from './format.js';

const SAMPLES_KEY = 'strata.samples';
export const SAMPLE_INTERVAL_MS = 5000;
export const WINDOW_MS = 10 * 60 * 1000;
/** Groups described per sample: the sampler's cost stays bounded on a cluster of many groups. */
const GROUPS_SAMPLED_MAX = 50;

/** `{startedMs, points: [{t, produced, consumed, groups: {id: {records, ms}}}]}`. */
export function history() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(SAMPLES_KEY));
    if (stored && Array.isArray(stored.points)) return stored;
  } catch {
    // A damaged entry is replaced by a fresh history below.
  }
  return { startedMs: Date.now(), points: [] };
}

function save(stored) {
  const oldest = Date.now() - WINDOW_MS;
  stored.points = stored.points.filter((point) => point.t >= oldest);
  sessionStorage.setItem(SAMPLES_KEY, JSON.stringify(stored));
}

/** Per-second rates between consecutive samples of `field`: `[[t, rate], ...]`. */
export function rates(points, field) {
  const out = [];
  for (let i = 1; i < points.length; i += 1) {
    const seconds = (points[i].t - points[i - 1].t) / 1000;
    if (seconds <= 0) continue;
    out.push([points[i].t, Math.max(0, points[i][field] - points[i - 1][field]) / seconds]);
  }
  return out;
}

/** The lag of `group` over time: `[[t, records], ...]`. */
export function groupLag(points, group) {
  return points.filter((point) => point.groups && point.groups[group])
    .map((point) => [point.t, point.groups[group].records]);
}

async function sampleOnce() {
  const cluster = await call('Admin/ClusterInfo');
  let produced = 0;
  for (const topic of cluster.topics || []) {
    for (const partition of topic.partitionInfo || []) produced += num(partition.highWatermark);
  }
  let consumed = 0;
  const groups = {};
  let listed = [];
  try {
    listed = (await call('Groups/ListGroups')).groups || [];
  } catch {
    // Without group access the consume chart stays flat; the produce one still works.
  }
  const described = await Promise.allSettled(listed.slice(0, GROUPS_SAMPLED_MAX)
    .map((group) => call('Groups/DescribeGroup', { groupId: group.groupId })));
  for (const result of described) {
    if (result.status !== 'fulfilled') continue;
    let records = 0;
    let ms = 0;
    for (const partition of result.value.partitions || []) {
      consumed += num(partition.committedOffset);
      records += num(partition.lagRecords);
      ms = Math.max(ms, num(partition.lagMs));
    }
    groups[result.value.groupId] = { records, ms };
  }
  const stored = history();
  stored.points.push({ t: Date.now(), produced, consumed, groups });
  save(stored);
}

const listeners = new Set();
let running = false;

/** Calls `listener()` after each sample until the returned function is called. */
export function onSample(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** Starts sampling (once per tab). A failed sample (signed out, node down) is skipped. */
export function startSampling() {
  if (running) return;
  running = true;
  const stored = history();
  save(stored);
  const tick = async () => {
    try {
      await sampleOnce();
      for (const listener of listeners) listener();
    } catch {
      // Skipped: the next tick tries again.
    }
    setTimeout(tick, SAMPLE_INTERVAL_MS);
  };
  tick();
}
