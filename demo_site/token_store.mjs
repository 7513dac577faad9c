// The bearer token across a reload of this tab, never in clear in storage.
//
// The token is encrypted with AES-GCM (256 bits). The key is a
// *non-extractable* WebCrypto key, created once per origin and kept in
// IndexedDB: JavaScript can ask the browser to use it, but cannot read its
// bytes. sessionStorage (per tab, beside the runtime's resume state) holds
// only {iv, ct}, the ciphertext. The WebSocket URL the token was given for
// is the GCM additional data, so a token saved for one server never
// decrypts for another one.
//
// Where WebCrypto or IndexedDB is missing (a non-secure context such as
// http:// on a LAN address, or storage turned off), nothing is stored: the
// token lives in memory only, and after a reload the page asks for it again.
//
// This stops the token from being read out of sessionStorage (storage
// dumps, the resume secret's neighbour). It does not stop a script running
// inside the page, which could call decrypt itself: that is the CSP's job
// (docs/security.md, items 5 and 6).

const DB_NAME = "nimbus-demo";
const DB_STORE = "keys";
const KEY_ID = "token-wrap";
const ITEM = "nimbus-demo.token";

const enc = new TextEncoder();

/** Whether this page can keep a wrapped token: a secure context with WebCrypto and IndexedDB. */
export function canWrap() {
  return Boolean(globalThis.isSecureContext && globalThis.crypto?.subtle && globalThis.indexedDB);
}

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function openDb() {
  const req = indexedDB.open(DB_NAME, 1);
  req.onupgradeneeded = () => req.result.createObjectStore(DB_STORE);
  return request(req);
}

/** The origin's wrapping key; created (once, race-free across tabs) when `create`. */
async function wrappingKey(create) {
  const db = await openDb();
  try {
    const stored = await request(db.transaction(DB_STORE, "readonly").objectStore(DB_STORE).get(KEY_ID));
    if (stored || !create) return stored ?? null;
    const fresh = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
    // get + put in one transaction: two tabs creating a key at once agree on one.
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(DB_STORE, "readwrite");
      const store = tx.objectStore(DB_STORE);
      let key = fresh;
      const get = store.get(KEY_ID);
      get.onsuccess = () => {
        if (get.result) key = get.result;
        else store.put(fresh, KEY_ID);
      };
      tx.oncomplete = () => resolve(key);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)));
const unb64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

/**
 * Keep `token` (given for the WebSocket URL `boundTo`) for a reload of this tab.
 * Returns where it went: "wrapped" (ciphertext in sessionStorage), "memory"
 * (nothing stored: no WebCrypto/IndexedDB here) or "none" (no token).
 * `item`: the sessionStorage key (another page of the site keeps its own).
 */
export async function saveToken(token, boundTo, { item = ITEM } = {}) {
  forgetToken({ item });
  if (!token) return "none";
  if (!canWrap()) return "memory";
  try {
    const key = await wrappingKey(true);
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const ct = await crypto.subtle.encrypt(
      { name: "AES-GCM", iv, additionalData: enc.encode(boundTo) },
      key,
      enc.encode(token),
    );
    sessionStorage.setItem(item, JSON.stringify({ v: 1, iv: b64(iv), ct: b64(ct) }));
    return "wrapped";
  } catch (e) {
    console.warn("the bearer token cannot be kept for a reload:", e?.name ?? e);
    forgetToken({ item });
    return "memory";
  }
}

/** The token saved for `boundTo`, or null (none saved, another server, or undecryptable). */
export async function loadToken(boundTo, { item = ITEM } = {}) {
  let saved;
  try {
    saved = JSON.parse(sessionStorage.getItem(item) || "null");
  } catch {
    saved = null;
  }
  if (!saved || saved.v !== 1 || !canWrap()) return null;
  try {
    const key = await wrappingKey(false);
    if (!key) return null;
    const pt = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: unb64(saved.iv), additionalData: enc.encode(boundTo) },
      key,
      unb64(saved.ct),
    );
    return new TextDecoder().decode(pt);
  } catch {
    return null; // another server's token, or the key is gone
  }
}

/** Drop the saved token of this tab. */
export function forgetToken({ item = ITEM } = {}) {
  try {
    sessionStorage.removeItem(item);
  } catch {
    /* storage disabled */
  }
}
