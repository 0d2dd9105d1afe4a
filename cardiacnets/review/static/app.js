/* cardiacnets review: cine players, background-job progress, reader-study autosave.
   Plain JavaScript, no dependencies; the pages work without it except for these. */
"use strict";

// Every POST carries the page's CSRF token (the server refuses state changes without it).
function csrfToken() {
  const meta = document.querySelector("meta[name=csrf-token]");
  return meta ? meta.content : "";
}

/* ---------------------------------------------------------------- cine player */

// A cine is a PNG sprite sheet (frames side by side). The server sends the frame
// count and frame time in X-Frames / X-Frame-Ms headers; data attributes are the
// fallback. The figure's data-frame attribute always holds the frame shown.
function startCine(figure) {
  const canvas = figure.querySelector("canvas");
  const toggle = figure.querySelector(".cine-toggle");
  const slider = figure.querySelector(".cine-frame");
  const label = figure.querySelector(".cine-label");
  const ctx = canvas.getContext("2d");
  let frames = parseInt(figure.dataset.frames || "0", 10);
  let frameMs = parseFloat(figure.dataset.frameMs || "40");
  let frame = 0, playing = true, timer = null, image = null;

  function draw() {
    if (!image) return;
    const w = image.naturalWidth / frames, h = image.naturalHeight;
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    ctx.drawImage(image, frame * w, 0, w, h, 0, 0, w, h);
    figure.dataset.frame = String(frame);
    if (slider) slider.value = String(frame);
    if (label) label.textContent = "frame " + (frame + 1) + "/" + frames;
  }
  function schedule() {
    clearInterval(timer);
    if (playing) timer = setInterval(function () { frame = (frame + 1) % frames; draw(); }, Math.max(20, frameMs));
  }
  fetch(figure.dataset.sprite, { credentials: "same-origin" }).then(function (response) {
    if (!response.ok) throw new Error("HTTP " + response.status);
    frames = parseInt(response.headers.get("X-Frames") || String(frames), 10);
    frameMs = parseFloat(response.headers.get("X-Frame-Ms") || String(frameMs));
    return response.blob();
  }).then(function (blob) {
    image = new Image();
    image.onload = function () {
      if (slider) slider.max = String(frames - 1);
      figure.classList.add("loaded");
      draw();
      schedule();
    };
    image.src = URL.createObjectURL(blob);
  }).catch(function (err) {
    figure.classList.add("failed");
    if (label) label.textContent = "could not load the cine (" + err.message + ")";
  });
  if (toggle) toggle.addEventListener("click", function () {
    playing = !playing;
    toggle.textContent = playing ? "Pause" : "Play";
    schedule();
  });
  if (slider) slider.addEventListener("input", function () {
    playing = false;
    if (toggle) toggle.textContent = "Play";
    schedule();
    frame = parseInt(slider.value, 10);
    draw();
  });
}

function cineFigure(url, caption, synthetic) {
  const figure = document.createElement("figure");
  figure.className = "cine" + (synthetic ? " synthetic" : "");
  figure.dataset.sprite = url;
  figure.innerHTML =
    '<div class="cine-stage"><canvas width="192" height="192"></canvas>' +
    (synthetic ? '<span class="synthetic-badge">SYNTHETIC</span>' : "") + "</div>" +
    '<figcaption></figcaption><div class="cine-controls"><button type="button" class="cine-toggle">Pause</button>' +
    '<input type="range" class="cine-frame" min="0" max="0" value="0" aria-label="frame">' +
    '<span class="cine-label"></span><a class="hint">GIF</a></div>';
  figure.querySelector("figcaption").textContent = caption;
  figure.querySelector("canvas").setAttribute("aria-label", caption);
  figure.querySelector("a.hint").href = url.replace(/\.png$/, ".gif");
  return figure;
}

/* ---------------------------------------------------------------- background jobs */

function showJob(box, job) {
  const bar = box.querySelector(".job-progress");
  const message = box.querySelector(".job-message");
  if (job.progress === null || job.progress === undefined) bar.removeAttribute("value");
  else { bar.max = 1; bar.value = job.progress; }
  let text = job.message || job.state;
  if (job.state === "queued" && job.queue_position) text = "queued (" + job.queue_position + " ahead)";
  if (job.state === "running" && job.elapsed_s) text += " · " + job.elapsed_s.toFixed(0) + " s";
  message.textContent = text;
  box.dataset.state = job.state;
}

function finishJob(box, readyUrl) {
  if (box.classList.contains("cine-job")) {
    const figure = cineFigure(readyUrl, box.dataset.caption, box.dataset.synthetic === "1");
    box.replaceWith(figure);
    startCine(figure);
  } else {
    fetch(readyUrl, { credentials: "same-origin" }).then(function (r) { return r.text(); }).then(function (html) {
      const holder = document.createElement("div");
      holder.innerHTML = html;  // server-rendered, escaped by the template engine
      box.replaceWith(holder);
    });
  }
}

