// Browsing the catalog: filters, keyset pages of GET /files, previews, upload records, download, delete.

import { formatBytes } from "./progress.js";

const PAGE = 60;
const MIB = 1024 * 1024;
const TEXT_PREVIEW_BYTES = 64 * 1024;
const TOKEN_PREVIEW_MAX = 200 * MIB; // with a token, media is fetched whole (a link cannot carry the header)
const TOKEN_THUMB_MAX = 2 * MIB;
const TEXT_TYPES = /^(text\/|application\/(json|xml|javascript|x-sh|x-yaml|toml)|.*\+(json|xml)$)/;

function queryFrom(form) {
  const data = new FormData(form);
  const params = new URLSearchParams();
  for (const key of ["name", "category", "mime"]) {
    const value = String(data.get(key) ?? "").trim();
    if (value) params.set(key, value);
  }
  for (const [field, param] of [["min_mb", "min_size"], ["max_mb", "max_size"]]) {
    const value = String(data.get(field) ?? "").trim();
    if (value !== "" && Number(value) >= 0) params.set(param, String(Math.floor(Number(value) * MIB)));
  }
  const since = String(data.get("since") ?? "");
  if (since) params.set("since", `${since}T00:00:00Z`);
  const until = String(data.get("until") ?? "");
  if (until) {
    const next = new Date(`${until}T00:00:00Z`);
    next.setUTCDate(next.getUTCDate() + 1); // the chosen day is included; the API's `until` is exclusive
    params.set("until", next.toISOString());
  }
  return params;
}

