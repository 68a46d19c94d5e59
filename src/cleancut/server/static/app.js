// cleancut web page: plain JavaScript, no build step. Talks to the same server's /api.
// app.js: the options, the photo cards and their queue, the before/after slider, downloads.
// editor.js: the large view (zoom, pan) and the brush; clips.js: clips (/api/video);
// camera.js: the Camera panel (/api/stream); examples.js: "Save as example" (/api/examples).
// They share what app.js puts on window.cleancut.
"use strict";

const CONCURRENCY = 2;       // requests in flight at once (the server queues the rest anyway)
const MAX_RETRIES = 6;       // retries of a 503 (server busy), honouring Retry-After
const RERUN_DELAY_MS = 350;  // option changes are applied after this pause
const ALPHA_OPTIONS = ["edges", "alpha_matting", "feather", "remove_islands", "fill_holes"];  // what shapes the mask
// what each edge stage costs and does, under the Edge stage menu (docs: Benchmarks, edges)
const EDGE_NOTES = {
  network: "The network's mask, resized to the photo.",
  guided: "Places the edge on the photo's own edges and takes off the old background the network kept: " +
          "about 1.4-1.5x the time of the prediction.",
  learned: "A small network redraws the edge from the photo's pixels, along the uncertain band.",
};
const CLEAN_FRACTION = "0.005";  // "Remove specks and fill small holes": both at 0.5 % of the area

const $ = (sel, root = document) => root.querySelector(sel);
const els = {
  files: $("#files"), drop: $("#drop"), form: $("#options"), list: $("#list"), empty: $("#empty"),
  template: $("#card-template"), downloadAll: $("#download-all"), clear: $("#clear"),
  model: $("#model-name"), limits: $("#limits"), formatNote: $("#format-note"),
};

let nextId = 1;
const items = [];            // {id, kind, file, el, gen, status, blob, url, filename, stale, edit}
const queue = [];
let active = 0;
let limits = null;

// ------------------------------------------------------------------ server metadata

async function loadMetadata() {
  try {
    const [models, options] = await Promise.all([
      fetch("/api/models").then((r) => r.json()),
      fetch("/api/options").then((r) => r.json()),
    ]);
    els.model.textContent = models.default;
    showEdgeStages(models.models.find((m) => m.name === models.default) || models.models[0]);
    limits = options.limits;
    els.limits.textContent = `photos up to ${formatBytes(limits.max_upload_bytes)} and ` +
      `${(limits.max_pixels / 1e6).toFixed(0)} megapixels`;
    // tooltips from the option metadata (the server's single definition of every option)
    for (const opt of options.options) {
      const input = document.getElementById(opt.name);
      const label = input && (input.closest("label") || document.querySelector(`label[for=${opt.name}]`));
      if (label) label.title = opt.help;
      if (opt.name === "format" && opt.choices) syncSelect($("#format"), opt.choices);
    }
  } catch (err) {
    els.model.textContent = "unavailable";
    console.error("cannot read the server's metadata", err);
  }
}

/** The Edge stage menu for the server's model: "The model's own" names its stage, and the
 * learned refiner is offered only when the model has one. */
function showEdgeStages(spec) {
  const select = $("#edges");
  const own = spec && spec.edges ? spec.edges : "network";
  select.querySelector("option[value=auto]").textContent = `The model's own (${own})`;
  const learned = select.querySelector("option[value=learned]");
  learned.disabled = learned.hidden = !(spec && (spec.edge_stages || []).includes("learned"));
  if (learned.disabled && select.value === "learned") select.value = "auto";
  select.dataset.own = own;
  showEdgeNote();
}

function showEdgeNote() {
  const select = $("#edges");
  const stage = select.value === "auto" ? select.dataset.own || "network" : select.value;
  const note = $("#edges-note");
  note.textContent = EDGE_NOTES[stage] || "";
  note.hidden = !note.textContent || select.value === "auto";
}

function syncSelect(select, choices) {
  const names = { png: "PNG", webp: "WebP", jpeg: "JPEG" };
  const current = select.value;
  select.replaceChildren(...choices.map((c) => new Option(names[c] || c, c)));
  if (choices.includes(current)) select.value = current;
}

function formatBytes(n) {
  return n >= 1048576 ? `${(n / 1048576).toFixed(n % 1048576 ? 1 : 0)} MB` : `${Math.round(n / 1024)} kB`;
}

