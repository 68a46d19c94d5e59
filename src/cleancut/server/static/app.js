// cleancut web page: plain JavaScript, no build step. Talks to the same server's /api.
"use strict";

const CONCURRENCY = 2;       // requests in flight at once (the server queues the rest anyway)
const MAX_RETRIES = 6;       // retries of a 503 (server busy), honouring Retry-After
const RERUN_DELAY_MS = 350;  // option changes are applied after this pause

const $ = (sel, root = document) => root.querySelector(sel);
const els = {
  files: $("#files"), drop: $("#drop"), form: $("#options"), list: $("#list"), empty: $("#empty"),
  template: $("#card-template"), downloadAll: $("#download-all"), clear: $("#clear"),
  model: $("#model-name"), limits: $("#limits"), formatNote: $("#format-note"),
};

let nextId = 1;
const items = [];            // {id, file, el, gen, status, blob, url, filename}
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
    limits = options.limits;
    els.limits.textContent = `up to ${formatBytes(limits.max_upload_bytes)} and ` +
      `${(limits.max_pixels / 1e6).toFixed(0)} megapixels per photo`;
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

function buildForm(file) {
  const data = new FormData();
  data.append("file", file, file.name || "pasted.png");
  const mode = currentMode();
  data.append("mode", mode);
  if (mode === "color") data.append("bg_color", $("#bg_color").value);
  if (mode === "blur") data.append("blur_radius", $("#blur_radius").value);
  if (mode === "image") {
    const bg = $("#bg_image").files[0];
    if (bg) data.append("bg_image", bg, bg.name);
  }
  data.append("alpha_matting", $("#alpha_matting").checked ? "true" : "false");
  data.append("feather", $("#feather").value);
  if ($("#clean").checked) {
    data.append("remove_islands", "0.005");
    data.append("fill_holes", "0.005");
  }
  data.append("crop", $("#crop").checked ? "true" : "false");
  if ($("#crop").checked) data.append("crop_margin", $("#crop_margin").value || "0");
  data.append("format", $("#format").value);
  return data;
}

function syncControls() {
  const mode = currentMode();
  for (const row of els.form.querySelectorAll("[data-when]")) row.hidden = row.dataset.when !== mode;
  for (const row of els.form.querySelectorAll("[data-when-crop]")) row.hidden = !$("#crop").checked;
  for (const out of els.form.querySelectorAll("output")) out.value = document.getElementById(out.htmlFor).value;
  els.formatNote.hidden = !($("#format").value === "jpeg" && (mode === "cutout"));
  const colour = $("#bg_color").value.toLowerCase();
  for (const sw of els.form.querySelectorAll(".swatch")) sw.classList.toggle("active", sw.dataset.color === colour);
}

let rerunTimer = null;
function optionsChanged() {
  syncControls();
  clearTimeout(rerunTimer);
  rerunTimer = setTimeout(() => items.forEach(enqueue), RERUN_DELAY_MS);
}

// ------------------------------------------------------------------ items and the queue

function addFiles(fileList) {
  const files = Array.from(fileList).filter((f) => f.size > 0);
  for (const file of files) {
    const el = els.template.content.firstElementChild.cloneNode(true);
    const item = { id: nextId++, file, el, gen: 0, status: "waiting", blob: null, url: null, filename: null };
    el.dataset.id = item.id;
    $(".name", el).textContent = file.name || "pasted image";
    $(".name", el).title = file.name || "";
    $(".before", el).src = URL.createObjectURL(file);
    $(".retry", el).addEventListener("click", () => enqueue(item));
    $(".discard", el).addEventListener("click", () => discard(item));
    els.list.append(el);
    items.push(item);
    enqueue(item);
  }
  refreshToolbar();
}

function enqueue(item) {
  item.gen += 1;
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

async function process(item) {
  const gen = item.gen;
  if (currentMode() === "image" && !$("#bg_image").files[0]) {
    showError(item, "Choose a background picture for the Picture result.");
    return;
  }
  const form = buildForm(item.file);
  setStatus(item, "working", "processing…");
  const started = performance.now();
  try {
    let response;
    for (let attempt = 0; ; attempt++) {
      response = await fetch("/api/remove", { method: "POST", body: form });
      if (response.status !== 503 || attempt >= MAX_RETRIES) break;
      const wait = Math.min(30, Number(response.headers.get("Retry-After")) || 1);
      setStatus(item, "working", `server busy, retrying in ${wait}s`);
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
    }
    if (gen !== item.gen || !items.includes(item)) return;  // options changed meanwhile
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    const blob = await response.blob();
    if (gen !== item.gen) return;
    if (item.url) URL.revokeObjectURL(item.url);
    item.blob = blob;
    item.url = URL.createObjectURL(blob);
    item.filename = filenameFrom(response) || `cutout-${item.id}.png`;
    const after = $(".after", item.el);
    after.src = item.url;
    const link = $(".download", item.el);
    link.href = item.url;
    link.download = item.filename;
    link.hidden = false;
    $(".error", item.el).hidden = true;
    $(".retry", item.el).hidden = true;
    const ms = Number(response.headers.get("X-Processing-Ms")) || performance.now() - started;
    setStatus(item, "done", `${formatBytes(blob.size)} · ${Math.round(ms)} ms`);
  } catch (err) {
    if (gen === item.gen) showError(item, err.message || String(err));
  } finally {
    refreshToolbar();
  }
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
}

function discard(item) {
  const index = items.indexOf(item);
  if (index >= 0) items.splice(index, 1);
  item.gen += 1;
  for (const url of [item.url, $(".before", item.el).src]) if (url && url.startsWith("blob:")) URL.revokeObjectURL(url);
  item.el.remove();
  refreshToolbar();
}

function refreshToolbar() {
  els.empty.hidden = items.length > 0;
  els.clear.disabled = items.length === 0;
  els.downloadAll.disabled = !items.some((i) => i.status === "done");
}

// ------------------------------------------------------------------ download all: a ZIP (stored)

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
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

async function downloadAll() {
  const done = items.filter((i) => i.status === "done" && i.blob);
  const used = new Set();
  const entries = [];
  for (const item of done) {
    let name = item.filename;
    for (let n = 2; used.has(name); n++) name = item.filename.replace(/(\.[^.]+)$/, `-${n}$1`);
    used.add(name);
    entries.push({ name, bytes: new Uint8Array(await item.blob.arrayBuffer()) });
  }
  const url = URL.createObjectURL(zip(entries));
  const link = document.createElement("a");
  link.href = url;
  link.download = "cleancut-results.zip";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
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

wire();
