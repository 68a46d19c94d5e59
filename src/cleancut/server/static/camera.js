// cleancut web page, camera mode: frames from getUserMedia go to the server over the WebSocket
// /api/stream and come back cut out (or composited) with the options chosen on the left.
// One frame is in flight at a time, so the page never queues frames the server cannot keep up with.
"use strict";

(() => {
  const $ = (sel) => document.querySelector(sel);
  const ui = {
    toggle: $("#camera-toggle"), record: $("#camera-record"), download: $("#camera-download"),
    stats: $("#camera-stats"), error: $("#camera-error"), input: $("#camera-in"), out: $("#camera-out"),
    frame: $(".camera-frame"), form: $("#options"),
  };
  const state = {
    running: false, ws: null, stream: null, sentAt: new Map(), index: 0, rtts: [], frames: 0,
    dropped: 0, started: 0, recorder: null, chunks: [], capture: document.createElement("canvas"),
  };
  // figures for people and for tests (tests/test_browser.py reads them)
  window.cleancutCamera = { stats: () => summary(), state };

  function summary() {
    const sorted = [...state.rtts].sort((a, b) => a - b);
    const pick = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN);
    const seconds = (performance.now() - state.started) / 1000;
    return { frames: state.frames, dropped: state.dropped, fps: seconds > 0 ? state.frames / seconds : 0,
             rtt_p50_ms: pick(0.5), rtt_p95_ms: pick(0.95) };
  }

  function streamOptions() {
    const mode = ui.form.querySelector("input[name=mode]:checked").value;
    const options = { mode: mode === "image" ? "cutout" : mode, format: "webp" };
    if (mode === "color") options.bg_color = $("#bg_color").value;
    if (mode === "blur") options.blur_radius = $("#blur_radius").value;
    options.feather = $("#feather").value;
    return options;
  }

  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = !message;
  }

  function sendFrame() {
    if (!state.running || state.ws.readyState !== WebSocket.OPEN || !ui.input.videoWidth) return;
    const canvas = state.capture;
    canvas.width = ui.input.videoWidth;
    canvas.height = ui.input.videoHeight;
    canvas.getContext("2d").drawImage(ui.input, 0, 0);
    canvas.toBlob((blob) => {
      if (!blob || !state.running) return;
      state.sentAt.set(state.index++, performance.now());
      state.ws.send(blob);
    }, "image/jpeg", 0.85);
  }

  async function showResult(blob) {
    const bitmap = await createImageBitmap(blob);
    if (ui.out.width !== bitmap.width || ui.out.height !== bitmap.height) {
      ui.out.width = bitmap.width;
      ui.out.height = bitmap.height;
    }
    const ctx = ui.out.getContext("2d");
    ctx.clearRect(0, 0, ui.out.width, ui.out.height);
    ctx.drawImage(bitmap, 0, 0);
    bitmap.close();
  }

  function onMessage(event) {
    if (typeof event.data === "string") {
      const msg = JSON.parse(event.data);
      if (msg.type === "ready") { state.started = performance.now(); sendFrame(); }
      if (msg.type === "frame") {
        const sent = state.sentAt.get(msg.index);
        state.sentAt.delete(msg.index);
        if (sent !== undefined) state.rtts.push(performance.now() - sent);
        if (state.rtts.length > 600) state.rtts.shift();
        state.dropped = msg.dropped;
      }
      if (msg.type === "dropped") { state.dropped = msg.dropped; setTimeout(sendFrame, 10); }
      return;
    }
    state.frames += 1;
    showResult(event.data).finally(sendFrame);  // the next frame once this one is shown
    if (state.frames % 10 === 0) {
      const s = summary();
      ui.stats.textContent = `${s.fps.toFixed(1)} frames/s · round trip ${Math.round(s.rtt_p50_ms)} ms ` +
        `(p95 ${Math.round(s.rtt_p95_ms)}) · ${s.dropped} dropped`;
    }
  }

  async function start() {
    showError("");
    try {
      state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    } catch (err) {
      showError(`No camera: ${err.message || err.name}. Allow camera access, or use a device with a camera.`);
      return;
    }
    ui.input.srcObject = state.stream;
    await ui.input.play();
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams(streamOptions());
    const key = sessionStorage.getItem("cleancut-api-key");
    if (key) query.set("api_key", key);
    state.ws = new WebSocket(`${proto}//${location.host}/api/stream?${query}`);
    state.ws.binaryType = "blob";
    state.ws.onmessage = onMessage;
    state.ws.onclose = (event) => {
      if (state.running && event.code !== 1000) showError(`The server closed the stream (${event.code}) ${event.reason || ""}`);
      stop();
    };
    Object.assign(state, { running: true, index: 0, rtts: [], frames: 0, dropped: 0, started: performance.now() });
    state.sentAt.clear();
    ui.frame.hidden = false;
    ui.toggle.textContent = "Stop camera";
    ui.record.disabled = false;
  }

  function stop() {
    if (state.recorder && state.recorder.state !== "inactive") state.recorder.stop();
    state.running = false;
    if (state.ws && state.ws.readyState <= WebSocket.OPEN) state.ws.close(1000);
    if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
    state.stream = null;
    ui.toggle.textContent = "Start camera";
    ui.record.disabled = true;
    ui.record.textContent = "Record";
  }

  function toggleRecording() {
    if (state.recorder && state.recorder.state === "recording") {
      state.recorder.stop();
      return;
    }
    state.chunks = [];
    const recorder = new MediaRecorder(ui.out.captureStream(30), { mimeType: "video/webm" });
    recorder.ondataavailable = (e) => { if (e.data.size) state.chunks.push(e.data); };
    recorder.onstop = () => {
      const blob = new Blob(state.chunks, { type: "video/webm" });
      if (ui.download.href) URL.revokeObjectURL(ui.download.href);
      ui.download.href = URL.createObjectURL(blob);
      ui.download.dataset.bytes = String(blob.size);
      ui.download.hidden = false;
      ui.record.textContent = "Record";
    };
    recorder.start(250);
    state.recorder = recorder;
    ui.record.textContent = "Stop recording";
  }

  ui.toggle.addEventListener("click", () => (state.running ? stop() : start()));
  ui.record.addEventListener("click", toggleRecording);
  ui.form.addEventListener("change", () => {
    if (state.running && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ options: streamOptions() }));
  });
})();
