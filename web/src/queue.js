// The upload queue: each file is hashed, checked against the server, then recorded (known content) or
// sent (missing content), with bounded concurrency at every stage so that 10,000 dropped files neither
// freeze the page nor flood the server. The stages are injected, so this logic runs in Node's tests too.

import { ProgressAggregate } from "./progress.js";

export const QUEUED = "queued";
export const HASHING = "hashing";
export const UPLOADING = "uploading";
export const STORED = "stored";
export const DUPLICATE = "duplicate";
export const FAILED = "failed";
export const SETTLED = new Set([STORED, DUPLICATE, FAILED]);

// Hashing is a tenth of a file's work on the bar; sending (or recording) is the rest.
const HASH_SHARE = 0.1;

/** A first-in first-out list with O(1) push and shift (Array.shift is O(n) on 10,000 items). */
class Fifo {
  constructor() {
    this.items = [];
    this.head = 0;
  }
  push(item) {
    this.items.push(item);
  }
  shift() {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head += 1;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
  take(n) {
    const out = [];
    while (out.length < n && this.length > 0) out.push(this.shift());
    return out;
  }
  get length() {
    return this.items.length - this.head;
  }
}

// Small files go several to a request (when the stages offer sendBatch): per-request costs dominate them.
export const DEFAULT_LIMITS = Object.freeze({
  hashing: 2,
  sending: 4,
  checkBatch: 1000,
  batchFileMax: 256 * 1024,
  batchFiles: 100,
  batchBytes: 8 * 1024 * 1024,
});

/**
 * stages: {
 *   hash(item, onFraction) -> Promise<hex>,
 *   missing(hashes) -> Promise<string[]> (the hashes the server lacks),
 *   record(item) -> Promise<result> (known content: no bytes sent),
 *   send(item, onBytes) -> Promise<result> (result.status: "stored" or "duplicate"),
 *   sendBatch(items, onBytes) -> Promise<result[]> (optional; one result per item, in order, each with
 *     status "stored", "duplicate" or "error" and then `error: {code, message}`),
 * }
 * An error a stage throws may carry `code` and `message` (the server's), shown on the failed file;
 * an error with `code === "not_known"` from record() sends the file instead.
 */
export class UploadQueue {
  constructor(stages, limits = DEFAULT_LIMITS, onChange = () => {}) {
    this.stages = stages;
    this.limits = { ...DEFAULT_LIMITS, ...limits };
    this.onChange = onChange;
    this.items = [];
    this.progress = new ProgressAggregate();
    this.sentBytes = 0;
    this.toHash = new Fifo();
    this.toCheck = new Fifo();
    this.toSend = new Fifo();
    this.toBatch = new Fifo();
    this.hashing = 0;
    this.checking = 0;
    this.sending = 0;
    this.nextId = 1;
    this.counts = { queued: 0, hashing: 0, uploading: 0, stored: 0, duplicate: 0, failed: 0 };
  }

  /** Queues files ({file, name, size}) and starts at once; returns the new items. */
  add(files) {
    const added = [];
    for (const f of files) {
      const item = { id: this.nextId++, file: f.file, name: f.name, size: f.size, state: QUEUED, hash: null };
      item.sent = 0;
      item.hashed = 0;
      item.error = null;
      item.result = null;
      this.items.push(item);
      this.counts.queued += 1;
      this.progress.add(item.id, item.size);
      this.toHash.push(item);
      added.push(item);
    }
    this.onChange(null);
    this._pump();
    return added;
  }

  /** Queues the failed files again (only those); hashes already computed are reused. */
  retryFailed() {
    const failed = this.items.filter((item) => item.state === FAILED);
    for (const item of failed) {
      item.error = null;
      item.sent = 0;
      this.progress.add(item.id, item.size);
      this._setState(item, QUEUED);
      if (item.hash) this.toCheck.push(item);
      else this.toHash.push(item);
    }
    this.onChange(null);
    this._pump();
    return failed.length;
  }

  /** Drops settled files from the list (the overall bar keeps its place). */
  clearSettled() {
    const keep = [];
    for (const item of this.items) {
      if (SETTLED.has(item.state)) {
        this.counts[item.state] -= 1;
        this.progress.forget(item.id);
      } else keep.push(item);
    }
    this.items = keep;
    this.onChange(null);
  }

  get active() {
    return this.items.length - this.counts.stored - this.counts.duplicate - this.counts.failed;
  }

  _setState(item, state) {
    this.counts[item.state] -= 1;
    item.state = state;
    this.counts[state] += 1;
  }

