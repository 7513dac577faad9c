// Plain-words sentences for the errors a user meets (issue 14.6).
//
// One table, keyed by the stable ErrorCode names of the core (plus NOT_FOUND,
// ORIGIN_REFUSED and UPGRADE_REFUSED: what the page's probe learns when the
// WebSocket failed with 1006 but the server answers HTTP), says what happened; the code and the
// raw reason go on a smaller detail line.  A 4003 AUTH_FAILED is told apart
// by the server's close reason (node_runtime/server/policy.py).  The CLI has
// the same table in node_runtime/client/messages.py; tests/server/
// test_user_errors.py checks that both hold the same keys and sentences.
// "{host}" stands for the server's host:port.

/** What happened, by error name. */
export const MESSAGES = Object.freeze({
  CONNECT_FAILED: "Could not reach the server at {host} — is it running?",
  NOT_FOUND: "There is no terminal endpoint at this address on {host}",
  ORIGIN_REFUSED: "This page is not allowed to connect to that server",
  UPGRADE_REFUSED: "The server at {host} is up but refused the terminal connection (is this page allowed to connect to it?)",
  POLICY_VIOLATION: "This page is not allowed to connect to that server",
  AUTH_FAILED: "The server did not accept the credentials",
  AUTH_PROVIDER_FAILED: "The token could not be obtained",
  RESUME_FAILED: "This terminal session has expired; start a new one",
  SERVER_OVERLOAD: "The server is full; try again later",
  TRY_AGAIN_LATER: "The server is busy; try again later",
  TIMEOUT: "The connection timed out: no answer from the server in time",
  GOING_AWAY: "The server restarted or is shutting down",
  SERVICE_RESTART: "The server restarted or is shutting down",
  CONNECTION_LOST: "The connection to {host} was lost and the session could not be resumed",
  RETRIES_EXHAUSTED: "Lost the connection to {host} and could not reconnect — is the server running?",
  POLICY_DENIED: "The server refused this (too many attempts, or a target it does not allow)",
  UNSUPPORTED_PROFILE: "The server does not speak this client's protocol version",
  BAD_HELLO: "The server did not understand this client (a version mismatch?)",
  TLS_HANDSHAKE: "The secure (TLS) connection to {host} failed",
  INTERNAL_ERROR: "The server hit an internal error",
  INTERNAL_ERROR_WS: "The server hit an internal error",
  CANCELLED: "This connection was replaced by a newer one",
  // Without the key (an older server; a revoked key): HOST_KEY_MESSAGES has the full sentences.
  HOST_KEY_CHANGED: "The SSH host key of the target changed — this could be a man-in-the-middle attack",
  HOST_KEY_UNKNOWN: "The SSH host key of the target is not known to this gateway; the operator must add it to known_hosts",
});

/**
 * A refused SSH host key (open error HOST_KEY_CHANGED / HOST_KEY_UNKNOWN), with
 * the key the target offered: the error's hostKey {keyType, fingerprint,
 * known, host} (core/errors.py HostKey).  "{target}" is the SSH target's
 * HOST:PORT.  The gateway never accepts the key.
 */
export const HOST_KEY_MESSAGES = Object.freeze({
  HOST_KEY_CHANGED:
    "The SSH host key of {target} changed — this could be a man-in-the-middle attack. Offered key: {keyType} {fingerprint}",
  HOST_KEY_UNKNOWN:
    "The SSH host key of {target} is not known to this gateway ({keyType} {fingerprint}); the operator must add it to known_hosts",
});

/** AUTH_FAILED (4003), by the server's close reason. */
export const AUTH_REASONS = Object.freeze({
  "token required": "The server needs a token",
  "token not accepted": "The token was not accepted",
  "anonymous access is for the server's own user only":
    "Only the user who started the server may connect (it was started without a token)",
});

/**
 * Share links (issue 18), by the server's close reason: 4016 SHARE_REVOKED ends
 * a viewer's connection (its link was revoked, expired, or the terminal it
 * watched ended); a link that is no longer valid is refused at connect with
 * 4003.  Kept apart from MESSAGES and AUTH_REASONS, which the CLI's table
 * (node_runtime/client/messages.py) mirrors entry for entry.
 */
export const SHARE_REASONS = Object.freeze({
  "share link revoked by its owner": "The owner stopped sharing",
  "share link expired": "The share link expired",
  "the shared terminal ended": "The shared terminal ended",
  "share link not valid (revoked, expired or unknown)": "This share link is not valid (it was revoked, it expired, or it is unknown)",
});

