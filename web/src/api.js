// The public HTTP API as the page uses it: JSON calls and uploads with the session's token, errors as
// ApiError carrying the server's stable code and message.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function errorFrom(response) {
  try {
    const body = await response.json();
    if (body?.error?.code) return new ApiError(response.status, body.error.code, body.error.message);
  } catch {
    // not the JSON error shape (a proxy's page): fall through
  }
  return new ApiError(response.status, `http_${response.status}`, `HTTP ${response.status} ${response.statusText}`);
}

export class Api {
  constructor() {
    this.token = null;
  }

  authHeaders(extra = {}) {
    return this.token ? { ...extra, Authorization: `Bearer ${this.token}` } : { ...extra };
  }

  async request(method, path, { json, headers, signal } = {}) {
    const init = { method, headers: this.authHeaders(headers), signal, cache: "no-store" };
    if (json !== undefined) {
      init.body = JSON.stringify(json);
      init.headers["Content-Type"] = "application/json";
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, "network_error", `the server cannot be reached (${err.message})`);
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  async json(method, path, options) {
    const response = await this.request(method, path, options);
    return response.status === 204 ? null : response.json();
  }

  missing(hashes) {
    return this.json("POST", "/blobs/missing", { json: { hashes } }).then((body) => body.missing);
  }

  /** POST /ingest of several files, each with its declared BLAKE3 (verified by the server); the answer's results. */
  ingest(items, onBytes = () => {}) {
    const form = new FormData();
    for (const item of items) {
      form.append("files.blake3", item.hash); // applies to the next file part
      form.append("files", item.file, item.name);
    }
    return this._xhr("POST", "/ingest", {}, form, onBytes).then((body) => {
      if (!Array.isArray(body?.results)) throw new ApiError(0, "bad_answer", "the server's answer has no results");
      return body.results;
    });
  }

  /** PUT /blobs/{hash}: with `body` null, records known content (no bytes sent). Upload progress via XHR. */
  putBlob(hash, name, body, onBytes = () => {}) {
    return this._xhr("PUT", `/blobs/${hash}`, { "X-Filename": encodeURIComponent(name) }, body, onBytes);
  }

  /** A request through XMLHttpRequest, the one browser API that reports upload progress; the JSON answer. */
  _xhr(method, path, headers, body, onBytes) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open(method, path);
      for (const [key, value] of Object.entries(this.authHeaders(headers))) {
        xhr.setRequestHeader(key, value);
      }
      xhr.upload.onprogress = (event) => onBytes(event.loaded);
      xhr.onerror = () => reject(new ApiError(0, "network_error", "the connection to the server was lost"));
      xhr.onload = () => {
        let parsed = null;
        try {
          parsed = JSON.parse(xhr.responseText);
        } catch {
          parsed = null;
        }
        if (parsed?.results) resolve(parsed); // an ingest answer: 200, 207, or one failed file's own status
        else if (xhr.status >= 200 && xhr.status < 300 && parsed) resolve(parsed);
        else if (parsed?.error) reject(new ApiError(xhr.status, parsed.error.code, parsed.error.message));
        else reject(new ApiError(xhr.status, `http_${xhr.status}`, `HTTP ${xhr.status}`));
      };
      xhr.send(body);
    });
  }

  /** The blob's bytes as an object URL (for previews when the token cannot go in a plain link). */
  async objectUrl(path, options) {
    const response = await this.request("GET", path, options);
    return URL.createObjectURL(await response.blob());
  }
}
