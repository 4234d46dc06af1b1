// sensorium's live view: no framework, no network beyond this server.
"use strict";

// A token given in the page's address (`?access_token=...`) is sent on every request.
const TOKEN = new URLSearchParams(location.search).get("access_token");
function withToken(url) {
  return TOKEN ? url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(TOKEN) : url;
}
function $(id) { return document.getElementById(id); }
function fmt(v, digits) { return v === null || v === undefined ? "-" : Number(v).toFixed(digits); }
function setState(el, state) {
  el.textContent = state;
  el.className = "badge state-" + state;
}

// ---- index ----
function sensoriumIndex() {
  $("api").href = withToken("/api/streams");
  async function refresh() {
    try {
      const r = await fetch(withToken("/api/streams"));
      const body = await r.json();
      const tbody = document.querySelector("#streams tbody");
      tbody.replaceChildren(...body.streams.map(s => {
        const tr = document.createElement("tr");
        const link = `<a href="${withToken("/streams/" + encodeURIComponent(s.stream))}"></a>`;
        tr.innerHTML = `<td>${link}</td><td><span class="badge state-${s.state}"></span></td>` +
          `<td>${fmt(s.fps_in, 1)}</td><td>${fmt(s.fps_out, 1)}</td>` +
          `<td>${fmt(s.latency_p50_ms, 0)} / ${fmt(s.latency_p95_ms, 0)} ms</td>` +
          `<td>${s.windows ?? 0}</td><td>${s.dropped ?? 0}</td><td>${s.reconnects ?? 0}</td>` +
          `<td class="error"></td>`;
        tr.querySelector("a").textContent = s.stream;
        tr.querySelector(".badge").textContent = s.state;
        tr.querySelector(".error").textContent = s.error || "";
        return tr;
      }));
    } catch (e) { /* the server is restarting: try again */ }
  }
  refresh();
  setInterval(refresh, 1000);
}

// ---- stream page ----
const SPAN_S = 6;                 // seconds of stream time on the timeline
const MEL_RAMP = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
  [245, 125, 21], [250, 193, 39], [252, 255, 164]];   // inferno-like
function ramp(v) {
  const x = v / 255 * (MEL_RAMP.length - 1), i = Math.min(Math.floor(x), MEL_RAMP.length - 2);
  const f = x - i, a = MEL_RAMP[i], b = MEL_RAMP[i + 1];
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
}