// ------------------------------------------------------------------ options

function currentMode() {
  return els.form.querySelector("input[name=mode]:checked").value;
}

/** The options the form asks for, as the API's names and text values (no uploads). */
function optionValues() {
  const mode = currentMode();
  const values = { mode };
  if (mode === "color") values.bg_color = $("#bg_color").value;
  if (mode === "blur") values.blur_radius = $("#blur_radius").value;
  values.edges = $("#edges").value;
  values.alpha_matting = $("#alpha_matting").checked ? "true" : "false";
  values.feather = $("#feather").value;
  values.remove_islands = $("#clean").checked ? CLEAN_FRACTION : "0";
  values.fill_holes = $("#clean").checked ? CLEAN_FRACTION : "0";
  values.crop = $("#crop").checked ? "true" : "false";
  if ($("#crop").checked) values.crop_margin = $("#crop_margin").value || "0";
  values.format = $("#format").value;
  return values;
}

/** The options that shape the mask (a brush edit stays valid while they do not change). */
function alphaKey(values = optionValues()) {
  return JSON.stringify(ALPHA_OPTIONS.map((name) => values[name]));
}

function buildForm(file, values = optionValues()) {
  const data = new FormData();
  data.append("file", file, file.name || "pasted.png");
  for (const [name, value] of Object.entries(values)) data.append(name, value);
  if (values.mode === "image") {
    const bg = $("#bg_image").files[0];
    if (bg) data.append("bg_image", bg, bg.name);
  }
  return data;
}

function syncControls() {
  const mode = currentMode();
  for (const row of els.form.querySelectorAll("[data-when]")) row.hidden = row.dataset.when !== mode;
  for (const row of els.form.querySelectorAll("[data-when-crop]")) row.hidden = !$("#crop").checked;
  for (const out of document.querySelectorAll("output[for]")) out.value = document.getElementById(out.htmlFor).value;
  els.formatNote.hidden = !($("#format").value === "jpeg" && (mode === "cutout"));
  showEdgeNote();
  const colour = $("#bg_color").value.toLowerCase();
  for (const sw of els.form.querySelectorAll(".swatch")) sw.classList.toggle("active", sw.dataset.color === colour);
}

let rerunTimer = null;
function optionsChanged() {
  syncControls();
  for (const item of items) markStale(item, true);  // at once: nothing stale can be downloaded meanwhile
  refreshToolbar();
  document.dispatchEvent(new CustomEvent("cleancut:options"));  // the camera follows at once
  clearTimeout(rerunTimer);
  rerunTimer = setTimeout(() => items.filter((i) => i.kind === "photo").forEach(enqueue), RERUN_DELAY_MS);
}

// ------------------------------------------------------------------ cards

/** A card for a photo or a clip, in the list. */
function makeItem(file, kind) {
  const el = els.template.content.firstElementChild.cloneNode(true);
  const item = { id: nextId++, kind, file, el, gen: 0, status: "waiting", blob: null, url: null, filename: null,
                 stale: false, edit: null };
  el.dataset.id = item.id;
  el.dataset.kind = kind;
  $(".name", el).textContent = file.name || "pasted image";
  $(".name", el).title = file.name || "";
  $(".discard", el).addEventListener("click", () => discard(item));
  const slider = $(".compare-slider", el);
  const split = () => $(".compare", el).style.setProperty("--split", `${slider.value}%`);
  slider.addEventListener("input", split);
  split();
  els.list.append(el);
  items.push(item);
  return item;
}

function addPhoto(file) {
  const item = makeItem(file, "photo");
  const before = $(".before", item.el);
  before.addEventListener("load", () => {  // the frame takes the photo's shape: the checkerboard is the photo's area
    $(".compare", item.el).style.aspectRatio = `${before.naturalWidth} / ${before.naturalHeight}`;
  }, { once: true });
  before.src = URL.createObjectURL(file);
  $(".retry", item.el).addEventListener("click", () => enqueue(item));
  $(".compare", item.el).addEventListener("click", () => item.status === "done" && window.cleancut.openViewer(item));
  $(".open", item.el).addEventListener("click", () => window.cleancut.openViewer(item));
  enqueue(item);
}

