// cleancut web page: "Save as example". A photo's result adds the photo and its mask (the brush's
// when it was corrected, else the server's alpha) to an example set in the layout `cleancut
// finetune` reads: im/<stem>.jpg + gt/<stem>.png. With `cleancut serve --examples DIR` the server
// stores the set in DIR (POST /api/examples) and serves its zip (GET /api/examples/zip); without,
// this page keeps the set and builds the same zip itself. GET /api/examples, asked once, says which.
"use strict";

(() => {
  const cc = window.cleancut;
  const { $ } = cc;
  const JPEG_QUALITY = 0.95;  // as the server's stored photos (cleancut.examples.PHOTO_QUALITY)
  const ui = {
    bar: $("#examples"), count: $("#examples-count strong"), where: $("#examples-where"),
    download: $("#examples-download"), error: $("#examples-error"), list: $("#list"),
  };
  // server: whether the server stores the set; pairs: the set held in this page (browser mode)
  const set = { server: false, zip: null, count: 0, maxBytes: Infinity, pairs: [], stems: new Set(),
                undownloaded: false, info: null };

  /** The headers every call carries: the API key, when the page was given one (as camera.js). */
  function headers() {
    const key = sessionStorage.getItem("cleancut-api-key");
    return key ? { "X-API-Key": key } : {};
  }

  // ---------------------------------------------------------------- the set: where it is, its count

  async function loadInfo() {
    try {
      const response = await fetch("/api/examples", { headers: headers() });
      if (!response.ok) throw new Error(await cc.errorText(response));
      const info = await response.json();
      set.server = Boolean(info.enabled);
      set.zip = info.zip || "/api/examples/zip";
      set.count = set.server ? Number(info.count) || 0 : 0;
      if (info.max_upload_bytes) set.maxBytes = Number(info.max_upload_bytes);
    } catch (err) {  // a server without the endpoint: the page keeps the set
      console.warn("GET /api/examples failed; examples are kept in this page", err);
      set.server = false;
    }
    render();
  }

  function render() {
    const count = set.server ? set.count : set.pairs.length;
    ui.bar.dataset.mode = set.server ? "server" : "browser";
    ui.bar.dataset.count = String(count);
    ui.count.textContent = String(count);
    ui.where.textContent = set.server ? "on the server" : "in this page";
    ui.bar.title = set.server
      ? "Saved examples are stored in the server's example folder (cleancut serve --examples DIR)."
      : "Saved examples are kept in this page until it is closed or reloaded: download them as a zip " +
        "for cleancut finetune.";
    ui.download.disabled = count === 0;
  }

  function showSetError(message) {
    ui.error.textContent = message;
    ui.error.hidden = !message;
  }

  // ---------------------------------------------------------------- the pair: photo and mask

  /** The photo's stem as the server makes it (letters, digits, - and _), unique in this page's set. */
  function stemFor(name) {
    const base = (name || "").replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_-]+/g, "-")
      .replace(/^[-_]+|[-_]+$/g, "").slice(0, 40) || "example";
    let stem = base;
    for (let n = 2; set.stems.has(stem); n++) stem = `${base}-${n}`;
    return stem;
  }

  /** RGBA pixels of a bitmap, exactly as decoded. */
  function pixelsOf(bitmap) {
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    return ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  }

  /** The item's mask at the photo's size: the brush's when there is an edit, else the server's
   *  (its result when that is the mask itself, else /api/remove with mode=mask and the result's
   *  edge options, as the brush fetches it). */
  async function maskOf(item) {
    if (item.edit) return { alpha: item.edit.alpha.slice(), width: item.edit.width, height: item.edit.height };
    const values = item.server.values;
    let blob = item.server.blob;
    if (!(values.mode === "mask" && values.format === "png" && values.crop !== "true")) {
      const ask = { ...values, mode: "mask", format: "png", crop: "false" };
      delete ask.bg_color; delete ask.blur_radius; delete ask.crop_margin;
      blob = await (await cc.postRemove(cc.buildForm(item.file, ask))).blob();
    }
    const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    const rgba = pixelsOf(bitmap);
    const alpha = new Uint8Array(bitmap.width * bitmap.height);
    for (let i = 0; i < alpha.length; i++) alpha[i] = rgba[i * 4];
    return { alpha, width: bitmap.width, height: bitmap.height };
  }

  /** The photo as the set stores it: JPEG, upright, sRGB, at its own size (what the server
   *  does with an upload, so that both zips hold the same kind of file). */
  async function photoJpeg(file, width, height) {
    const bitmap = await createImageBitmap(file, { premultiplyAlpha: "none" });
    if (bitmap.width !== width || bitmap.height !== height) {
      throw new Error(`the mask is ${width}x${height} pixels but the photo decodes as ` +
                      `${bitmap.width}x${bitmap.height} in this browser`);
    }
    const canvas = new OffscreenCanvas(width, height);
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    const image = ctx.getImageData(0, 0, width, height);
    for (let i = 3; i < image.data.length; i += 4) image.data[i] = 255;  // no alpha in a JPEG
    ctx.putImageData(image, 0, 0);
    return canvas.convertToBlob({ type: "image/jpeg", quality: JPEG_QUALITY });
  }

  // ---------------------------------------------------------------- saving

  /** Store the pair on the server; the server's answer, or an Error whose message is a sentence. */
  async function saveOnServer(item, maskPng) {
    const name = item.file.name || "pasted.png";
    const size = item.file.size + maskPng.size;
    if (size > set.maxBytes) {
      throw new Error(`the photo and its mask come to ${cc.formatBytes(size)}, more than this server takes ` +
                      `in one upload (${cc.formatBytes(set.maxBytes)}).`);
    }
    const form = new FormData();
    form.append("file", item.file, name);
    form.append("mask", maskPng, "mask.png");
    form.append("name", name);
    let response;
    try {
      response = await fetch("/api/examples", { method: "POST", body: form, headers: headers() });
    } catch (err) {
      throw new Error(`the server could not be reached (${err.message || err}).`);
    }
    if (response.ok) return response.json();
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    const code = body && body.detail && body.detail.code;
    const error = new Error((body && body.error) || `the server answered ${response.status} ${response.statusText}.`);
    error.code = code;
    throw error;
  }

  async function saveInPage(item, mask, maskPng) {
    const photo = await photoJpeg(item.file, mask.width, mask.height);
    const stem = stemFor(item.file.name);
    set.stems.add(stem);
    set.pairs.push({ stem, photo, mask: maskPng });
    set.undownloaded = true;
    return { stem, photo: `im/${stem}.jpg`, mask: `gt/${stem}.png`, count: set.pairs.length };
  }

  function note(item, text, failed = false) {
    const box = $(".example-note", item.el);
    box.textContent = text;
    box.hidden = !text;
    box.classList.toggle("failed", failed);  // not .error: app.js looks up the card's first .error
  }

  async function save(item) {
    const button = $(".save-example", item.el);
    if (item.savingExample || item.status !== "done" || item.stale) return;
    item.savingExample = true;
    button.disabled = true;
    button.textContent = "Saving…";
    note(item, "");
    const resultAtStart = item.blob;
    let saved = null;
    try {
      const mask = await maskOf(item);
      const maskPng = await cc.encodePng(mask.alpha, mask.width, mask.height, 1);
      let fellBack = false;
      if (set.server) {
        try {
          saved = await saveOnServer(item, maskPng);
          set.count = saved.count;
        } catch (err) {
          if (err.code !== "examples_off") throw err;
          set.server = false;  // the server stopped storing examples: keep the set here from now on
          fellBack = true;
        }
      }
      if (!saved) saved = await saveInPage(item, mask, maskPng);
      render();
      const where = set.server ? "on the server" : "in this page";
      note(item, `Saved as an example ${where}: ${saved.photo} and ${saved.mask} (${saved.count} in the set).` +
                 (fellBack ? " This server no longer stores examples, so the set is kept in this page: download it as a zip." : ""));
    } catch (err) {
      note(item, `Could not save this photo as an example: ${err.message || err}`, true);
    } finally {
      item.savingExample = false;
      // saved: the button stays off until the result changes (the brush, new options)
      const current = item.blob === resultAtStart;
      item.el.toggleAttribute("data-saved", Boolean(saved) && current);
      button.disabled = Boolean(saved) && current;
      button.textContent = saved && current ? "Saved as example" : "Save as example";
    }
  }

  /** A new result (a re-run, or the brush's Done with a change): it can be saved again. */
  document.addEventListener("cleancut:result", (event) => {
    const item = event.detail;
    if (item.savingExample || !item.el.hasAttribute("data-saved")) return;
    item.el.removeAttribute("data-saved");
    const button = $(".save-example", item.el);
    button.disabled = false;
    button.textContent = "Save as example";
    note(item, "");
  });

  // ---------------------------------------------------------------- the zip

  async function download() {
    showSetError("");
    ui.download.disabled = true;
    try {
      if (set.server) {
        let response;
        try {
          response = await fetch(set.zip, { headers: headers() });
        } catch (err) {
          throw new Error(`the server could not be reached (${err.message || err}).`);
        }
        if (!response.ok) throw new Error(await cc.errorText(response));
        cc.saveBlob(await response.blob(), "examples.zip");
      } else {
        const entries = [];
        for (const pair of set.pairs) {
          entries.push({ name: `im/${pair.stem}.jpg`, bytes: new Uint8Array(await pair.photo.arrayBuffer()) });
          entries.push({ name: `gt/${pair.stem}.png`, bytes: new Uint8Array(await pair.mask.arrayBuffer()) });
        }
        cc.saveBlob(cc.zip(entries), "examples.zip");
        set.undownloaded = false;
      }
    } catch (err) {
      showSetError(`Could not download the examples: ${err.message || err}`);
    } finally {
      render();
    }
  }

  // ---------------------------------------------------------------- wiring

  ui.list.addEventListener("click", (event) => {
    const button = event.target.closest(".save-example");
    if (!button) return;
    const card = button.closest(".card");
    const item = cc.items.find((i) => i.el === card);
    if (item) save(item);
  });
  ui.download.addEventListener("click", download);
  window.addEventListener("beforeunload", (event) => {  // the page's set lives only here
    if (!set.server && set.undownloaded) { event.preventDefault(); event.returnValue = ""; }
  });

  render();
  loadInfo();
  Object.assign(cc, { examples: set });
})();
