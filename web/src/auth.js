// Finds out what this page may do: read at all (a token may be needed), and write (a read-only token
// may not). The token lives in sessionStorage only: it is gone when the tab closes.

import { ApiError } from "./api.js";

const TOKEN_KEY = "rhinobox.token";

export function savedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/**
 * {status: "ok", canWrite, stats} or {status: "needs_token"} or {status: "bad_token"}.
 * Writing is probed with an empty `POST /blobs/missing`: harmless, and refused (403) for read-only tokens.
 */
export async function probeAccess(api) {
  let stats;
  try {
    stats = await api.json("GET", "/stats");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return { status: api.token ? "bad_token" : "needs_token" };
    throw err;
  }
  try {
    await api.missing([]);
    return { status: "ok", canWrite: true, stats };
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) return { status: "ok", canWrite: false, stats };
    throw err;
  }
}