const VIDEO_SUFFIX = /\.(mp4|m4v|mov|webm|mkv|avi|mpg|mpeg|ogv|3gp|flv|wmv|ts)$/i;

/** Whether a file is a video: by its type, its name, or its first bytes (MP4/MOV, WebM/MKV, AVI). */
async function isVideo(file) {
  if ((file.type || "").startsWith("video/") || VIDEO_SUFFIX.test(file.name || "")) return true;
  if ((file.type || "").startsWith("image/")) return false;
  const head = new Uint8Array(await file.slice(0, 12).arrayBuffer());
  const text = (a, b) => String.fromCharCode(...head.subarray(a, b));
  return text(4, 8) === "ftyp" || (head[0] === 0x1a && head[1] === 0x45 && head[2] === 0xdf && head[3] === 0xa3) ||
    (text(0, 4) === "RIFF" && text(8, 12) === "AVI ");
}

async function addFiles(fileList) {
  const files = Array.from(fileList).filter((f) => f.size > 0);
  for (const file of files) {
    if (await isVideo(file)) window.cleancut.addClip(file);
    else addPhoto(file);
  }
  refreshToolbar();
}

function enqueue(item) {
  item.gen += 1;
  markStale(item, item.status === "done" || item.stale);
  setStatus(item, "waiting", "waiting");
  if (!queue.includes(item)) queue.push(item);
  pump();
}

function pump() {
  while (active < CONCURRENCY && queue.length) {
    const item = queue.shift();
    if (!items.includes(item)) continue;
    active += 1;
    process(item).finally(() => { active -= 1; pump(); });
  }
}

/** POST /api/remove, retrying a 503 as its Retry-After says; the response, or an Error with the server's message. */
async function postRemove(form, onBusy = () => {}) {
  let response;
  for (let attempt = 0; ; attempt++) {
    response = await fetch("/api/remove", { method: "POST", body: form });
    if (response.status !== 503 || attempt >= MAX_RETRIES) break;
    const wait = Math.min(30, Number(response.headers.get("Retry-After")) || 1);
    onBusy(wait);
    await new Promise((resolve) => setTimeout(resolve, wait * 1000));
  }
  if (!response.ok) throw new Error(await errorText(response));
  return response;
}

async function errorText(response) {
  let message = `${response.status} ${response.statusText}`;
  try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
  return message;
}

async function process(item) {
  const gen = item.gen;
  const values = optionValues();
  if (values.mode === "image" && !$("#bg_image").files[0]) {
    showError(item, "Choose a background picture for the Picture result.");
    return;
  }
  const form = buildForm(item.file, values);
  setStatus(item, "working", "processing…");
  const started = performance.now();
  try {
    const response = await postRemove(form, (wait) => setStatus(item, "working", `server busy, retrying in ${wait}s`));
    if (gen !== item.gen || !items.includes(item)) return;  // options changed meanwhile
    const blob = await response.blob();
    if (gen !== item.gen) return;
    const ms = Number(response.headers.get("X-Processing-Ms")) || performance.now() - started;
    item.server = { blob, values, filename: filenameFrom(response) || `cutout-${item.id}.png` };
    let note = "";
    if (item.edit && item.edit.key === alphaKey(values)) {
      await window.cleancut.applyEdit(item);  // the brush edit, on the new result
      if (gen !== item.gen) return;
    } else {
      if (item.edit) note = "The options that shape the mask changed, so the brush edit was dropped.";
      item.edit = null;
      showResult(item, blob, item.server.filename);
    }
    $(".card-note", item.el).textContent = note;
    $(".card-note", item.el).hidden = !note;
    $(".error", item.el).hidden = true;
    $(".retry", item.el).hidden = true;
    markStale(item, false);
    setStatus(item, "done", `${formatBytes(item.blob.size)} · ${Math.round(ms)} ms`);
  } catch (err) {
    if (gen === item.gen) showError(item, err.message || String(err));
  } finally {
    refreshToolbar();
  }
}

