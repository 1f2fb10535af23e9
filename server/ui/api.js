// The console's only way to the cluster: the node's JSON API (`POST /api/v1/{Service}/{Method}`,
// the strata.v1 methods in the proto3 JSON mapping). Requests carry the credentials the user
// signed in with (kept in this tab's sessionStorage); without them the browser's client
// certificate, if any, is the principal. Every refusal comes back as an ApiError holding the
// API's stable code and message, so pages can show the reason in place of what was refused.

const CREDENTIALS_KEY = 'strata.credentials';

/** A failed call: `status` is the HTTP status (0 when the node did not answer). */
export class ApiError extends Error {
  constructor(status, body, method) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    // `Service/Method` of the call that failed.
    this.method = method;
    // The gRPC code name ("PERMISSION_DENIED") and Strata's error code
    // ("ERROR_CODE_AUTHORIZATION_FAILED"), when the API gave one.
    this.code = body.code || 'UNKNOWN';
    this.error = body.error || '';
    this.detail = body.detail || {};
  }

  get unauthenticated() { return this.status === 401; }
  get refused() { return this.status === 403; }
  get notLeader() { return this.error === 'ERROR_CODE_NOT_LEADER'; }
  /** Admin and group calls, which only the controller's leader serves (Broker calls read and
   * write partitions, which their replicas and leaders serve). */
  get forController() { return !this.method.startsWith('Broker/'); }
}

/** The signed-in user's `{user, password}`, or null. */
export function credentials() {
  try {
    return JSON.parse(sessionStorage.getItem(CREDENTIALS_KEY));
  } catch {
    return null;
  }
}

export function signIn(user, password) {
  sessionStorage.setItem(CREDENTIALS_KEY, JSON.stringify({ user, password }));
}

export function signOut() {
  sessionStorage.removeItem(CREDENTIALS_KEY);
}

let unauthenticatedListener = null;

/** Called with the ApiError whenever a call answers 401 (no or wrong credentials). */
export function onUnauthenticated(listener) {
  unauthenticatedListener = listener;
}

function basic(user, password) {
  // btoa takes Latin-1 only: encode the UTF-8 bytes of the pair first.
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return `Basic ${btoa(binary)}`;
}

/**
 * Calls `Service/Method` with `request` (a proto3 JSON object) and returns the reply.
 * Throws an ApiError on any failure; a 401 also notifies the unauthenticated listener.
 */
export async function call(method, request = {}) {
  const headers = { 'Content-Type': 'application/json' };
  const signedIn = credentials();
  if (signedIn) headers.Authorization = basic(signedIn.user, signedIn.password);
  let response;
  try {
    response = await fetch(`/api/v1/${method}`, {
      method: 'POST',
      headers,
      body: JSON.stringify(request),
      credentials: 'same-origin',
    });
  } catch (error) {
    throw new ApiError(0, { code: 'UNAVAILABLE', message: `the node did not answer (${error.message})` }, method);
  }
  const text = await response.text();
  let body;
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    body = { code: 'UNKNOWN', message: text };
  }
  if (response.ok) return body;
  const error = new ApiError(response.status, body, method);
  // Which credentials were refused: a reply to a request sent before the user signed in
  // again must not ask for the new ones.
  error.credentials = signedIn;
  if (error.unauthenticated && unauthenticatedListener) unauthenticatedListener(error);
  throw error;
}
