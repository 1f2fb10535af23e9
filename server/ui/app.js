// The console's shell: a hash router over the four pages, the sign-in form, and the sampler
// that feeds the charts. Routes:
//   #/cluster
//   #/topics                 #/topics/NAME
//   #/messages               #/messages/TOPIC/PARTITION
//   #/groups                 #/groups/ID
// A page is `render(main, ...params)`; it may return a function that stops what it started
// (timers, live follows), called when the user leaves the page.
import { credentials, onUnauthenticated, signIn, signOut } from './api.js';
import { h, fill } from './dom.js';
import { startSampling } from './samples.js';
import * as cluster from './pages/cluster.js';
import * as topics from './pages/topics.js';
import * as messages from './pages/messages.js';
import * as groups from './pages/groups.js';

const main = document.getElementById('main');
const login = document.getElementById('login');
let stopPage = null;

function route() {
  const parts = (location.hash.replace(/^#\/?/, '') || 'cluster').split('/').map(decodeURIComponent);
  const [page, ...params] = parts;
  switch (page) {
    case 'topics':
      return params.length ? ['topics', () => topics.renderTopic(main, params[0])] : ['topics', () => topics.renderList(main)];
    case 'messages':
      return ['messages', () => messages.render(main, params[0], params[1])];
    case 'groups':
      return params.length ? ['groups', () => groups.renderGroup(main, params[0])] : ['groups', () => groups.renderList(main)];
    default:
      return ['cluster', () => cluster.render(main)];
  }
}

async function show() {
  if (stopPage) stopPage();
  stopPage = null;
  const [page, render] = route();
  for (const link of document.querySelectorAll('nav a')) {
    link.classList.toggle('active', link.dataset.page === page);
  }
  fill(main, h('p', { class: 'muted' }, 'Loading…'));
  const shown = location.hash;
  const stop = await render();
  // The user may have moved on while the page loaded: stop what it started at once.
  if (location.hash !== shown && typeof stop === 'function') stop();
  else if (typeof stop === 'function') stopPage = stop;
}

function showWho() {
  const who = document.getElementById('who');
  const signedIn = credentials();
  if (!signedIn) {
    fill(who);
    return;
  }
  fill(who, h('span', { class: 'muted' }, `Signed in as ${signedIn.user} `),
    h('button', {
      class: 'link', id: 'sign-out', type: 'button',
      onclick: () => { signOut(); showWho(); askToSignIn('Signed out.'); },
    }, 'Sign out'));
}

function askToSignIn(reason) {
  document.getElementById('login-reason').textContent = reason;
  login.hidden = false;
  main.hidden = true;
  document.getElementById('login-user').focus();
}

onUnauthenticated((error) => {
  const current = credentials();
  if (JSON.stringify(error.credentials) !== JSON.stringify(current)) return;
  askToSignIn(current ? `The node refused these credentials: ${error.message}` : 'This node asks who you are.');
});

document.getElementById('login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  signIn(document.getElementById('login-user').value, document.getElementById('login-password').value);
  document.getElementById('login-password').value = '';
  login.hidden = true;
  main.hidden = false;
  showWho();
  show();
});

window.addEventListener('hashchange', show);
showWho();
startSampling();
show();
