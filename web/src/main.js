// Wires the page: access (token, read-only), the upload queue and its view, the catalog browser, /stats.

import { Api } from "./api.js";
import { probeAccess, savedToken, saveToken } from "./auth.js";
import { Browser } from "./browse.js";
import { filesFromDrop, filesFromInput } from "./drop.js";
import { HashPool } from "./hasher.js";
import { formatBytes } from "./progress.js";
import { UploadQueue } from "./queue.js";
import { forgetInterrupted, interruptedUploads, makeStages, tusOffered } from "./stages.js";
import { UploadView } from "./upload-view.js";

const $ = (id) => document.getElementById(id);
const HASH_WORKERS = Math.max(1, Math.min(4, (navigator.hardwareConcurrency || 2) - 1));
const SENDING = 4; // of the browser's 6 connections per host: 2 stay free for browsing and the API
const REFRESH_MS = 1500;

const api = new Api();
const access = { canWrite: false, onChange: () => refreshStats() };
let queue = null;
let browser = null;
let refreshTimer = 0;

async function refreshStats() {
  try {
    showStats(await api.json("GET", "/stats"));
  } catch {
    // the next refresh will tell
  }
}

function showStats(stats) {
  const top = new Map();
  for (const [category, figures] of Object.entries(stats.categories)) {
    const key = category.split("/")[0];
    const sum = top.get(key) ?? { blobs: 0, bytes: 0 };
    sum.blobs += figures.blobs;
    sum.bytes += figures.bytes;
    top.set(key, sum);
  }
  const byCategory = [...top].map(([key, s]) => `${key} ${s.blobs} (${formatBytes(s.bytes)})`).join(", ");
  $("stats").textContent =
    `${plural(stats.blobs, "file")}, ${formatBytes(stats.bytes_stored)} stored · ${plural(stats.uploads, "upload")}, ` +
    `${formatBytes(stats.bytes_saved)} saved by deduplication${byCategory ? ` · ${byCategory}` : ""}`;
  $("category-list").replaceChildren(
    ...[...top.keys(), ...Object.keys(stats.categories)].map((c) => Object.assign(document.createElement("option"), { value: c })),
  );
}

function plural(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

/** After uploads settle: the catalog and figures changed, show them (at most every REFRESH_MS). */
function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = 0;
    refreshStats();
    showInterrupted();
    if (browser && !browser.cursor) browser.search();
  }, REFRESH_MS);
}

async function start() {
  api.token = savedToken();
  let result;
  try {
    result = await probeAccess(api);
  } catch (err) {
    $("stats").textContent = `The server cannot be reached: ${err.message}`;
    return;
  }
  if (result.status !== "ok") {
    askToken(result.status === "bad_token" ? "That token was refused: check it and try again." : "");
    return;
  }
  $("token-panel").hidden = true;
  $("main").hidden = false;
  access.canWrite = result.canWrite;
  const mode = $("mode");
  mode.textContent = !api.token ? "open server" : result.canWrite ? "read-write token" : "read-only: uploads and deletes are off";
  mode.classList.toggle("ro", !result.canWrite);
  $("change-token").hidden = !api.token;
  $("upload").hidden = !result.canWrite;
  showStats(result.stats);
  if (!browser) browser = makeBrowser();
  browser.search();
  if (result.canWrite && !queue) await startUploads();
  document.body.dataset.ready = result.canWrite ? "rw" : "ro"; // everything is wired (tests wait for this)
}

function askToken(error) {
  $("main").hidden = true;
  $("token-panel").hidden = false;
  $("token-error").textContent = error;
  $("token-input").focus();
}

function makeBrowser() {
  return new Browser(
    api,
    {
      form: $("filters"),
      list: $("files"),
      more: $("more"),
      error: $("browse-error"),
      viewer: $("viewer"),
      viewerTitle: $("viewer-title"),
      viewerBody: $("viewer-body"),
      viewerMeta: $("viewer-meta"),
      download: $("viewer-download"),
      remove: $("viewer-delete"),
      viewerError: $("viewer-error"),
      close: $("viewer-close"),
    },
    access,
  );
}

async function startUploads() {
  let useTus = await tusOffered();
  const pool = new HashPool(HASH_WORKERS);
  queue = new UploadQueue(makeStages(api, pool, () => useTus), { hashing: HASH_WORKERS, sending: SENDING });
  const view = new UploadView(queue, {
    queue: $("queue"),
    spacer: $("queue-spacer"),
    overall: $("overall"),
    bar: $("overall-bar"),
    text: $("overall-text"),
    retry: $("retry-failed"),
    onlyFailed: $("only-problems"),
  });
  queue.onChange = (item) => {
    view.schedule(item === null || item.state !== "uploading");
    if (queue.active === 0) refreshSoon();
  };
  const add = async (files) => {
    if (files.length === 0) return;
    if (!useTus) useTus = await tusOffered(); // the server may have gained tus since the page loaded
    queue.add(files);
  };
  $("retry-failed").addEventListener("click", () => queue.retryFailed());
  $("clear-done").addEventListener("click", () => queue.clearSettled());
  for (const id of ["pick-files", "pick-folder"]) {
    $(id).addEventListener("change", (event) => {
      add(filesFromInput(event.target));
      event.target.value = "";
    });
  }
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    add(await filesFromDrop(event.dataTransfer));
  });
  await showInterrupted();
}

async function showInterrupted() {
  const entries = await interruptedUploads();
  const box = $("resume");
  box.hidden = entries.length === 0;
  if (entries.length === 0) return;
  const names = entries.map((e) => `${e.metadata?.filename ?? "?"} (${formatBytes(e.size ?? 0)})`).join(", ");
  const text = document.createElement("p");
  text.textContent =
    `${entries.length} upload(s) were interrupted: ${names}. ` +
    "Drop or choose the same file(s) again and they resume where they stopped.";
  const forget = Object.assign(document.createElement("button"), { type: "button", textContent: "Forget them" });
  forget.addEventListener("click", async () => {
    await forgetInterrupted(entries);
    box.hidden = true;
  });
  box.replaceChildren(text, forget);
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  saveToken($("token-input").value.trim());
  $("token-input").value = "";
  start();
});
$("change-token").addEventListener("click", () => {
  saveToken(null);
  api.token = null;
  askToken("");
});

start();