function sensoriumStream() {
  const name = decodeURIComponent(location.pathname.split("/")[2] || "");
  document.title = "sensorium · " + name;
  $("name").textContent = name;
  $("home").href = withToken("/");
  const view = window.sensoriumView = {
    frames: 0, windows: 0, tokens: 0, liveTokens: 0, liveDone: false, melDrawn: 0,
    state: "connecting", history: [],
  };
  const strip = $("strip").getContext("2d"), axis = $("axis").getContext("2d");
  const spec = $("spectrogram").getContext("2d");
  const W = $("strip").width;
  let latestEnd = 0, lastDropped = null;

  function x(t) { return W - (latestEnd - t) / 1e9 / SPAN_S * W; }

  function drawTimeline() {
    strip.fillStyle = "#000"; strip.fillRect(0, 0, W, 72);
    spec.fillStyle = "#000"; spec.fillRect(0, 0, W, 80);
    axis.fillStyle = "#0d1117"; axis.fillRect(0, 0, W, 16);
    const from = latestEnd - SPAN_S * 1e9;
    let nextFree = -Infinity;
    for (const h of view.history) {
      if (h.t + h.duration < from) continue;
      const x0 = x(h.t), w = Math.max(1, h.duration / 1e9 / SPAN_S * W);
      if (h.mel) spec.drawImage(h.mel, x0, 0, w, 80);
      // Thumbnails at their frame's time, none overlapping; a tick for every frame.
      if (h.img && x0 >= nextFree) {
        // The newest thumbnail ends at the right edge rather than being cut off by it.
        const tw = 62 * (h.width / Math.max(1, h.height));
        const at = Math.max(nextFree, Math.min(x0, W - tw));
        strip.drawImage(h.img, at, 0, tw, 62);
        nextFree = at + tw + 2;
      }
      strip.fillStyle = h.has_video ? "#1f6feb" : "#30363d";
      strip.fillRect(x0, 68, Math.max(1, w - 1), 4);
    }
    axis.fillStyle = "#8b949e"; axis.font = "10px sans-serif";
    for (let s = Math.ceil(from / 1e9); s <= latestEnd / 1e9; s++) {
      const xs = x(s * 1e9);
      axis.fillRect(xs, 0, 1, 5);
      axis.fillText(s + " s", xs + 2, 13);
    }
  }

  function onFrame(f) {
    view.frames++;
    if (f.jpeg) $("frame").src = "data:image/jpeg;base64," + f.jpeg;
    $("frameinfo").textContent = `frame ${f.index} · t = ${(f.t / 1e9).toFixed(2)} s · ` +
      (f.has_video ? `${f.width}x${f.height}` : "no picture") + (f.has_audio ? " · sound" : " · no sound");
    const h = { t: f.t, duration: f.duration, has_video: f.has_video, width: f.width, height: f.height };
    if (f.jpeg) { h.img = new Image(); h.img.src = "data:image/jpeg;base64," + f.jpeg; h.img.onload = drawTimeline; }
    if (f.mel && f.mel_cols > 0) {
      const bytes = Uint8Array.from(atob(f.mel), c => c.charCodeAt(0));
      const c = document.createElement("canvas");
      c.width = f.mel_cols; c.height = f.n_mels;
      const cx = c.getContext("2d"), img = cx.createImageData(f.mel_cols, f.n_mels);
      for (let m = 0; m < f.n_mels; m++) {
        for (let t = 0; t < f.mel_cols; t++) {
          const [r, g, b] = ramp(bytes[m * f.mel_cols + t]);
          const o = ((f.n_mels - 1 - m) * f.mel_cols + t) * 4;   // low bands at the bottom
          img.data[o] = r; img.data[o + 1] = g; img.data[o + 2] = b; img.data[o + 3] = 255;
        }
      }
      cx.putImageData(img, 0, 0);
      h.mel = c;
      view.melDrawn++;
    }
    view.history.push(h);
    latestEnd = Math.max(latestEnd, f.t + f.duration);
    while (view.history.length && view.history[0].t + view.history[0].duration < latestEnd - SPAN_S * 1e9) {
      view.history.shift();
    }
    const pct = db => Math.max(0, Math.min(100, (db + 60) / 60 * 100));
    $("level").style.height = pct(f.level_db) + "%";
    $("peak").style.bottom = pct(f.peak_db) + "%";
    $("leveltext").textContent = `level ${fmt(f.level_db, 1)} dBFS · peak ${fmt(f.peak_db, 1)} dBFS`;
    drawTimeline();
  }

  function onWindow(w) {
    view.windows++;
    const tbody = document.querySelector("#windows tbody");
    const tr = document.createElement("tr");
    const cells = w.valid.map((valid, i) => {
      if (!valid) return '<span class="pad" title="padding">·</span>';
      const v = w.has_video[i], a = w.has_audio[i];
      const cls = v && a ? "va" : v ? "v" : a ? "a" : "none";
      return `<span class="${cls}" title="frame ${i}">${v ? "V" : ""}${a ? "A" : ""}${!v && !a ? "-" : ""}</span>`;
    }).join("");
    const dropped = lastDropped === null ? "-" : String(Math.max(0, (view.dropped ?? 0) - lastDropped));
    lastDropped = view.dropped ?? 0;
    tr.innerHTML = `<td>${w.index}</td><td>${(w.t_start / 1e9).toFixed(2)} – ${(w.t_end / 1e9).toFixed(2)}</td>` +
      `<td class="mask">${cells}</td><td>${w.frames}/${w.valid.length}</td><td>${dropped}</td>` +
      `<td>${fmt(w.latency_ms, 1)}</td>`;
    tbody.prepend(tr);
    while (tbody.children.length > 12) tbody.lastChild.remove();
  }

  // Scheduled answers, token by token.
  const pending = new Map();
  function answerItem(window, question) {
    const key = window + "\u0000" + question;
    let li = pending.get(key);
    if (!li) {
      li = document.createElement("li");
      li.innerHTML = `<span class="q"></span> <span class="a pending"></span>`;
      li.querySelector(".q").textContent = `#${window} ${question} →`;
      $("answers").prepend(li);
      pending.set(key, li);
      while ($("answers").children.length > 40) $("answers").lastChild.remove();
    }
    return [key, li];
  }
  function onToken(t) {
    view.tokens++;
    const [, li] = answerItem(t.window, t.question);
    li.querySelector(".a").textContent += t.text;
  }
  function onAnswer(a) {
    const [key, li] = answerItem(a.window, a.question);
    const el = li.querySelector(".a");
    el.textContent = a.answer;
    el.classList.remove("pending");
    pending.delete(key);
  }

  function onHealth(h) {
    view.state = h.state;
    view.dropped = h.dropped;
    setState($("state"), h.state);
    $("h-state").textContent = h.state + (h.state_for_s !== undefined ? ` (${fmt(h.state_for_s, 0)} s)` : "");
    $("h-fps").textContent = `${fmt(h.fps_in, 1)} / ${fmt(h.fps_out, 1)}`;
    $("h-latency").textContent = `${fmt(h.latency_p50_ms, 1)} / ${fmt(h.latency_p95_ms, 1)} ms`;
    $("h-windows").textContent = h.windows ?? 0;
    $("h-dropped").textContent = h.dropped ?? 0;
    $("h-reconnects").textContent = h.reconnects ?? 0;
    $("h-errors").textContent = h.source_errors ?? 0;
    $("h-error").textContent = h.error || "-";
    $("h-viewer").textContent = h.viewer_dropped ?? 0;
  }

  const es = new EventSource(withToken(`/api/streams/${encodeURIComponent(name)}/events`));
  const on = (kind, f) => es.addEventListener(kind, e => f(JSON.parse(e.data)));
  on("frame", onFrame);
  on("window", onWindow);
  on("token", onToken);
  on("answer", onAnswer);
  on("health", onHealth);

  // Live questions: POST /ask, its server-sent events read as they arrive.
  $("ask").addEventListener("submit", async ev => {
    ev.preventDefault();
    const question = $("question").value.trim();
    if (!question) return;
    const live = $("live");
    live.innerHTML = `<span class="q"></span> <span class="a pending"></span>`;
    live.querySelector(".q").textContent = question + " →";
    const out = live.querySelector(".a");
    view.liveTokens = 0; view.liveDone = false; view.liveSteps = [];
    const headers = { "Content-Type": "application/json" };
    if (TOKEN) headers.Authorization = "Bearer " + TOKEN;
    try {
      const r = await fetch("/ask", { method: "POST", headers, body: JSON.stringify({ question, stream: name }) });
      if (!r.ok) {
        const e = await r.json().catch(() => ({ error: r.statusText }));
        out.textContent = "error: " + e.error; out.className = "a error"; view.liveDone = true;
        return;
      }
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
          let kind = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) kind = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (!data) continue;
          const msg = JSON.parse(data);
          if (kind === "message") {
            view.liveTokens++;
            out.textContent += msg.text;
            view.liveSteps.push(out.textContent);
          } else if (kind === "answer") {
            out.textContent = msg.answer; out.classList.remove("pending");
          } else if (kind === "error") {
            out.textContent += " [error: " + msg.error + "]"; out.className = "a error";
          }
        }
      }
    } catch (e) {
      out.textContent += " [connection lost]";
    }
    view.liveDone = true;
  });
}
