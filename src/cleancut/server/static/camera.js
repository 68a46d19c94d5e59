// cleancut web page, camera mode: frames from getUserMedia go to the server over the WebSocket
// /api/stream with reply=alpha; the server answers each with its matte alone (8-bit, zlib) and the
// page composites the frame it sent itself, on a canvas, in the result chosen on the left (cut-out,
// mask, colour, blur or picture). Changing the result or the colour needs nothing from the server;
// the edge options go to it as an options message. Nothing restarts the stream.
// One frame is in flight at a time: the next is sent when the reply to the previous one (its
// matte, or a "dropped" message) arrives, so a frame never waits on the server behind another.
// The next frame is captured and JPEG-encoded while the current one is processed, timed to be
// ready shortly before the reply is expected (from the round trips so far), so it goes out the
// moment the reply comes without having waited long itself; never faster than the server's
// frame-rate cap. A frame goes out no larger than the server says its model can use
// ("frame_pixels" in its ready message): the matte that comes back is scaled up to the camera's
// size on a canvas, and the result is composited from the camera's own pixels.
"use strict";

(() => {
  const $ = (sel) => document.querySelector(sel);
  const JPEG_QUALITY = 0.85;
  // the next frame is to be encoded by this fraction of the expected round trip: a little early,
  // so that it is ready when the reply comes, but not so early that it is old when it goes
  const READY_AT = 0.8;
  const ui = {
    toggle: $("#camera-toggle"), record: $("#camera-record"), download: $("#camera-download"),
    stats: $("#camera-stats"), error: $("#camera-error"), ignored: $("#camera-ignored"), input: $("#camera-in"),
    out: $("#camera-out"), frame: $(".camera-frame"), form: $("#options"), smooth: $("#camera-smooth"),
  };
  const state = {
    running: false, ws: null, stream: null, rtts: [], ages: [], frames: 0, dropped: 0,
    inFlight: null,   // the frame sent and not yet answered: {sentAt, capturedAt, frame}; one at most
    next: null,       // the next frame, captured and encoded, waiting for the reply: {blob, capturedAt, frame}
    encoding: false,  // a capture is being encoded
    meta: null,       // the "frame" message that comes before the matte
    rttMs: 0, encodeMs: 0,  // moving averages: the round trip, the page's capture and JPEG encoding
    late: 0,          // replies that came before the next frame was ready (the server waited on the page)
    started: 0, lastSent: 0, interval: 0, timer: null, drawing: Promise.resolve(), sentOptions: "",
    recorder: null, chunks: [], capture: document.createElement("canvas"), backdrop: null,
    framePixels: 0,   // the most pixels a frame sent is worth (the server's ready message; 0: any)
    small: document.createElement("canvas"),  // the frame as sent, when smaller than the camera's
  };
  // figures for people and for tests (tests/test_browser.py and benchmarks/bench_web_camera.py read them)
  window.cleancutCamera = { stats: () => summary(), state };

  /** The round trip (frame sent -> matte back) and the age (frame captured -> matte back, its
   * encoding and its wait for the previous reply included) percentiles, over the last 600 frames. */
  function summary() {
    const quantiles = (values) => {
      const sorted = [...values].sort((a, b) => a - b);
      return (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN);
    };
    const rtt = quantiles(state.rtts), age = quantiles(state.ages);
    const seconds = (performance.now() - state.started) / 1000;
    return { frames: state.frames, dropped: state.dropped, fps: seconds > 0 ? state.frames / seconds : 0,
             rtt_p50_ms: rtt(0.5), rtt_p95_ms: rtt(0.95), age_p50_ms: age(0.5), age_p95_ms: age(0.95),
             late: state.late };
  }

  // ---------------------------------------------------------------- options

  /** What the server applies to the matte: the edge options, and smoothing over time. */
  function serverOptions() {
    const clean = $("#clean").checked ? window.cleancut.CLEAN_FRACTION : "0";
    // the feather is in the result's pixels; the server feathers the matte of the frame it gets
    const feather = String(Number($("#feather").value) * sendScale());
    return { feather, remove_islands: clean, fill_holes: clean,
             smooth: ui.smooth.checked ? "true" : "false" };
  }

  /** Say which options on the left the camera does not use (it never hides them silently). */
  function showIgnored() {
    const ignored = [];
    if ($("#edges").value !== "auto") ignored.push("Edge stage (the camera uses the model's own)");
    if ($("#alpha_matting").checked) ignored.push("Refine edges (seconds a frame)");
    if ($("#crop").checked) ignored.push("Crop to the subject (the frame keeps its size)");
    if ($("#format").value !== "png") ignored.push(`Format (frames are drawn, not saved as ${$("#format").value.toUpperCase()})`);
    let text = ignored.length ? `Not used by the camera: ${ignored.join("; ")}.` : "";
    if (mode() === "image" && !$("#bg_image").files[0]) text += " Choose a background picture: until then the camera shows the cut-out.";
    ui.ignored.textContent = text.trim();
    ui.ignored.hidden = !state.running || !text;
  }

  function optionsChanged() {
    showIgnored();
    state.backdrop = null;  // the picture (or its size) may have changed
    const text = JSON.stringify(serverOptions());
    if (state.running && state.ws.readyState === WebSocket.OPEN && text !== state.sentOptions) {
      state.ws.send(JSON.stringify({ options: serverOptions() }));
      state.sentOptions = text;
    }
  }

  const mode = () => ui.form.querySelector("input[name=mode]:checked").value;

  /** The scale of the frames sent to the camera's: 1, or less when the server's model can use
   * fewer pixels than the camera gives (the matte comes back at the size sent). */
  function sendScale() {
    const pixels = ui.input.videoWidth * ui.input.videoHeight;
    return state.framePixels && pixels > state.framePixels ? Math.sqrt(state.framePixels / pixels) : 1;
  }

  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = !message;
  }

  // ---------------------------------------------------------------- frames out

  /** The one place that decides what goes out: the next frame at once when nothing is in flight
   * (once the frame-rate cap allows), else the capture of the frame after, timed to be ready
   * shortly before the reply is expected. Called on every reply, drop, capture and timer. */
  function pump() {
    clearTimeout(state.timer);
    if (!state.running || state.ws.readyState !== WebSocket.OPEN || !ui.input.videoWidth) return;
    const now = performance.now();
    if (state.inFlight) {
      if (state.next || state.encoding) return;  // ready, or nearly: it goes when the reply comes
      // ready by READY_AT of the expected round trip, and not before the frame-rate cap allows sending
      const readyBy = state.inFlight.sentAt + Math.max(READY_AT * state.rttMs, state.interval);
      const wait = readyBy - state.encodeMs - now;
      if (wait > 0) state.timer = setTimeout(pump, wait);
      else capture();
      return;
    }
    if (!state.next) {
      if (!state.encoding) capture();  // it calls pump again once encoded
      return;
    }
    const wait = state.lastSent + state.interval - now;  // never over the server's frame-rate cap
    if (wait > 0) {
      state.timer = setTimeout(pump, wait);
      return;
    }
    const { blob, capturedAt, frame } = state.next;
    state.next = null;
    state.inFlight = { sentAt: now, capturedAt, frame };
    state.lastSent = now;
    state.ws.send(blob);
    pump();  // schedules the capture of the frame after
  }

  /** Capture the camera's current frame and encode it as JPEG (at :func:`sendScale` of its size);
   * it becomes state.next. */
  function capture() {
    const canvas = state.capture;
    const [w, h] = [ui.input.videoWidth, ui.input.videoHeight];
    if (canvas.width !== w || canvas.height !== h) [canvas.width, canvas.height] = [w, h];
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const capturedAt = performance.now();
    ctx.drawImage(ui.input, 0, 0);
    const frame = ctx.getImageData(0, 0, w, h);  // what the reply's matte is composited with
    const k = sendScale();
    let sent = canvas;
    if (k < 1) {
      sent = state.small;
      const [sw, sh] = [Math.max(1, Math.round(w * k)), Math.max(1, Math.round(h * k))];
      if (sent.width !== sw || sent.height !== sh) [sent.width, sent.height] = [sw, sh];
      sent.getContext("2d").drawImage(canvas, 0, 0, sw, sh);
    }
    state.encoding = true;
    const ws = state.ws;
    sent.toBlob((blob) => {
      if (state.ws !== ws) return;  // a stream stopped (and perhaps another started) meanwhile
      state.encoding = false;
      state.encodeMs = average(state.encodeMs, performance.now() - capturedAt);
      if (!blob || !state.running) return;
      state.next = { blob, capturedAt, frame };
      pump();
    }, "image/jpeg", JPEG_QUALITY);
  }

  const average = (mean, value) => (mean ? 0.8 * mean + 0.2 * value : value);

  // ---------------------------------------------------------------- replies in

  async function inflate(buffer) {
    const stream = new Blob([buffer]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  /** The matte of a frame sent smaller than the camera's (``sw`` x ``sh``), scaled up (bilinear)
   * to the camera's ``w`` x ``h`` on a canvas. */
  function upscale(alpha, sw, sh, w, h) {
    const small = new ImageData(sw, sh);
    const px = small.data;
    for (let i = 0, p = 3; i < alpha.length; i++, p += 4) px[p] = alpha[i];
    const src = new OffscreenCanvas(sw, sh);
    src.getContext("2d").putImageData(small, 0, 0);
    if (!state.matteCanvas || state.matteCanvas.width !== w || state.matteCanvas.height !== h) {
      state.matteCanvas = new OffscreenCanvas(w, h);
    }
    const ctx = state.matteCanvas.getContext("2d", { willReadFrequently: true });
    ctx.clearRect(0, 0, w, h);
    ctx.drawImage(src, 0, 0, w, h);
    const big = ctx.getImageData(0, 0, w, h).data;
    const out = new Uint8Array(w * h);
    for (let i = 0, p = 3; i < out.length; i++, p += 4) out[i] = big[p];
    return out;
  }

  /** The background of the Blur and Picture results at the frame's size, RGBA. */
  function background(frame) {
    const { width: w, height: h } = frame;
    if (mode() === "blur") {  // blurred at a quarter of the size: the same look, far less work
      const small = new OffscreenCanvas(Math.max(1, w >> 2), Math.max(1, h >> 2));
      const src = new OffscreenCanvas(w, h);
      src.getContext("2d").putImageData(frame, 0, 0);
      const sctx = small.getContext("2d");
      sctx.filter = `blur(${Number($("#blur_radius").value) / 4}px)`;
      sctx.drawImage(src, 0, 0, small.width, small.height);
      const big = new OffscreenCanvas(w, h).getContext("2d", { willReadFrequently: true });
      big.drawImage(small, 0, 0, w, h);
      return big.getImageData(0, 0, w, h).data;
    }
    if (mode() === "image" && state.backdrop && state.backdrop.width === w && state.backdrop.height === h) {
      return state.backdrop.data;
    }
    return null;
  }

  async function loadBackdrop(w, h) {
    const file = $("#bg_image").files[0];
    if (!file || (state.backdrop && state.backdrop.width === w && state.backdrop.height === h)) return;
    const bg = await createImageBitmap(file);
    const ctx = new OffscreenCanvas(w, h).getContext("2d", { willReadFrequently: true });
    const k = Math.max(w / bg.width, h / bg.height);  // cover the frame, centred (as the server does)
    ctx.drawImage(bg, (w - bg.width * k) / 2, (h - bg.height * k) / 2, bg.width * k, bg.height * k);
    state.backdrop = ctx.getImageData(0, 0, w, h);
  }

  /** The result of one frame from its pixels and its matte, drawn on the output canvas. */
  function draw(frame, alpha) {
    const { width: w, height: h } = frame;
    const src = frame.data;
    const out = new ImageData(w, h);
    const dst = out.data;
    const m = mode();
    if (m === "image") loadBackdrop(w, h);
    const bg = m === "color" ? null : background(frame);
    if (m === "mask") {
      for (let i = 0, p = 0; i < alpha.length; i++, p += 4) { dst[p] = dst[p + 1] = dst[p + 2] = alpha[i]; dst[p + 3] = 255; }
    } else if (m === "color") {
      const n = parseInt($("#bg_color").value.slice(1), 16);
      const [r, g, b] = [(n >> 16) & 255, (n >> 8) & 255, n & 255];
      for (let i = 0, p = 0; i < alpha.length; i++, p += 4) {
        const a = alpha[i], k = 255 - a;
        dst[p] = (src[p] * a + r * k + 127) / 255; dst[p + 1] = (src[p + 1] * a + g * k + 127) / 255;
        dst[p + 2] = (src[p + 2] * a + b * k + 127) / 255; dst[p + 3] = 255;
      }
    } else if (bg) {  // blur, picture
      for (let i = 0, p = 0; i < alpha.length; i++, p += 4) {
        const a = alpha[i], k = 255 - a;
        dst[p] = (src[p] * a + bg[p] * k + 127) / 255; dst[p + 1] = (src[p + 1] * a + bg[p + 1] * k + 127) / 255;
        dst[p + 2] = (src[p + 2] * a + bg[p + 2] * k + 127) / 255; dst[p + 3] = 255;
      }
    } else {  // cut-out (over the page's checkerboard)
      dst.set(src);
      for (let i = 0, p = 3; i < alpha.length; i++, p += 4) dst[p] = alpha[i];
    }
    if (ui.out.width !== w || ui.out.height !== h) [ui.out.width, ui.out.height] = [w, h];
    ui.out.getContext("2d").putImageData(out, 0, 0);
  }

  function onMessage(event) {
    if (typeof event.data === "string") {
      const msg = JSON.parse(event.data);
      if (msg.type === "ready") {
        state.interval = 1000 / (msg.max_fps || 30) * 1.02;
        state.framePixels = msg.frame_pixels || 0;
        optionsChanged();  // the feather is sent at the scale of the frames
        state.started = performance.now();
        pump();
      } else if (msg.type === "frame") {
        state.meta = msg;
        state.dropped = msg.dropped;
      } else if (msg.type === "dropped") {  // the frame in flight was refused (frame-rate cap, busy server)
        state.dropped = msg.dropped;
        state.inFlight = null;
        pump();
      }
      return;
    }
    const now = performance.now();
    const sent = state.inFlight;
    const meta = state.meta;
    state.inFlight = state.meta = null;
    if (sent && !state.next) state.late += 1;
    pump();  // the next frame goes out at once, before this one is drawn
    if (!sent || !meta) return;
    const rtt = now - sent.sentAt;
    state.rttMs = average(state.rttMs, rtt);
    state.rtts.push(rtt);
    state.ages.push(now - sent.capturedAt);
    if (state.rtts.length > 600) state.rtts.shift();
    if (state.ages.length > 600) state.ages.shift();
    state.drawing = state.drawing.then(async () => {
      let alpha = await inflate(event.data);
      if (!state.running) return;
      const { width: w, height: h } = sent.frame;
      if (alpha.length !== meta.width * meta.height || meta.width > w || meta.height > h) {
        throw new Error(`the server's matte is ${meta.width}x${meta.height}, the frame ${w}x${h}`);
      }
      if (meta.width !== w || meta.height !== h) alpha = upscale(alpha, meta.width, meta.height, w, h);
      draw(sent.frame, alpha);
      state.frames += 1;
      if (state.frames % 10 === 0) {
        const s = summary();
        ui.stats.textContent = `${s.fps.toFixed(1)} frames/s · round trip ${Math.round(s.rtt_p50_ms)} ms ` +
          `(p95 ${Math.round(s.rtt_p95_ms)}) · ${s.dropped} dropped`;
      }
    }).catch((err) => { showError(`Cannot draw the camera's result: ${err.message || err}`); stop(); });
  }

  // ---------------------------------------------------------------- start and stop

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
    const options = serverOptions();
    const query = new URLSearchParams({ reply: "alpha", ...options });
    const key = sessionStorage.getItem("cleancut-api-key");
    if (key) query.set("api_key", key);
    state.ws = new WebSocket(`${proto}//${location.host}/api/stream?${query}`);
    state.ws.binaryType = "arraybuffer";
    state.ws.onmessage = onMessage;
    state.ws.onclose = (event) => {
      if (state.running && event.code !== 1000) showError(`The server closed the stream (${event.code}) ${event.reason || ""}`);
      stop();
    };
    Object.assign(state, { running: true, inFlight: null, next: null, encoding: false, meta: null, rtts: [],
                           ages: [], frames: 0, dropped: 0, late: 0, rttMs: 0, encodeMs: 0,
                           started: performance.now(), lastSent: 0, drawing: Promise.resolve(),
                           sentOptions: JSON.stringify(options) });
    ui.frame.hidden = false;
    ui.toggle.textContent = "Stop camera";
    ui.record.disabled = false;
    showIgnored();
  }

  function stop() {
    if (state.recorder && state.recorder.state !== "inactive") state.recorder.stop();
    state.running = false;
    clearTimeout(state.timer);
    if (state.ws && state.ws.readyState <= WebSocket.OPEN) state.ws.close(1000);
    if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
    state.stream = null;
    ui.toggle.textContent = "Start camera";
    ui.record.disabled = true;
    ui.record.textContent = "Record";
    showIgnored();
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
  ui.smooth.addEventListener("change", optionsChanged);
  document.addEventListener("cleancut:options", optionsChanged);  // every option change, swatches included
})();
