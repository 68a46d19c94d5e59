// cleancut web page: the large view of a result (zoom and pan) and the brush that erases or
// restores the mask. The edit is made on the alpha at the photo's own resolution: the mask comes
// from the server once (mode=mask, the same edge options), strokes change it in the page, and
// "Done" composes the result again from the photo, the corrected alpha and the background.
// Pixels the brush did not change keep the server's result exactly.
"use strict";

(() => {
  const { $ } = window.cleancut;
  const CROP_LEVEL = 0.05;        // as cleancut.compose.CROP_LEVEL: alpha above it is in the crop box
  const UNDO_BYTES = 256 << 20;   // undo steps kept while their copies of the mask fit in this
  const ZOOM_MIN = 0.05, ZOOM_MAX = 32;

  const ui = {
    dialog: $("#viewer"), name: $("#viewer .viewer-name"), stage: $("#viewer .viewer-stage"),
    layer: $("#viewer .viewer-layer"), image: $("#viewer .viewer-image"), canvas: $("#viewer-edit"),
    ring: $("#viewer .brush-ring"), size: $("#brush-size"), soft: $("#brush-soft"), undo: $("#brush-undo"),
    reset: $("#brush-reset"), zoomIn: $("#zoom-in"), zoomOut: $("#zoom-out"), zoomFit: $("#zoom-fit"),
    zoomLevel: $("#zoom-level"), done: $("#viewer-done"),
  };
  // the open view: item, its size, the zoom (scale, x, y), and while editing its pixels
  const view = { item: null, width: 0, height: 0, scale: 1, x: 0, y: 0, drag: null, stroke: null, busy: null };

  // ---------------------------------------------------------------- zoom and pan

  function applyTransform() {
    ui.layer.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.scale})`;
    ui.zoomLevel.textContent = `${Math.round(view.scale * 100)}%`;
  }

  function fit() {
    const box = ui.stage.getBoundingClientRect();
    view.scale = Math.min(box.width / view.width, box.height / view.height, 4) || 1;  // small photos made larger
    view.x = (box.width - view.width * view.scale) / 2;
    view.y = (box.height - view.height * view.scale) / 2;
    applyTransform();
  }

  /** Zoom by ``factor`` keeping the stage point (px, py) still. */
  function zoomAt(factor, px, py) {
    const scale = Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, view.scale * factor));
    view.x = px - (px - view.x) * (scale / view.scale);
    view.y = py - (py - view.y) * (scale / view.scale);
    view.scale = scale;
    applyTransform();
  }

  function zoomCentre(factor) {
    const box = ui.stage.getBoundingClientRect();
    zoomAt(factor, box.width / 2, box.height / 2);
  }

  const tool = () => ui.dialog.querySelector("input[name=tool]:checked").value;

  // ---------------------------------------------------------------- opening and closing

  async function openViewer(item) {
    if (!item || !item.url) return;
    view.item = item;
    ui.name.textContent = item.file.name || "pasted image";
    ui.image.src = item.url;
    ui.canvas.hidden = true;
    ui.image.hidden = false;
    ui.dialog.querySelector("input[name=tool][value=pan]").checked = true;
    syncTools();
    if (!ui.dialog.open) ui.dialog.showModal();
    await ui.image.decode().catch(() => {});
    view.width = ui.image.naturalWidth;
    view.height = ui.image.naturalHeight;
    fit();
    if (item.edit) await startEditing();  // an edited photo opens on its corrected mask
  }

  async function close() {
    if (view.stroke) endStroke();
    const item = view.item;
    if (item && item.edit && item.edit.dirty) {
      ui.done.disabled = true;
      try {
        await applyEdit(item);
      } finally {
        ui.done.disabled = false;
      }
    }
    view.item = null;
    if (ui.dialog.open) ui.dialog.close();
  }

  // ---------------------------------------------------------------- the edit: the mask at the photo's size

  /** Pixels of a picture (a File, Blob or ImageBitmap) as RGBA, exactly as decoded. */
  async function pixelsOf(source, width, height) {
    const bitmap = source instanceof ImageBitmap ? source
      : await createImageBitmap(source, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    const canvas = new OffscreenCanvas(width || bitmap.width, height || bitmap.height);
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    return ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  }

  /** The item's edit: the server's mask (fetched once with the current edge options), the photo's
   *  pixels and the corrected alpha. */
  async function loadEdit(item) {
    const cc = window.cleancut;
    const values = { ...item.server.values, mode: "mask", format: "png", crop: "false" };
    delete values.bg_color; delete values.blur_radius; delete values.crop_margin;
    const response = await cc.postRemove(cc.buildForm(item.file, values));
    const maskBitmap = await createImageBitmap(await response.blob(), { colorSpaceConversion: "none" });
    const photoBitmap = await createImageBitmap(item.file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    const [width, height] = [maskBitmap.width, maskBitmap.height];
    if (photoBitmap.width !== width || photoBitmap.height !== height) {
      throw new Error(`the mask is ${width}x${height} but the photo decodes as ${photoBitmap.width}x${photoBitmap.height} here`);
    }
    const grey = await pixelsOf(maskBitmap);
    const base = new Uint8Array(width * height);
    for (let i = 0; i < base.length; i++) base[i] = grey[i * 4];
    return { key: cc.alphaKey(item.server.values), width, height, base, alpha: base.slice(),
             photo: await pixelsOf(photoBitmap), undo: [], dirty: false };
  }

  async function startEditing() {
    const item = view.item;
    if (!item.edit) {
      ui.dialog.dataset.loading = "";
      try {
        item.edit = await loadEdit(item);
      } catch (err) {
        ui.dialog.querySelector("input[name=tool][value=pan]").checked = true;
        window.cleancut.showError(item, `The brush needs the mask: ${err.message || err}`);
        return;
      } finally {
        delete ui.dialog.dataset.loading;
      }
      if (view.item !== item) return;
    }
    const edit = item.edit;
    ui.canvas.width = edit.width;
    ui.canvas.height = edit.height;
    edit.view = new ImageData(edit.width, edit.height);
    edit.view.data.set(edit.photo);
    render(0, 0, edit.width, edit.height);
    ui.canvas.hidden = false;
    ui.image.hidden = true;
    syncTools();
  }

  /** Redraw a rectangle of the edit: the photo with the corrected alpha, over the checkerboard. */
  function render(x0, y0, x1, y1) {
    const edit = view.item.edit;
    const { alpha, width } = edit;
    const data = edit.view.data;
    for (let y = y0; y < y1; y++) {
      for (let x = x0, i = y * width + x0; x < x1; x++, i++) data[i * 4 + 3] = alpha[i];
    }
    ui.canvas.getContext("2d").putImageData(edit.view, 0, 0, x0, y0, x1 - x0, y1 - y0);
  }

  function syncTools() {
    const edit = view.item && view.item.edit;
    ui.undo.disabled = !(edit && edit.undo.length);
    ui.reset.disabled = !(edit && edit.dirty);
    ui.stage.dataset.tool = tool();
    ui.ring.hidden = tool() === "pan";
  }

  // ---------------------------------------------------------------- the brush

  /** Photo coordinates of a pointer event, and the brush radius in photo pixels. */
  function photoPoint(event) {
    const rect = ui.canvas.getBoundingClientRect();
    const k = view.width / rect.width;
    return { x: (event.clientX - rect.left) * k, y: (event.clientY - rect.top) * k, r: (Number(ui.size.value) / 2) * k };
  }

  function beginStroke(event) {
    const edit = view.item.edit;
    const before = edit.alpha.slice();
    edit.undo.push(before);
    let bytes = edit.undo.length * before.length;
    while (edit.undo.length > 1 && bytes > UNDO_BYTES) { edit.undo.shift(); bytes -= before.length; }
    if (!edit.cover || edit.cover.length !== before.length) edit.cover = new Uint8Array(before.length);
    else edit.cover.fill(0);
    view.stroke = { erase: tool() === "erase", before, soft: Number(ui.soft.value) / 100, last: null };
    strokeTo(photoPoint(event));
  }

  /** Paint dabs from the last point to ``p``: each pixel's cover is the most any dab gave it
   *  (1 inside the hard core, a smooth fall-off across the soft edge), and the alpha is the
   *  alpha before the stroke moved that far towards 0 (erase) or 255 (restore). */
  function strokeTo(p) {
    const s = view.stroke;
    const from = s.last || p;
    const steps = s.last ? Math.max(1, Math.ceil(Math.hypot(p.x - from.x, p.y - from.y) / Math.max(1, p.r / 4))) : 1;
    for (let k = 1; k <= steps; k++) {
      dab(from.x + (p.x - from.x) * (k / steps), from.y + (p.y - from.y) * (k / steps), p.r, s);
    }
    s.last = p;
  }

  function dab(cx, cy, r, s) {
    const edit = view.item.edit;
    const { width, height, alpha, cover } = edit;
    const x0 = Math.max(0, Math.floor(cx - r)), x1 = Math.min(width, Math.ceil(cx + r + 1));
    const y0 = Math.max(0, Math.floor(cy - r)), y1 = Math.min(height, Math.ceil(cy + r + 1));
    if (x0 >= x1 || y0 >= y1) return;
    const core = r * (1 - s.soft);
    for (let y = y0; y < y1; y++) {
      for (let x = x0; x < x1; x++) {
        const d = Math.hypot(x + 0.5 - cx, y + 0.5 - cy);
        if (d >= r) continue;
        let w = 255;
        if (d > core) { const t = (r - d) / (r - core); w = Math.round(255 * t * t * (3 - 2 * t)); }
        const i = y * width + x;
        if (w <= cover[i]) continue;
        cover[i] = w;
        const a = s.before[i];
        alpha[i] = s.erase ? Math.round(a * (1 - w / 255)) : Math.round(a + (255 - a) * (w / 255));
      }
    }
    edit.dirty = true;
    render(x0, y0, x1, y1);
  }

  function endStroke() {
    view.stroke = null;
    syncTools();
  }

  function undo() {
    const edit = view.item && view.item.edit;
    if (!edit || !edit.undo.length) return;
    edit.alpha.set(edit.undo.pop());
    edit.dirty = true;
    render(0, 0, edit.width, edit.height);
    syncTools();
  }

  function reset() {
    const edit = view.item && view.item.edit;
    if (!edit) return;
    edit.undo.push(edit.alpha.slice());
    edit.alpha.set(edit.base);
    edit.dirty = true;
    render(0, 0, edit.width, edit.height);
    syncTools();
  }

  // ---------------------------------------------------------------- the result, composed again

  function parseColour(hex) {
    const n = parseInt(hex.replace("#", "").slice(0, 6), 16);
    return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
  }

  /** The background under the subject, RGBA at the photo's size (null for a cut-out or a mask). */
  async function background(edit, values) {
    const { width, height } = edit;
    const canvas = new OffscreenCanvas(width, height);
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    if (values.mode === "color") {
      ctx.fillStyle = values.bg_color;
      ctx.fillRect(0, 0, width, height);
    } else if (values.mode === "blur") {
      const photo = await createImageBitmap(new ImageData(edit.photo.slice(), width, height));
      ctx.filter = `blur(${Number(values.blur_radius)}px)`;  // a Gaussian of that standard deviation, like the server's
      ctx.drawImage(photo, 0, 0);
    } else if (values.mode === "image") {
      const bg = await createImageBitmap($("#bg_image").files[0]);
      const k = Math.max(width / bg.width, height / bg.height);  // scaled to cover the photo, centred
      ctx.drawImage(bg, (width - bg.width * k) / 2, (height - bg.height * k) / 2, bg.width * k, bg.height * k);
    } else {
      return null;
    }
    return ctx.getImageData(0, 0, width, height).data;
  }

  function cropBox(alpha, width, height, margin) {
    let left = width, top = height, right = -1, bottom = -1;
    const level = CROP_LEVEL * 255;
    for (let y = 0; y < height; y++) {
      for (let x = 0, i = y * width; x < width; x++, i++) {
        if (alpha[i] > level) {
          if (x < left) left = x;
          if (x > right) right = x;
          if (y < top) top = y;
          if (y > bottom) bottom = y;
        }
      }
    }
    if (right < 0) return null;
    return [Math.max(0, left - margin), Math.max(0, top - margin), Math.min(width, right + 1 + margin),
            Math.min(height, bottom + 1 + margin)];
  }

  /** Compose the item's result from the photo, the corrected alpha and the background, as the
   *  server would; where the brush changed nothing, the server's own pixels are kept. */
  async function compose(item) {
    const cc = window.cleancut;
    const { values, blob: serverBlob } = item.server;
    const edit = item.edit;
    const { width, height, alpha, base, photo } = edit;
    const mask = await cc.encodePng(alpha, width, height, 1);
    if (values.mode === "mask") return { blob: mask, mask };
    const bg = await background(edit, values);
    const crop = values.crop === "true";
    const server = crop ? null : await pixelsOf(serverBlob, width, height).catch(() => null);
    const jpeg = values.format === "jpeg";
    const out = new Uint8ClampedArray(width * height * 4);
    for (let i = 0, p = 0; i < alpha.length; i++, p += 4) {
      if (server && alpha[i] === base[i]) {
        out[p] = server[p]; out[p + 1] = server[p + 1]; out[p + 2] = server[p + 2]; out[p + 3] = server[p + 3];
        continue;
      }
      const a = alpha[i] / 255;
      if (bg) {
        for (let c = 0; c < 3; c++) out[p + c] = photo[p + c] * a + bg[p + c] * (1 - a) + 0.5;
        out[p + 3] = 255;
      } else if (jpeg) {  // no alpha in a JPEG: transparent parts become white, as on the server
        for (let c = 0; c < 3; c++) out[p + c] = photo[p + c] * a + 255 * (1 - a) + 0.5;
        out[p + 3] = 255;
      } else {
        out[p] = photo[p]; out[p + 1] = photo[p + 1]; out[p + 2] = photo[p + 2]; out[p + 3] = alpha[i];
      }
    }
    let [x0, y0, x1, y1] = [0, 0, width, height];
    if (crop) [x0, y0, x1, y1] = cropBox(alpha, width, height, Number(values.crop_margin) || 0) || [x0, y0, x1, y1];
    const [w, h] = [x1 - x0, y1 - y0];
    const opaque = Boolean(bg) || jpeg;
    const cropped = new Uint8ClampedArray(w * h * 4);
    for (let y = 0; y < h; y++) cropped.set(out.subarray(((y + y0) * width + x0) * 4, ((y + y0) * width + x1) * 4), y * w * 4);
    if (values.format === "png") {
      const channels = opaque ? 3 : 4;
      const packed = channels === 4 ? new Uint8Array(cropped.buffer) : new Uint8Array(w * h * 3);
      if (channels === 3) for (let i = 0, j = 0; j < packed.length; i += 4, j += 3) packed.set(cropped.subarray(i, i + 3), j);
      return { blob: await cc.encodePng(packed, w, h, channels), mask };
    }
    const canvas = new OffscreenCanvas(w, h);
    canvas.getContext("2d").putImageData(new ImageData(cropped, w, h), 0, 0);
    return { blob: await canvas.convertToBlob({ type: `image/${values.format}`, quality: 0.9 }), mask };
  }

  /** Put the item's corrected mask into its result (after "Done", or when a re-run with the same
   *  edge options brings a new server result). Without any change, the server's result stays. */
  async function applyEdit(item) {
    const cc = window.cleancut;
    const edit = item.edit;
    edit.dirty = false;
    if (edit.alpha.every((a, i) => a === edit.base[i])) {
      cc.showResult(item, item.server.blob, item.server.filename);
      return;
    }
    const { blob, mask } = await compose(item);
    cc.showResult(item, blob, item.server.filename, mask);
  }

  // ---------------------------------------------------------------- events

  ui.stage.addEventListener("wheel", (e) => {
    e.preventDefault();
    const box = ui.stage.getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - box.left, e.clientY - box.top);
  }, { passive: false });

  ui.image.draggable = false;  // a native image drag would cancel the pointer and stop the pan
  ui.stage.addEventListener("pointerdown", (e) => {
    if (!view.item) return;
    e.preventDefault();
    const painting = tool() !== "pan" && e.button === 0 && view.item.edit && !ui.canvas.hidden;
    ui.stage.setPointerCapture(e.pointerId);
    if (painting) beginStroke(e);
    else view.drag = { x: e.clientX - view.x, y: e.clientY - view.y };
  });
  ui.stage.addEventListener("pointermove", (e) => {
    const box = ui.stage.getBoundingClientRect();
    const size = Number(ui.size.value);
    ui.ring.style.width = ui.ring.style.height = `${size}px`;
    ui.ring.style.transform = `translate(${e.clientX - box.left - size / 2}px, ${e.clientY - box.top - size / 2}px)`;
    if (view.stroke) {
      for (const ev of e.getCoalescedEvents ? e.getCoalescedEvents() : [e]) strokeTo(photoPoint(ev));
    } else if (view.drag) {
      view.x = e.clientX - view.drag.x;
      view.y = e.clientY - view.drag.y;
      applyTransform();
    }
  });
  for (const type of ["pointerup", "pointercancel"]) {
    ui.stage.addEventListener(type, () => {
      if (view.stroke) endStroke();
      view.drag = null;
    });
  }
  ui.stage.addEventListener("dblclick", () => (view.scale < 0.999 || view.scale > 1.001 ? zoomAt(1 / view.scale, ...centre()) : fit()));
  const centre = () => { const b = ui.stage.getBoundingClientRect(); return [b.width / 2, b.height / 2]; };

  for (const input of ui.dialog.querySelectorAll("input[name=tool]")) {
    input.addEventListener("change", () => {
      syncTools();
      if (tool() !== "pan" && view.item && ui.canvas.hidden) startEditing();
    });
  }
  for (const input of [ui.size, ui.soft]) {
    input.addEventListener("input", () => { ui.dialog.querySelector(`output[for=${input.id}]`).value = input.value; });
  }
  ui.undo.addEventListener("click", undo);
  ui.reset.addEventListener("click", reset);
  ui.zoomIn.addEventListener("click", () => zoomCentre(1.25));
  ui.zoomOut.addEventListener("click", () => zoomCentre(0.8));
  ui.zoomFit.addEventListener("click", fit);
  ui.done.addEventListener("click", close);
  ui.dialog.addEventListener("cancel", (e) => { e.preventDefault(); close(); });  // Esc applies too
  ui.dialog.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); undo(); }
  });

  Object.assign(window.cleancut, { openViewer, applyEdit, viewer: view });
})();
