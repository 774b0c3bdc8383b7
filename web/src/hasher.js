// A small pool of hashing workers: each hashes one file at a time; callers wait for a free one.

/* global HASH_WORKER_URL */
export class HashPool {
  constructor(size) {
    this.idle = [];
    this.waiting = [];
    this.jobs = new Map();
    this.nextId = 1;
    for (let i = 0; i < size; i += 1) {
      const worker = new Worker(HASH_WORKER_URL, { type: "module" });
      worker.onmessage = (event) => this._message(worker, event.data);
      this.idle.push(worker);
    }
  }

  /** The file's BLAKE3 as 64 hex; `onFraction(0..1)` as slices are hashed. */
  hash(file, onFraction) {
    return new Promise((resolve, reject) => {
      this.waiting.push({ file, onFraction, resolve, reject });
      this._dispatch();
    });
  }

  _dispatch() {
    while (this.idle.length > 0 && this.waiting.length > 0) {
      const worker = this.idle.pop();
      const job = this.waiting.shift();
      const id = this.nextId++;
      this.jobs.set(id, { ...job, worker });
      worker.postMessage({ id, file: job.file });
    }
  }

  _message(worker, data) {
    const job = this.jobs.get(data.id);
    if (!job) return;
    if (data.done !== undefined) {
      job.onFraction(job.file.size ? data.done / job.file.size : 1);
      return;
    }
    this.jobs.delete(data.id);
    this.idle.push(worker);
    if (data.error) job.reject(Object.assign(new Error(`cannot read the file: ${data.error}`), { code: "read_error" }));
    else job.resolve(data.hash);
    this._dispatch();
  }
}