function runJob(box) {
  fetch(box.dataset.startUrl, { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrfToken() } })
    .then(function (r) { return r.json(); })
    .then(function (job) {
      if (job.error) throw new Error(job.error);
      const readyUrl = job.ready_url;
      function poll(current) {
        showJob(box, current);
        if (current.state === "done") { finishJob(box, readyUrl); return; }
        if (current.state === "failed") { box.classList.add("failed"); return; }
        setTimeout(function () {
          fetch("/api/jobs/" + current.job_id, { credentials: "same-origin" })
            .then(function (r) { return r.json(); }).then(poll)
            .catch(function () { setTimeout(function () { poll(current); }, 2000); });
        }, 500);
      }
      poll(job);
    })
    .catch(function (err) {
      box.classList.add("failed");
      box.querySelector(".job-message").textContent = "failed: " + err.message;
    });
}

function watchPreparation(box) {
  function poll() {
    fetch(box.dataset.statusUrl, { credentials: "same-origin" }).then(function (r) { return r.json(); })
      .then(function (s) {
        const bar = box.querySelector(".job-progress");
        bar.max = 1; bar.value = s.fraction;
        box.querySelector(".job-message").textContent =
          s.ready + " of " + s.total + " ready" + (s.failed ? " · " + s.failed + " failed (see the server log)" : "");
        if (s.done) window.location.href = box.dataset.doneUrl;
        else setTimeout(poll, 1000);
      }).catch(function () { setTimeout(poll, 3000); });
  }
  poll();
}

/* ---------------------------------------------------------------- reader-study autosave */

function setupReading(form) {
  const state = document.getElementById("save-state");
  const url = form.dataset.autosaveUrl;
  const visit = form.dataset.visit;
  const activeInput = form.querySelector("input[name=active_ms]");
  let activeMs = 0, since = document.visibilityState === "visible" ? performance.now() : null;
  let chain = Promise.resolve();
  let textTimer = null, submitting = false;

  function active() {
    const now = performance.now();
    if (since !== null) { activeMs += now - since; since = now; }
    return Math.round(activeMs);
  }
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") since = performance.now();
    else { active(); since = null; send({}); }
  });

  // "saved" is shown only when no edit is waiting or in flight.
  let pending = 0, failed = false;
  function showState() {
    if (failed) return;
    state.textContent = pending ? "saving…" : "saved";
    state.dataset.state = pending ? "saving" : "saved";
  }
  function send(answer) {
    const counted = Object.keys(answer).length > 0;
    const body = JSON.stringify({ answer: answer, visit: visit, active_ms: active() });
    if (counted) { pending += 1; showState(); }
    chain = chain.then(function () {
      return fetch(url, { method: "POST", credentials: "same-origin", keepalive: true,
                          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() }, body: body })
        .then(function (r) { return r.json().then(function (data) { return { ok: r.ok, data: data }; }); })
        .then(function (result) {
          if (!result.ok) { failed = true; state.textContent = "not saved: " + result.data.error; state.dataset.state = "error"; }
          else if (counted) failed = false;
        })
        .catch(function () { failed = true; state.textContent = "not saved: no connection"; state.dataset.state = "error"; })
        .then(function () { if (counted) { pending -= 1; showState(); } });
    });
    return chain;
  }

  if (form.dataset.locked) return;
  form.addEventListener("change", function (event) {
    const input = event.target;
    if (!input.name || input.type === "hidden" || input.name === "free_text") return;
    const answer = {}; answer[input.name] = input.value;
    send(answer);
  });
  const text = form.querySelector("textarea[name=free_text]");
  let savedText = text ? text.value : "";
  if (text) text.addEventListener("input", function () {
    if (textTimer === null) { pending += 1; showState(); }  // typing counts as an unsaved edit
    clearTimeout(textTimer);
    textTimer = setTimeout(function () {
      textTimer = null;
      pending -= 1;
      savedText = text.value;
      send({ free_text: text.value });
    }, 400);
  });
  form.addEventListener("submit", function () { submitting = true; activeInput.value = String(active()); });
  setInterval(function () { send({}); }, 15000);  // reading time survives a crash
  window.addEventListener("pagehide", function () {
    // Unsaved typing (closed within the debounce) and the reading time go out with the page.
    const answer = (!submitting && text && text.value !== savedText) ? { free_text: text.value } : {};
    const body = JSON.stringify({ answer: answer, visit: visit, active_ms: active() });
    // A keepalive fetch outlives the page like sendBeacon, and can carry the CSRF header.
    fetch(url, { method: "POST", credentials: "same-origin", keepalive: true,
                 headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() }, body: body })
      .catch(function () {});
  });
}

/* ---------------------------------------------------------------- start */

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("figure.cine[data-sprite]").forEach(startCine);
  document.querySelectorAll(".job[data-start-url]").forEach(runJob);
  document.querySelectorAll(".study-preparation").forEach(watchPreparation);
  const reading = document.getElementById("reading-form");
  if (reading) setupReading(reading);
  const upload = document.getElementById("upload-form");
  if (upload) upload.addEventListener("submit", function () {
    document.getElementById("upload-status").textContent = "Uploading and reading the file…";
  });
});
