import { test } from "node:test";
import assert from "node:assert/strict";
import { UploadQueue } from "../src/queue.js";

function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

function files(...sizes) {
  return sizes.map((size, i) => ({ file: { content: `f${i}` }, name: `f${i}`, size }));
}

/** Stages that hash to the file's content, and a server that holds `known`. */
function fakeStages(known = new Set(), fail = new Map()) {
  const calls = { hash: 0, missing: [], record: [], send: [] };
  const stages = {
    async hash(item, onFraction) {
      calls.hash += 1;
      onFraction(1);
      return item.file.content;
    },
    async missing(hashes) {
      calls.missing.push(hashes);
      return hashes.filter((h) => !known.has(h));
    },
    async record(item) {
      calls.record.push(item.hash);
      return { status: "duplicate" };
    },
    async send(item, onBytes) {
      calls.send.push(item.hash);
      const error = fail.get(item.hash);
      if (error) {
        fail.delete(item.hash);
        throw error;
      }
      onBytes(item.size);
      known.add(item.hash);
      return { status: "stored" };
    },
  };
  return { stages, calls };
}

async function settled(queue) {
  for (let i = 0; i < 1000 && queue.active > 0; i += 1) await tick();
  assert.equal(queue.active, 0);
}

test("known content is recorded without sending bytes, missing content is sent", async () => {
  const { stages, calls } = fakeStages(new Set(["f1"]));
  const queue = new UploadQueue(stages);
  queue.add(files(10, 20, 30));
  await settled(queue);
  assert.deepEqual(
    queue.items.map((i) => i.state),
    ["stored", "duplicate", "stored"],
  );
  assert.deepEqual(calls.record, ["f1"]);
  assert.deepEqual(calls.send.sort(), ["f0", "f2"]);
  assert.equal(queue.sentBytes, 40);
  assert.equal(queue.progress.fraction(), 1);
});

test("a failure shows the server's error; retry sends only the failed file and reuses its hash", async () => {
  const boom = Object.assign(new Error("the ingest queue is full"), { code: "overloaded" });
  const { stages, calls } = fakeStages(new Set(), new Map([["f1", boom]]));
  const queue = new UploadQueue(stages);
  queue.add(files(1, 2, 3));
  await settled(queue);
  const failed = queue.items[1];
  assert.equal(failed.state, "failed");
  assert.deepEqual(failed.error, { code: "overloaded", message: "the ingest queue is full" });
  assert.equal(queue.counts.failed, 1);
  assert.equal(calls.hash, 3);
  assert.equal(queue.retryFailed(), 1);
  await settled(queue);
  assert.equal(failed.state, "stored");
  assert.equal(calls.hash, 3);
  assert.equal(calls.send.filter((h) => h === "f0").length, 1);
  assert.deepEqual(queue.counts, { queued: 0, hashing: 0, uploading: 0, stored: 3, duplicate: 0, failed: 0 });
});

test("a record refused as unknown (deleted meanwhile) sends the file", async () => {
  const { stages, calls } = fakeStages(new Set(["f0"]));
  stages.record = async () => {
    throw Object.assign(new Error("gone"), { code: "not_known" });
  };
  const queue = new UploadQueue(stages);
  queue.add(files(5));
  await settled(queue);
  assert.equal(queue.items[0].state, "stored");
  assert.deepEqual(calls.send, ["f0"]);
});

test("concurrency is bounded at every stage, and hashes are checked in batches", async () => {
  const gates = [];
  let hashing = 0;
  let maxHashing = 0;
  let sending = 0;
  let maxSending = 0;
  const batches = [];
  const stages = {
    async hash(item) {
      hashing += 1;
      maxHashing = Math.max(maxHashing, hashing);
      await tick();
      hashing -= 1;
      return item.name;
    },
    async missing(hashes) {
      batches.push(hashes.length);
      await tick();
      return hashes;
    },
    async record() {
      throw new Error("unexpected");
    },
    async send() {
      sending += 1;
      maxSending = Math.max(maxSending, sending);
      const gate = deferred();
      gates.push(gate);
      await gate.promise;
      sending -= 1;
      return { status: "stored" };
    },
  };
  const queue = new UploadQueue(stages, { hashing: 2, sending: 3, checkBatch: 50 });
  queue.add(files(...Array.from({ length: 200 }, () => 1)));
  for (let i = 0; i < 5000 && queue.active > 0; i += 1) {
    if (i % 10 === 9) while (gates.length) gates.shift().resolve();
    await tick();
  }
  assert.equal(queue.counts.stored, 200);
  assert.equal(maxHashing, 2);
  assert.equal(maxSending, 3);
  assert.ok(Math.max(...batches) <= 50);
  assert.equal(batches.reduce((a, b) => a + b, 0), 200);
});

test("10,000 files are queued quickly and the bar ends at 1", async () => {
  const { stages } = fakeStages();
  const queue = new UploadQueue(stages, { hashing: 2, sending: 6, checkBatch: 1000 });
  let changes = 0;
  queue.onChange = () => {
    changes += 1;
  };
  queue.add(files(...Array.from({ length: 10000 }, (_, i) => i)));
  for (let i = 0; i < 100000 && queue.active > 0; i += 1) await tick();
  assert.equal(queue.counts.stored, 10000);
  assert.equal(queue.progress.fraction(), 1);
  assert.ok(changes > 0);
  queue.clearSettled();
  assert.equal(queue.items.length, 0);
});

test("small missing files go several to a request; a per-file error fails only that file", async () => {
  const { stages, calls } = fakeStages(new Set(["f3"]));
  const batches = [];
  stages.sendBatch = async (items, onBytes) => {
    batches.push(items.map((item) => item.name));
    onBytes(items.reduce((sum, item) => sum + item.size, 0) + 500); // framing overshoots
    return items.map((item) =>
      item.size === 0 ? { status: "error", error: { code: "empty_file", message: "the file is empty" } } : { status: "stored" },
    );
  };
  const queue = new UploadQueue(stages, { batchFileMax: 100, batchFiles: 2, batchBytes: 1000 });
  queue.add(files(10, 0, 20, 30, 500, 40));
  await settled(queue);
  assert.deepEqual(
    queue.items.map((i) => i.state),
    ["stored", "failed", "stored", "duplicate", "stored", "stored"],
  );
  assert.deepEqual(queue.items[1].error, { code: "empty_file", message: "the file is empty" });
  assert.deepEqual(batches.flat().sort(), ["f0", "f1", "f2", "f5"]);
  assert.ok(batches.every((batch) => batch.length <= 2));
  assert.deepEqual(calls.send, ["f4"]); // over batchFileMax: its own request
  assert.deepEqual(calls.record, ["f3"]);
  assert.equal(queue.sentBytes, 10 + 20 + 500 + 40);
  assert.equal(queue.progress.fraction(), 1);
});

test("a request-level error fails the whole batch, and retry sends it again", async () => {
  const { stages } = fakeStages();
  let refused = 0;
  stages.sendBatch = async (items) => {
    if (!refused) {
      refused = items.length;
      throw Object.assign(new Error("the ingest queue is full"), { code: "overloaded" });
    }
    return items.map(() => ({ status: "stored" }));
  };
  const queue = new UploadQueue(stages);
  queue.add(files(1, 2, 3));
  await settled(queue);
  assert.ok(refused >= 1);
  assert.equal(queue.counts.failed, refused);
  assert.ok(queue.items.filter((i) => i.state === "failed").every((i) => i.error.code === "overloaded"));
  queue.retryFailed();
  await settled(queue);
  assert.equal(queue.counts.stored, 3);
});
