// How a failed call is shown in place of what it would have shown: the API's reason, with what
// to do about it. A refusal (403) names the principal, the operation and the resource, as the
// server's authorizer words it; NOT_LEADER names the node that has the data, or, for admin and
// group calls, the node that leads the controller (only it serves them).
import { h } from './dom.js';

/** An element explaining `error` (an ApiError), headed by `what` ("Topics", "Partition 0"). */
export function failure(what, error) {
  if (error.refused) {
    return h('div', { class: 'notice refused', 'data-error': error.error || error.code },
      h('strong', {}, `${what}: refused. `), error.message);
  }
  if (error.notLeader && error.forController) {
    const leader = error.detail.leaderNodeId;
    const address = error.detail.leaderAddress;
    return h('div', { class: 'notice not-leader controller', 'data-error': error.error },
      h('strong', {}, `${what}: this node does not lead the cluster's controller, `),
      'which makes admin changes and serves consumer groups. ',
      leader
        ? `Node ${leader}${address ? ` (${address})` : ''} leads it now: open that node's console to do this.`
        : 'No leader is elected right now; try again shortly.',
      h('div', { class: 'muted' }, error.message));
  }
  if (error.notLeader) {
    const leader = error.detail.leaderNodeId;
    const address = error.detail.leaderAddress;
    return h('div', { class: 'notice not-leader', 'data-error': error.error },
      h('strong', {}, `${what}: this node holds no replica of it. `),
      leader
        ? `Its leader is node ${leader}${address ? ` (${address})` : ''}: open the console of that node to read it.`
        : 'No leader is known right now; try again shortly.',
      h('div', { class: 'muted' }, error.message));
  }
  if (error.unauthenticated) {
    return h('div', { class: 'notice refused', 'data-error': error.error || error.code },
      h('strong', {}, `${what}: sign in first. `), error.message);
  }
  return h('div', { class: 'notice error', 'data-error': error.error || error.code },
    h('strong', {}, `${what}: ${error.code}. `), error.message);
}

/** A short success line. */
export function done(text) {
  return h('div', { class: 'notice ok' }, text);
}
