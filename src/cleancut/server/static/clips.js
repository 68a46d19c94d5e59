// cleancut web page: clips. A video dropped or chosen on the page becomes a job of POST /api/video
// (the options on the left, as query parameters); its card follows the job's progress, can cancel
// it, and plays the result (WebM with alpha over the checkerboard) with a download link.
"use strict";

(() => {
  const cc = window.cleancut;
  const { $ } = cc;
  const POLL_MS = 400;
  const FINISHED = ["done", "failed", "cancelled"];

  /** The options of a clip job: those of a photo, less the ones a clip cannot take. */
  function clipValues() {
    const values = cc.optionValues();
    for (const name of ["crop", "crop_margin", "format"]) delete values[name];
    return values;
  }

  function addClip(file) {
    const item = cc.makeItem(file, "clip");
    item.el.querySelector(".compare-row").hidden = true;
    $(".before", item.el).hidden = true;
    $(".retry", item.el).addEventListener("click", () => start(item));
    $(".cancel", item.el).addEventListener("click", () => cancel(item));
    item.onDiscard = () => {
      if (item.job && !FINISHED.includes(item.jobStatus)) fetch(`/api/video/${item.job}`, { method: "DELETE" });
      const video = $(".clip", item.el);
      if (video.src) URL.revokeObjectURL(video.src);
    };
    start(item);
    return item;
  }

  function progress(item, percent) {
    const box = $(".progress", item.el);
    box.hidden = percent === null;
    if (percent !== null) box.querySelector("progress").value = percent;
  }

  async function start(item) {
    const gen = ++item.gen;
    const values = clipValues();
    $(".error", item.el).hidden = true;
    $(".retry", item.el).hidden = true;
    if (values.mode === "image") {
      cc.showError(item, "A background picture is for photos; choose Cut-out, Mask, Colour or Blur for a clip.");
      return;
    }
    item.cancelling = false;
    cc.setStatus(item, "working", "uploading…");
    progress(item, 0);
    const data = new FormData();
    data.append("file", item.file, item.file.name || "clip");
    try {
      const query = new URLSearchParams({ ...values, output: "webm" });
      const response = await fetch(`/api/video?${query}`, { method: "POST", body: data });
      if (!response.ok) throw new Error(await cc.errorText(response));
      const job = await response.json();
      if (gen !== item.gen) return;
      item.job = job.id;
      item.values = values;
      await follow(item, gen);
    } catch (err) {
      if (gen === item.gen) {
        progress(item, null);
        cc.showError(item, err.message || String(err));
      }
    }
  }

  function cancelled(item) {
    progress(item, null);
    cc.setStatus(item, "cancelled", "cancelled");
    $(".retry", item.el).hidden = false;
  }

  async function follow(item, gen) {
    for (;;) {
      const response = await fetch(`/api/video/${item.job}`);
      if (gen !== item.gen) return;
      if (item.cancelling) return cancelled(item);  // a cancelled job is gone from the server at once
      if (!response.ok) throw new Error(await cc.errorText(response));
      const job = await response.json();
      item.jobStatus = job.status;
      if (job.status === "done") break;
      if (job.status === "failed") throw new Error(job.error || "the job failed");
      if (job.status === "cancelled") return cancelled(item);
      const total = job.total_frames ? ` of ${job.total_frames}` : "";
      progress(item, job.percent || 0);
      cc.setStatus(item, "working", `${job.frames}${total} frames`);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    const response = await fetch(`/api/video/${item.job}/result`);
    if (!response.ok) throw new Error(await cc.errorText(response));
    const blob = await response.blob();
    if (gen !== item.gen) return;
    const stem = (item.file.name || "clip").replace(/\.[^.]+$/, "");
    const filename = cc.filenameFrom(response) || `${stem}.${item.values.mode}.webm`;
    const video = $(".clip", item.el);
    if (video.src) URL.revokeObjectURL(video.src);
    if (item.url) URL.revokeObjectURL(item.url);
    item.blob = blob;
    item.url = URL.createObjectURL(blob);
    item.filename = filename;
    video.src = item.url;
    video.hidden = false;
    video.play().catch(() => {});  // muted: autoplay is allowed
    const link = $(".download", item.el);
    link.href = item.url;
    link.download = filename;
    progress(item, null);
    cc.markStale(item, false);
    cc.setStatus(item, "done", cc.formatBytes(blob.size));
  }

  async function cancel(item) {
    if (!item.job) return;
    $(".cancel", item.el).disabled = true;
    try {
      const response = await fetch(`/api/video/${item.job}`, { method: "DELETE" });
      if (!response.ok) throw new Error(await cc.errorText(response));
      item.cancelling = true;
      cc.setStatus(item, "working", "cancelling…");
    } catch (err) {
      cc.showError(item, err.message || String(err));
    } finally {
      $(".cancel", item.el).disabled = false;
    }
  }

  // a clip is not redone by itself when an option changes (it takes a while): its card says it
  // is out of date and offers to redo it
  document.addEventListener("cleancut:options", () => {
    for (const item of cc.items) {
      if (item.kind !== "clip") continue;
      const changed = item.values && JSON.stringify(item.values) !== JSON.stringify(clipValues());
      cc.markStale(item, changed);
      const retry = $(".retry", item.el);
      retry.textContent = changed ? "Redo with the new options" : "Retry";
      retry.hidden = !(changed || item.status === "error" || item.status === "cancelled");
    }
    cc.refreshToolbar();
  });

  cc.addClip = addClip;
})();