/** Show ``blob`` as the card's result and its download (``maskBlob``: the corrected mask, PNG). */
function showResult(item, blob, filename, maskBlob = null) {
  if (item.url) URL.revokeObjectURL(item.url);
  item.blob = blob;
  item.url = URL.createObjectURL(blob);
  item.filename = filename;
  $(".after", item.el).src = item.url;
  const link = $(".download", item.el);
  link.href = item.url;
  link.download = filename;
  const mask = $(".download-mask", item.el);
  if (mask.href) URL.revokeObjectURL(mask.href);
  if (maskBlob) {
    mask.href = URL.createObjectURL(maskBlob);
    mask.download = filename.replace(/(\.[a-z]+)?\.[^.]+$/, ".mask.png");
  } else {
    mask.removeAttribute("href");
  }
  item.el.toggleAttribute("data-edited", Boolean(maskBlob));
  refreshLinks(item);
  document.dispatchEvent(new CustomEvent("cleancut:result", { detail: item }));  // a new result (examples.js)
}

/** Downloads are offered only for a finished, current result. */
function refreshLinks(item) {
  const ready = item.status === "done" && !item.stale && Boolean(item.url);
  $(".download", item.el).hidden = !ready;
  $(".download-mask", item.el).hidden = !(ready && $(".download-mask", item.el).hasAttribute("href"));
  $(".open", item.el).hidden = !(ready && item.kind === "photo");
  $(".save-example", item.el).hidden = !(ready && item.kind === "photo");  // examples.js
}

function markStale(item, stale) {
  item.stale = stale && Boolean(item.url);
  item.el.toggleAttribute("data-stale", item.stale);
  refreshLinks(item);
}

function showError(item, message) {
  const box = $(".error", item.el);
  box.textContent = message;
  box.hidden = false;
  $(".retry", item.el).hidden = false;
  setStatus(item, "error", "failed");
}