  _pump() {
    while (this.hashing < this.limits.hashing && this.toHash.length > 0) this._hash(this.toHash.shift());
    while (this.checking < 1 && this.toCheck.length > 0) this._check(this.toCheck.take(this.limits.checkBatch));
    while (this.sending < this.limits.sending && (this.toSend.length > 0 || this.toBatch.length > 0)) {
      // Alternate between the lanes so that neither waits for the other to drain.
      this.turn = (this.turn ?? 0) + 1;
      if (this.toBatch.length > 0 && (this.toSend.length === 0 || this.turn % 2 === 0)) {
        this._sendBatch(this._takeBatch());
      } else {
        const [item, known] = this.toSend.shift();
        this._send(item, known);
      }
    }
  }

  async _hash(item) {
    this.hashing += 1;
    this._setState(item, HASHING);
    this.onChange(item);
    try {
      item.hash = await this.stages.hash(item, (fraction) => {
        item.hashed = fraction;
        this.progress.set(item.id, HASH_SHARE * fraction);
        this.onChange(item);
      });
      this.progress.set(item.id, HASH_SHARE);
      this.toCheck.push(item);
    } catch (err) {
      this._fail(item, err);
    } finally {
      this.hashing -= 1;
      this._pump();
    }
  }

  async _check(batch) {
    this.checking += 1;
    try {
      const missing = new Set(await this.stages.missing(batch.map((item) => item.hash)));
      for (const item of batch) {
        const known = !missing.has(item.hash);
        if (!known && this.stages.sendBatch && item.size <= this.limits.batchFileMax) this.toBatch.push(item);
        else this.toSend.push([item, known]);
      }
    } catch (err) {
      for (const item of batch) this._fail(item, err);
    } finally {
      this.checking -= 1;
      this._pump();
    }
  }

  async _send(item, known) {
    this.sending += 1;
    this._setState(item, UPLOADING);
    this.onChange(item);
    try {
      let result = null;
      if (known) {
        try {
          result = await this.stages.record(item);
        } catch (err) {
          if (err?.code !== "not_known") throw err;
        }
      }
      if (result === null) {
        result = await this.stages.send(item, (bytes) => {
          this._sentUpTo(item, bytes);
          this.onChange(item);
        });
      }
      item.result = result;
      this._setState(item, result?.status === DUPLICATE ? DUPLICATE : STORED);
      this.progress.settle(item.id);
    } catch (err) {
      this._fail(item, err);
    } finally {
      this.sending -= 1;
      this.onChange(item);
      this._pump();
    }
  }

  _takeBatch() {
    const batch = [];
    let bytes = 0;
    while (this.toBatch.length > 0 && batch.length < this.limits.batchFiles) {
      const next = this.toBatch.items[this.toBatch.head];
      if (batch.length > 0 && bytes + next.size > this.limits.batchBytes) break;
      batch.push(this.toBatch.shift());
      bytes += next.size;
    }
    return batch;
  }

  async _sendBatch(batch) {
    this.sending += 1;
    for (const item of batch) this._setState(item, UPLOADING);
    this.onChange(null);
    const total = Math.max(1, batch.reduce((sum, item) => sum + item.size, 0));
    try {
      const results = await this.stages.sendBatch(batch, (bytes) => {
        const share = Math.min(1, bytes / total); // multipart framing makes `bytes` overshoot a little
        for (const item of batch) this._sentUpTo(item, share * item.size);
        this.onChange(null);
      });
      batch.forEach((item, index) => {
        const result = results[index];
        if (result?.status === STORED || result?.status === DUPLICATE) {
          this._sentUpTo(item, item.size);
          item.result = result;
          this._setState(item, result.status);
          this.progress.settle(item.id);
        } else this._fail(item, result?.error ?? { code: "no_result", message: "the server gave no result" });
      });
    } catch (err) {
      for (const item of batch) this._fail(item, err);
    } finally {
      this.sending -= 1;
      this.onChange(null);
      this._pump();
    }
  }

  _sentUpTo(item, bytes) {
    const delta = Math.max(0, Math.min(item.size, bytes) - item.sent);
    item.sent += delta;
    this.sentBytes += delta;
    this.progress.set(item.id, HASH_SHARE + (1 - HASH_SHARE) * (item.sent / Math.max(1, item.size)));
  }

  _fail(item, err) {
    item.error = { code: err?.code ?? "client_error", message: err?.message ?? String(err) };
    this._setState(item, FAILED);
    this.progress.settle(item.id);
    this.onChange(item);
  }
}
