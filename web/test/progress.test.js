import { test } from "node:test";
import assert from "node:assert/strict";
import { ProgressAggregate, RateMeter, secondsLeft, formatBytes, formatDuration } from "../src/progress.js";

test("weighted by bytes: a big file counts more than a small one", () => {
  const p = new ProgressAggregate();
  p.add(1, 900);
  p.add(2, 100);
  p.set(1, 0.5);
  assert.ok(Math.abs(p.fraction() - 0.45) < 1e-12);
  p.settle(2);
  assert.ok(Math.abs(p.fraction() - 0.55) < 1e-12);
  p.settle(1);
  assert.equal(p.fraction(), 1);
});

test("files added mid-way do not move the bar backwards, and it still ends at 1", () => {
  const p = new ProgressAggregate();
  p.add(1, 100);
  p.set(1, 0.6);
  const before = p.fraction();
  p.add(2, 1000); // a late drop: naive done/total would fall from 0.6 to 0.055
  assert.equal(p.fraction(), before);
  p.set(2, 0.5);
  assert.ok(p.fraction() > before);
  p.settle(1);
  p.settle(2);
  assert.equal(p.fraction(), 1);
});

test("a file never goes backwards, a retry rebases instead of dropping", () => {
  const p = new ProgressAggregate();
  p.add(1, 100);
  p.add(2, 100);
  p.set(1, 0.8);
  p.set(1, 0.3); // a chunk re-sent after an error
  assert.ok(Math.abs(p.fraction() - 0.4) < 1e-12);
  p.settle(2); // failed
  const shown = p.fraction();
  p.add(2, 100); // retry while file 1 is still going
  assert.equal(p.fraction(), shown);
  p.settle(1);
  p.settle(2);
  assert.equal(p.fraction(), 1);
});

test("a random sequence of events never shows a smaller fraction", () => {
  let seed = 42;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const p = new ProgressAggregate();
  const done = new Map();
  let last = 0;
  let nextId = 1;
  for (let step = 0; step < 5000; step += 1) {
    const r = rand();
    const ids = [...done.keys()];
    if (r < 0.1 || ids.length === 0) {
      const id = nextId++;
      p.add(id, Math.floor(rand() * 1e6));
      done.set(id, 0);
    } else {
      const id = ids[Math.floor(rand() * ids.length)];
      const f = Math.min(1, done.get(id) + rand() * 0.3);
      done.set(id, f);
      if (f >= 1) {
        p.settle(id);
        done.delete(id);
      } else p.set(id, f);
    }
    const shown = p.fraction();
    if (p.remaining() > 0) {
      assert.ok(shown >= last - 1e-12, `step ${step}: ${shown} < ${last}`);
      last = shown;
    } else last = 0; // everything settled: the next drop is a new batch
    assert.ok(shown >= 0 && shown <= 1);
  }
});

test("clearing settled files keeps the bar where it is", () => {
  const p = new ProgressAggregate();
  p.add(1, 100);
  p.add(2, 300);
  p.settle(1);
  const shown = p.fraction();
  p.forget(1);
  assert.equal(p.fraction(), shown);
  p.settle(2);
  assert.equal(p.fraction(), 1);
});

test("a drop after everything finished starts a new batch at 0", () => {
  const p = new ProgressAggregate();
  p.add(1, 10);
  p.settle(1);
  assert.equal(p.fraction(), 1);
  p.add(2, 10);
  assert.equal(p.fraction(), 0);
});

test("rate over a window, time left, formatting", () => {
  const m = new RateMeter(5000);
  assert.equal(m.perSecond(), 0);
  m.record(0, 0);
  m.record(1000, 500);
  m.record(2000, 1000);
  assert.equal(m.perSecond(), 500);
  m.record(8000, 4000); // the oldest samples leave the window
  assert.equal(m.perSecond(), 3000 / 6);
  assert.equal(secondsLeft(1000, 500), 2);
  assert.equal(secondsLeft(1000, 0), null);
  assert.equal(secondsLeft(0, 0), 0);
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(300 * 1024 * 1024), "300 MiB");
  assert.equal(formatDuration(75), "1:15");
  assert.equal(formatDuration(3725), "1:02:05");
  assert.equal(formatDuration(null), "–");
});