function filenameFrom(response) {
  const header = response.headers.get("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(header);
  return match ? match[1] : null;
}

function setStatus(item, status, text) {
  item.status = status;
  item.el.dataset.status = status;
  $(".status", item.el).textContent = text;
  refreshLinks(item);
  refreshToolbar();
}

function discard(item) {
  const index = items.indexOf(item);
  if (index >= 0) items.splice(index, 1);
  item.gen += 1;
  if (item.onDiscard) item.onDiscard();
  for (const url of [item.url, $(".before", item.el).src, $(".download-mask", item.el).href]) {
    if (url && url.startsWith("blob:")) URL.revokeObjectURL(url);
  }
  item.el.remove();
  refreshToolbar();
}

function refreshToolbar() {
  els.empty.hidden = items.length > 0;
  els.clear.disabled = items.length === 0;
  // only when every result is current: a zip made meanwhile would miss the photos being redone
  // (a clip is not redone by itself: an out-of-date clip is left out of the zip instead)
  const busy = items.some((i) => i.status === "waiting" || i.status === "working" || (i.stale && i.kind === "photo"));
  els.downloadAll.disabled = busy || !items.some((i) => i.status === "done");
  els.downloadAll.title = busy ? "waiting for the results being made" : "";
}

// ------------------------------------------------------------------ files: ZIP (stored) and PNG

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(...arrays) {
  let crc = 0xffffffff;
  for (const bytes of arrays) {
    for (let i = 0; i < bytes.length; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function zip(entries) {  // [{name, bytes: Uint8Array}] -> Blob; no compression (images already are)
  const encoder = new TextEncoder();
  const now = new Date();
  const time = (now.getHours() << 11) | (now.getMinutes() << 5) | (now.getSeconds() >> 1);
  const date = ((now.getFullYear() - 1980) << 9) | ((now.getMonth() + 1) << 5) | now.getDate();
  const parts = [];
  const central = [];
  let offset = 0;
  for (const entry of entries) {
    const name = encoder.encode(entry.name);
    const crc = crc32(entry.bytes);
    const size = entry.bytes.length;
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true); local.setUint16(4, 20, true); local.setUint16(6, 0x0800, true);
    local.setUint16(8, 0, true); local.setUint16(10, time, true); local.setUint16(12, date, true);
    local.setUint32(14, crc, true); local.setUint32(18, size, true); local.setUint32(22, size, true);
    local.setUint16(26, name.length, true); local.setUint16(28, 0, true);
    parts.push(local, name, entry.bytes);
    const record = new DataView(new ArrayBuffer(46));
    record.setUint32(0, 0x02014b50, true); record.setUint16(4, 20, true); record.setUint16(6, 20, true);
    record.setUint16(8, 0x0800, true); record.setUint16(10, 0, true); record.setUint16(12, time, true);
    record.setUint16(14, date, true); record.setUint32(16, crc, true); record.setUint32(20, size, true);
    record.setUint32(24, size, true); record.setUint16(28, name.length, true);
    record.setUint32(42, offset, true);
    central.push(record, name);
    offset += 30 + name.length + size;
  }
  const centralSize = central.reduce((n, p) => n + p.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true); end.setUint16(8, entries.length, true);
  end.setUint16(10, entries.length, true); end.setUint32(12, centralSize, true); end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}

/** A PNG of 8-bit pixels with 1 (grey), 3 (RGB) or 4 (RGBA) channels: exact, unlike a canvas,
 *  which premultiplies alpha. Compressed with the browser's own zlib (CompressionStream). */
async function encodePng(pixels, width, height, channels) {
  const stride = width * channels;
  const raw = new Uint8Array((stride + 1) * height);  // filter byte 0 (none) before each row
  for (let y = 0; y < height; y++) raw.set(pixels.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  const deflated = new Uint8Array(await new Response(
    new Blob([raw]).stream().pipeThrough(new CompressionStream("deflate"))).arrayBuffer());
  const chunk = (type, data) => {
    const head = new DataView(new ArrayBuffer(8));
    const name = new TextEncoder().encode(type);
    head.setUint32(0, data.length);
    new Uint8Array(head.buffer).set(name, 4);
    const tail = new DataView(new ArrayBuffer(4));
    tail.setUint32(0, crc32(name, data));
    return [head, data, tail];
  };
  const ihdr = new DataView(new ArrayBuffer(13));
  ihdr.setUint32(0, width); ihdr.setUint32(4, height);
  ihdr.setUint8(8, 8); ihdr.setUint8(9, { 1: 0, 3: 2, 4: 6 }[channels]);
  const signature = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return new Blob([signature, ...chunk("IHDR", new Uint8Array(ihdr.buffer)), ...chunk("IDAT", deflated),
                   ...chunk("IEND", new Uint8Array(0))], { type: "image/png" });
}

function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function downloadAll() {
  const done = items.filter((i) => i.status === "done" && !i.stale && i.blob);
  if (!done.length) return;
  const used = new Set();
  const entries = [];
  for (const item of done) {
    let name = item.filename;
    for (let n = 2; used.has(name); n++) name = item.filename.replace(/(\.[^.]+)$/, `-${n}$1`);
    used.add(name);
    entries.push({ name, bytes: new Uint8Array(await item.blob.arrayBuffer()) });
  }
  saveBlob(zip(entries), "cleancut-results.zip");
}

// ------------------------------------------------------------------ wiring

function wire() {
  els.files.addEventListener("change", () => { addFiles(els.files.files); els.files.value = ""; });
  els.drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); els.files.click(); } });
  for (const type of ["dragenter", "dragover"]) {
    window.addEventListener(type, (e) => { e.preventDefault(); els.drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    window.addEventListener(type, (e) => { e.preventDefault(); if (type === "drop" || !e.relatedTarget) els.drop.classList.remove("over"); });
  }
  window.addEventListener("drop", (e) => { if (e.dataTransfer && e.dataTransfer.files.length) addFiles(e.dataTransfer.files); });
  window.addEventListener("paste", (e) => {
    const files = Array.from(e.clipboardData ? e.clipboardData.files : []);
    if (files.length) addFiles(files);
  });
  els.form.addEventListener("input", optionsChanged);
  els.form.addEventListener("change", optionsChanged);
  els.form.addEventListener("submit", (e) => e.preventDefault());
  for (const sw of els.form.querySelectorAll(".swatch")) {
    sw.addEventListener("click", () => { $("#bg_color").value = sw.dataset.color; optionsChanged(); });
  }
  els.downloadAll.addEventListener("click", downloadAll);
  els.clear.addEventListener("click", () => { for (const item of [...items]) discard(item); });
  syncControls();
  refreshToolbar();
  loadMetadata();
}

window.cleancut = {
  $, items, optionValues, alphaKey, currentMode, buildForm, postRemove, errorText, makeItem, setStatus,
  showResult, showError, markStale, refreshLinks, refreshToolbar, filenameFrom, formatBytes, encodePng,
  saveBlob, zip, CLEAN_FRACTION,
};
wire();