export class Browser {
  constructor(api, el, access) {
    this.api = api;
    this.el = el; // {form, list, more, error, viewer, viewerTitle, viewerBody, viewerMeta, download, remove, viewerError, close}
    this.access = access; // {canWrite, onChange}
    this.cursor = null;
    this.params = new URLSearchParams();
    this.current = null;
    this.objectUrls = [];
    el.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.search();
    });
    el.form.addEventListener("reset", () => setTimeout(() => this.search(), 0));
    for (const radio of el.form.querySelectorAll('input[name="view"]')) {
      radio.addEventListener("change", () => {
        el.list.className = `files ${radio.value}`;
      });
    }
    el.more.addEventListener("click", () => this.loadPage());
    el.close.addEventListener("click", () => el.viewer.close());
    el.viewer.addEventListener("close", () => this.releasePreview());
    el.remove.addEventListener("click", () => this.deleteCurrent());
    el.download.addEventListener("click", (event) => this.download(event));
  }

  async search() {
    this.params = queryFrom(this.el.form);
    this.cursor = null;
    this.el.list.replaceChildren();
    await this.loadPage();
  }

  async loadPage() {
    const params = new URLSearchParams(this.params);
    params.set("limit", String(PAGE));
    if (this.cursor) params.set("cursor", this.cursor);
    this.el.error.textContent = "";
    try {
      const page = await this.api.json("GET", `/files?${params}`);
      for (const file of page.files) this.el.list.appendChild(this.entry(file));
      if (page.files.length === 0 && !this.cursor) this.el.list.appendChild(emptyNote());
      this.cursor = page.next;
      this.el.more.hidden = !page.next;
    } catch (err) {
      this.el.error.textContent = `${err.code}: ${err.message}`;
    }
  }

  entry(file) {
    const li = document.createElement("li");
    li.dataset.hash = file.hash;
    const thumb = document.createElement("span");
    thumb.className = "thumb";
    thumb.textContent = typeLabel(file);
    if (file.mime.startsWith("image/")) this.thumbnail(thumb, file);
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open";
    open.textContent = file.name;
    open.title = `${file.name} (${file.category})`;
    open.addEventListener("click", () => this.open(file));
    const size = document.createElement("span");
    size.className = "size muted";
    size.textContent = formatBytes(file.size);
    const date = document.createElement("span");
    date.className = "date muted";
    date.textContent = new Date(file.first_upload_at).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    date.title = file.category;
    li.append(thumb, open, size, date);
    return li;
  }

  async thumbnail(thumb, file) {
    const img = document.createElement("img");
    img.alt = "";
    img.loading = "lazy";
    img.className = "thumb";
    if (!this.api.token) img.src = file.url;
    else if (file.size <= TOKEN_THUMB_MAX) {
      try {
        img.src = await this.api.objectUrl(file.url);
      } catch {
        return;
      }
    } else return;
    thumb.replaceChildren(img);
  }

  /** A link's URL for the blob: the plain URL, or (with a token) a fetched object URL. */
  async mediaUrl(file) {
    if (!this.api.token) return file.url;
    if (file.size > TOKEN_PREVIEW_MAX) return null;
    const url = await this.api.objectUrl(file.url);
    this.objectUrls.push(url);
    return url;
  }

  async open(file) {
    const el = this.el;
    this.current = file;
    this.releasePreview();
    el.viewerTitle.textContent = file.name;
    el.viewerBody.replaceChildren();
    el.viewerMeta.replaceChildren();
    el.viewerError.textContent = "";
    el.remove.hidden = !this.access.canWrite;
    el.download.href = `${file.url}?name=${encodeURIComponent(file.name)}`;
    if (!el.viewer.open) el.viewer.showModal();
    try {
      await Promise.all([this.preview(file), this.meta(file)]);
    } catch (err) {
      el.viewerError.textContent = `${err.code ?? "error"}: ${err.message}`;
    }
  }

  async preview(file) {
    const body = this.el.viewerBody;
    const mime = file.mime;
    let node;
    if (TEXT_TYPES.test(mime)) {
      const response = await this.api.request("GET", file.url, { headers: { Range: `bytes=0-${TEXT_PREVIEW_BYTES - 1}` } });
      node = document.createElement("pre");
      node.textContent = await response.text();
      if (file.size > TEXT_PREVIEW_BYTES) node.textContent += `\n… (first ${formatBytes(TEXT_PREVIEW_BYTES)} shown)`;
    } else if (/^(image|video|audio)\//.test(mime) || mime === "application/pdf") {
      const url = await this.mediaUrl(file);
      if (url === null) node = note("Too large to preview with a token: download it instead.");
      else if (mime.startsWith("image/")) {
        node = document.createElement("img");
        node.alt = file.name;
      } else if (mime === "application/pdf") {
        node = document.createElement("iframe");
        node.title = file.name;
      } else {
        node = document.createElement(mime.startsWith("video/") ? "video" : "audio");
        node.controls = true;
        node.preload = "metadata";
      }
      if (url !== null) node.src = url; // video and audio fetch with Range from the plain URL
    } else node = note(`No preview for ${mime}.`);
    body.replaceChildren(node);
  }

  async meta(file) {
    const meta = await this.api.json("GET", `${file.url}/meta`);
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    for (const title of ["Uploaded as", "Category", "Hint", "Comment", "When"]) {
      const th = document.createElement("th");
      th.textContent = title;
      head.appendChild(th);
    }
    const rows = table.createTBody();
    for (const upload of meta.uploads) {
      const row = rows.insertRow();
      for (const value of [upload.name, upload.category, upload.hint, upload.comment, upload.uploaded_at]) {
        row.insertCell().textContent = value ?? "";
      }
    }
    const summary = document.createElement("p");
    summary.className = "muted";
    summary.textContent = `${formatBytes(meta.size)} · ${meta.mime} · ${meta.category} · uploaded ${meta.upload_count}× · ${meta.hash}`;
    this.el.viewerMeta.replaceChildren(summary, table);
  }

  async download(event) {
    if (!this.api.token || !this.current) return; // the plain link answers with the original name
    event.preventDefault();
    try {
      const url = await this.api.objectUrl(this.current.url);
      const a = document.createElement("a");
      a.href = url;
      a.download = this.current.name;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (err) {
      this.el.viewerError.textContent = `${err.code}: ${err.message}`;
    }
  }

  async deleteCurrent() {
    const file = this.current;
    if (!file || !confirm(`Delete ${file.name} (${formatBytes(file.size)}) and all its upload records?`)) return;
    try {
      await this.api.request("DELETE", file.url);
      this.el.list.querySelector(`li[data-hash="${file.hash}"]`)?.remove();
      this.el.viewer.close();
      this.access.onChange();
    } catch (err) {
      this.el.viewerError.textContent = `${err.code}: ${err.message}`;
    }
  }

  releasePreview() {
    for (const url of this.objectUrls) URL.revokeObjectURL(url);
    this.objectUrls = [];
    const media = this.el.viewerBody.querySelector("video, audio");
    if (media) media.pause();
  }
}

/** A short label for a file without a thumbnail: its extension, else its MIME type's first part. */
function typeLabel(file) {
  const dot = file.name.lastIndexOf(".");
  const ext = dot > 0 ? file.name.slice(dot + 1) : "";
  return (ext && ext.length <= 5 ? ext : file.mime.split("/")[0]).toUpperCase();
}

function note(text) {
  const p = document.createElement("p");
  p.className = "hint";
  p.textContent = text;
  return p;
}

function emptyNote() {
  const li = document.createElement("li");
  li.className = "muted";
  li.textContent = "No files match.";
  return li;
}