/** 4016 SHARE_REVOKED with a reason the table above does not know. */
export const SHARE_REVOKED_MESSAGE = "The share link no longer works (revoked, expired, or its terminal ended)";

/** Whether error `name` with `reason` ends a viewer's share link: reconnecting cannot help. */
export function shareEnded(name, reason = "") {
  return name === "SHARE_REVOKED" || Object.hasOwn(SHARE_REASONS, reason);
}

/**
 * Whether error `name` with the server's close `reason` means "bring (another)
 * bearer token": retrying with the same one would fail the same way, so the
 * page asks for it (issue 15.7).
 */
export function asksForToken(name, reason = "") {
  return name === "AUTH_FAILED" && (reason === "token required" || reason === "token not accepted");
}

/**
 * The close codes a server may close a first connection with (the client
 * reports CONNECT_FAILED) that the table words: the core's names for them
 * (core/errors.py CloseCode; tests/server/test_user_errors.py compares).
 */
export const CONNECT_CLOSE_NAMES = Object.freeze({
  1001: "GOING_AWAY",
  1011: "INTERNAL_ERROR_WS",
  1012: "SERVICE_RESTART",
  1013: "TRY_AGAIN_LATER",
  4010: "SERVER_OVERLOAD",
  4012: "TIMEOUT",
  4015: "INTERNAL_ERROR",
});

/**
 * The sentence for error `name` with the server's close `reason` and
 * WebSocket close `code`, or null.  A CONNECT_FAILED the server closed with
 * a code (4010 full, 1001 going away...) is that code's.
 */
export function userMessage(name, reason = "", host = "the server", code = null) {
  if (name === "CONNECT_FAILED" && Object.hasOwn(CONNECT_CLOSE_NAMES, code)) name = CONNECT_CLOSE_NAMES[code];
  if (Object.hasOwn(SHARE_REASONS, reason) && ["SHARE_REVOKED", "AUTH_FAILED", "CONNECT_FAILED"].includes(name)) return SHARE_REASONS[reason];
  if (name === "SHARE_REVOKED") return SHARE_REVOKED_MESSAGE;
  if (name === "AUTH_FAILED" && Object.hasOwn(AUTH_REASONS, reason)) return AUTH_REASONS[reason];
  const text = Object.hasOwn(MESSAGES, name) ? MESSAGES[name] : null;
  return text == null ? null : text.replaceAll("{host}", host);
}

/**
 * The sentence for a refused SSH host key: error `name` with its `hostKey`
 * ({keyType, fingerprint, host}), or null without one.  The server's fields
 * are shown with control characters escaped.
 */
export function hostKeyMessage(name, hostKey) {
  if (hostKey == null || !Object.hasOwn(HOST_KEY_MESSAGES, name)) return null;
  const fields = { target: hostKey.host, keyType: hostKey.keyType, fingerprint: hostKey.fingerprint };
  return HOST_KEY_MESSAGES[name].replace(/\{(target|keyType|fingerprint)\}/g, (_, k) => escapeControls(fields[k]));
}

const escapeControls = (s) =>
  String(s ?? "").replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);

/**
 * "4003 AUTH_FAILED: token not accepted": the code, its name and the raw
 * reason, control characters shown escaped (the reason is the server's, and
 * the page writes this line into the terminal too).
 */
export function detailLine(code, name, reason) {
  const head = [code == null ? "" : String(code), name || ""].filter(Boolean).join(" ");
  const text = escapeControls(reason);
  return text ? `${head}: ${text}` : head;
}

/**
 * After a WebSocket that failed with 1006 before it opened: ask the server
 * over HTTP (`httpURL`, the endpoint's own address) whether it is there at
 * all.  CONNECT_FAILED when nothing answers; NOT_FOUND for a 404 (no endpoint
 * at that path); ORIGIN_REFUSED for a 403; UPGRADE_REFUSED for any other
 * answer -- the server is up but refused the upgrade (a browser's WebSocket
 * hides the HTTP status, and a fetch cannot repeat the WebSocket's Origin
 * under this page's no-referrer policy, so an origin refusal looks like this).
 */
export async function probe(httpURL, timeoutMs = 3000) {
  try {
    const r = await fetch(httpURL, {
      cache: "no-store",
      credentials: "omit",
      redirect: "manual",
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (r.status === 404) return "NOT_FOUND";
    if (r.status === 403) return "ORIGIN_REFUSED";
    return "UPGRADE_REFUSED";
  } catch {
    return "CONNECT_FAILED";
  }
}
