// The upload queue on screen: a virtualised list (only the rows in view exist, so 10,000 files stay
// cheap), the overall bar with speed and time left, redrawn at most once per animation frame.

import { formatBytes, formatDuration, RateMeter, secondsLeft } from "./progress.js";
import { FAILED, HASHING, UPLOADING } from "./queue.js";

const ROW_PX = 44;
const OVERSCAN = 6;

export class UploadView {
  constructor(queue, elements) {
    this.queue = queue;
    this.el = elements; // {queue, spacer, overall, bar, text, retry, onlyFailed}
    this.rows = new Map(); // index in the shown list -> row element
    this.shown = [];
    this.listDirty = true;
    this.frame = 0;
    this.speed = new RateMeter(5000);
    this.workRate = new RateMeter(8000);
    this.lastFraction = 0;
    this.el.queue.addEventListener("scroll", () => this.schedule(false));
    this.el.onlyFailed.addEventListener("change", () => this.schedule(true));
    setInterval(() => this.tick(), 500);
  }

  /** Redraw soon; `listChanged` when items were added, removed or changed state. */
  schedule(listChanged = true) {
    if (listChanged) this.listDirty = true;
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  tick() {
    const now = performance.now();
    if (this.queue.active > 0) {
      this.speed.record(now, this.queue.sentBytes);
      this.workRate.record(now, -this.queue.progress.remaining());
    } else {
      this.speed.reset();
      this.workRate.reset();
    }
    this.drawOverall();
  }

  draw() {
    if (this.listDirty) {
      const onlyFailed = this.el.onlyFailed.checked;
      this.shown = onlyFailed ? this.queue.items.filter((i) => i.state === FAILED) : this.queue.items;
      this.el.spacer.style.height = `${this.shown.length * ROW_PX}px`;
      this.el.queue.classList.toggle("empty", this.shown.length === 0);
      this.listDirty = false;
      for (const row of this.rows.values()) row.remove();
      this.rows.clear();
    }
    this.drawRows();
    this.drawOverall();
  }

  drawRows() {
    const box = this.el.queue;
    const first = Math.max(0, Math.floor(box.scrollTop / ROW_PX) - OVERSCAN);
    const last = Math.min(this.shown.length, Math.ceil((box.scrollTop + box.clientHeight) / ROW_PX) + OVERSCAN);
    for (const [index, row] of this.rows) {
      if (index < first || index >= last) {
        row.remove();
        this.rows.delete(index);
      }
    }
    for (let index = first; index < last; index += 1) {
      let row = this.rows.get(index);
      if (!row) {
        row = makeRow();
        row.style.top = `${index * ROW_PX}px`;
        box.appendChild(row);
        this.rows.set(index, row);
      }
      fillRow(row, this.shown[index]);
    }
  }

  drawOverall() {
    const q = this.queue;
    this.el.overall.hidden = q.items.length === 0;
    this.el.retry.disabled = q.counts.failed === 0;
    if (q.items.length === 0) return;
    let fraction = q.progress.fraction();
    if (q.active > 0) fraction = Math.max(fraction, this.lastFraction); // never backwards while busy
    this.lastFraction = q.active > 0 ? fraction : 0;
    this.el.bar.value = Math.round(fraction * 1000);
    const c = q.counts;
    const parts = [`${q.items.length} file${q.items.length === 1 ? "" : "s"}`];
    for (const key of ["stored", "duplicate", "failed"]) if (c[key]) parts.push(`${c[key]} ${key}`);
    if (q.active) parts.push(`${q.active} to go`);
    let text = `${parts.join(", ")} · ${Math.floor(fraction * 100)}%`;
    if (q.active > 0) {
      const left = secondsLeft(q.progress.remaining(), this.workRate.perSecond());
      text += ` · ${formatBytes(Math.round(this.speed.perSecond()))}/s · ${formatDuration(left)} left`;
    }
    this.el.text.textContent = text;
    this.el.text.dataset.failed = String(c.failed);
    this.el.text.dataset.active = String(q.active);
  }
}

function makeRow() {
  const row = document.createElement("div");
  row.className = "row";
  row.setAttribute("role", "listitem");
  row.innerHTML =
    '<div class="cell"><div class="name"></div><div class="detail"></div></div>' +
    '<span class="state"></span><progress max="1000" value="0"></progress>';
  return row;
}

function fillRow(row, item) {
  if (row.dataset.id !== String(item.id)) {
    row.dataset.id = String(item.id);
    row.dataset.name = item.name;
    row.querySelector(".name").textContent = item.name;
    row.title = item.name;
  }
  row.dataset.state = item.state;
  const state = row.querySelector(".state");
  state.textContent = item.state;
  state.className = `state state-${item.state}`;
  const detail = row.querySelector(".detail");
  if (item.state === FAILED) {
    detail.textContent = `${item.error.code}: ${item.error.message}`;
    detail.classList.add("err");
  } else {
    detail.textContent = formatBytes(item.size);
    detail.classList.remove("err");
  }
  let value = 0;
  if (item.state === HASHING) value = item.hashed;
  else if (item.state === UPLOADING) value = item.sent / Math.max(1, item.size);
  else if (item.state !== "queued") value = 1;
  row.querySelector("progress").value = Math.round(value * 1000);
}
