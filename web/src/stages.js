// The queue's stages against the server: hash in workers, ask which hashes are missing, record known
// content with an empty PUT, send small files with PUT /blobs/{hash} and large ones resumably with tus.

import * as tus from "tus-js-client";
import { ApiError } from "./api.js";

export const TUS_THRESHOLD = 16 * 1024 * 1024; // above this a file goes resumably (tus), if the server offers it
const TUS_CHUNK = 32 * 1024 * 1024; // one PATCH per chunk: a dropped connection costs at most this much
const TUS_RETRY_DELAYS = [0, 1000, 3000, 5000, 10000];

/** Whether the server answers tus at /uploads/ (OPTIONS needs no token). */
export async function tusOffered() {
  try {
    const response = await fetch("/uploads/", { method: "OPTIONS", cache: "no-store" });
    return response.status === 204 && response.headers.has("Tus-Resumable");
  } catch {
    return false;
  }
}

function tusError(err) {
  const response = err?.originalResponse;
  if (response) {
    try {
      const body = JSON.parse(response.getBody());
      if (body?.error) return new ApiError(response.getStatus(), body.error.code, body.error.message);
    } catch {
      // not JSON
    }
    return new ApiError(response.getStatus(), `http_${response.getStatus()}`, err.message);
  }
  return new ApiError(0, "network_error", "the connection to the server was lost (the upload can resume)");
}

function sendByTus(api, item, onBytes) {
  return new Promise((resolve, reject) => {
    let result = null;
    const upload = new tus.Upload(item.file, {
      endpoint: "/uploads/",
      chunkSize: TUS_CHUNK,
      retryDelays: TUS_RETRY_DELAYS,
      headers: api.authHeaders(),
      metadata: { filename: item.name, filetype: item.file.type || "application/octet-stream", blake3: item.hash },
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      onProgress: (sent) => onBytes(sent),
      onAfterResponse: (_req, res) => {
        const header = res.getHeader("RhinoBox-Result");
        if (header) result = JSON.parse(header);
      },
      onSuccess: async () => {
        try {
          if (result === null) result = (await api.json("GET", new URL(upload.url, location.href).pathname)).result;
          resolve(result);
        } catch (err) {
          reject(err);
        }
      },
      onError: (err) => reject(tusError(err)),
    });
    item.tus = upload;
    upload
      .findPreviousUploads()
      .then((previous) => {
        if (previous.length > 0) upload.resumeFromPreviousUpload(previous[0]);
        upload.start();
      })
      .catch((err) => reject(tusError(err)));
  });
}

/** Uploads that tus remembers (interrupted by a reload or a lost connection), newest first. */
export async function interruptedUploads() {
  try {
    const all = await tus.defaultOptions.urlStorage.findAllUploads();
    return all.sort((a, b) => String(b.creationTime).localeCompare(String(a.creationTime)));
  } catch {
    return [];
  }
}

export async function forgetInterrupted(entries) {
  for (const entry of entries) await tus.defaultOptions.urlStorage.removeUpload(entry.urlStorageKey);
}

export function makeStages(api, pool, useTus) {
  return {
    hash: (item, onFraction) => pool.hash(item.file, onFraction),
    missing: (hashes) => api.missing(hashes),
    record: async (item) => {
      try {
        return await api.putBlob(item.hash, item.name, null);
      } catch (err) {
        // Deleted since the check: an empty body for unknown content is refused; send the bytes instead.
        if (err.code === "empty_file" && item.size > 0) throw Object.assign(err, { code: "not_known" });
        throw err;
      }
    },
    sendBatch: (items, onBytes) => api.ingest(items, onBytes),
    send: (item, onBytes) =>
      useTus() && item.size >= TUS_THRESHOLD
        ? sendByTus(api, item, onBytes)
        : api.putBlob(item.hash, item.name, item.file, onBytes),
  };
}
