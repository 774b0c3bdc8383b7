// Overall progress across parallel uploads: right (weighted by bytes) and smooth (never moves backwards).
//
// Each file adds its size as work. The shown fraction is rebased whenever work is added or taken back
// (new files dropped mid-way, a retry): from that moment the remaining part of the bar is spread over
// the remaining work, so the bar keeps its position and still reaches the end exactly when the work does.

/** Work units per file: at least 1, so that empty files count too. */
export function weightOf(size) {
  return Math.max(1, size);
}

export class ProgressAggregate {
  constructor() {
    this.parts = new Map(); // id -> {weight, done}
    this.total = 0;
    this.done = 0;
    this.baseShown = 0;
    this.baseRemaining = 0;
  }

  /** Adds a file's work (or takes a settled one back for a retry); starts a new batch when all was done. */
  add(id, size) {
    if (this.total > 0 && this.total === this.done) this._newBatch();
    const shown = this.fraction();
    const old = this.parts.get(id);
    if (old) {
      this.done -= old.done;
      old.done = 0;
    } else {
      const weight = weightOf(size);
      this.parts.set(id, { weight, done: 0 });
      this.total += weight;
    }
    this._rebase(shown);
  }

  /** Records that `fraction` (0..1) of a file's work is done; a file never goes backwards. */
  set(id, fraction) {
    const part = this.parts.get(id);
    if (!part) return;
    const done = Math.min(part.weight, Math.max(part.done, part.weight * Math.min(1, Math.max(0, fraction))));
    this.done += done - part.done;
    part.done = done;
  }

  /** The file is finished, whatever the outcome (stored, duplicate or failed): all its work is done. */
  settle(id) {
    this.set(id, 1);
  }

  /** Forgets a settled file (the list was cleared); the bar does not move. */
  forget(id) {
    const part = this.parts.get(id);
    if (!part || part.done < part.weight) return;
    const shown = this.fraction();
    this.parts.delete(id);
    this.total -= part.weight;
    this.done -= part.weight;
    this._rebase(shown);
  }

  /** The fraction to show, 0..1: the shown base plus the share of the remaining work done since. */
  fraction() {
    const remaining = this.total - this.done;
    if (this.total === 0) return 0;
    if (remaining <= 0) return 1;
    if (this.baseRemaining <= 0) return this.baseShown;
    const sinceBase = Math.max(0, 1 - remaining / this.baseRemaining);
    return this.baseShown + (1 - this.baseShown) * sinceBase;
  }

  remaining() {
    return this.total - this.done;
  }

  _rebase(shown) {
    this.baseShown = shown;
    this.baseRemaining = this.total - this.done;
  }

  _newBatch() {
    this.parts.clear();
    this.total = 0;
    this.done = 0;
    this.baseShown = 0;
    this.baseRemaining = 0;
  }
}

/** A rate over a sliding time window, from samples of a growing (or shrinking) quantity. */
export class RateMeter {
  constructor(windowMs = 5000) {
    this.windowMs = windowMs;
    this.samples = []; // [time ms, value]
  }

  record(now, value) {
    this.samples.push([now, value]);
    while (this.samples.length > 2 && now - this.samples[1][0] >= this.windowMs) this.samples.shift();
  }

  /** Change per second over the window (0 until two samples at least 200 ms apart). */
  perSecond() {
    if (this.samples.length < 2) return 0;
    const [t0, v0] = this.samples[0];
    const [t1, v1] = this.samples[this.samples.length - 1];
    if (t1 - t0 < 200) return 0;
    return ((v1 - v0) * 1000) / (t1 - t0);
  }

  reset() {
    this.samples = [];
  }
}

/** Seconds left at `rate` units/s for `remaining` units; null when unknown. */
export function secondsLeft(remaining, rate) {
  if (remaining <= 0) return 0;
  if (!(rate > 0)) return null;
  return remaining / rate;
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

export function formatDuration(seconds) {
  if (seconds === null || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}
