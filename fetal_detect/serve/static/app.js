// fetal-detect page: upload -> POST api/v1/analyze -> draw the frame and the overlay on a canvas.
// No external assets: the overlay (ellipse, calipers, boxes) is drawn here from the JSON primitives.
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = { ellipse: "#50dc50", axis: "#ffdc00", caliper: "#ffdc00", box: "#00dcff", ruler: "#ff9f1a" };
const SOURCES = { user: "given", dicom: "from DICOM", ruler: "calibrated from the on-screen ruler" };
const UNITS = [["_mm", "mm"], ["_px", "px"], ["_weeks", "weeks"], ["_deg", "°"]];
const LABELS = { hc: "HC", bpd: "BPD", ofd: "OFD", ga: "GA", nt: "NT", crl: "CRL", hc_uncalibrated: "HC (uncalibrated)" };
const ON_IMAGE = ["hc", "bpd", "ofd", "nt", "crl", "ga"]; // written on the image; the table lists everything
const HIDDEN = ["pixel_size_mm"]; // shown under Details instead
let last = null; // { report, stem }

function setState(state, text) {
  document.body.dataset.state = state;
  $("state").textContent = text;
}

async function analyze(file) {
  if (!file) return;
  setState("busy", `Analysing ${file.name} …`);
  const form = new FormData();
  form.append("file", file);
  form.append("task", $("task").value);
  if ($("pixel").value.trim()) form.append("pixel_size_mm", $("pixel").value.trim());
  form.append("include_image", "true");
  const headers = {};
  const key = $("apikey").value.trim();
  if (key) headers["X-API-Key"] = key;
  let res, body;
  try {
    res = await fetch("api/v1/analyze", { method: "POST", body: form, headers });
    body = await res.json();
  } catch (err) {
    setState("error", `The server did not answer (${err.message}).`);
    return;
  }
  if (!res.ok) {
    const retry = res.headers.get("Retry-After");
    setState("error", `Error ${res.status}: ${body.error || "unknown"}` + (retry ? ` (retry in ${retry} s)` : ""));
    return;
  }
  try {
    await render(body, file.name.replace(/\.[^.]*$/, "") || "upload");
  } catch (err) {
    setState("error", `Cannot show the result (${err.message}).`);
  }
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("frame image unreadable"));
    img.src = src;
  });
}

async function render(body, stem) {
  const frame = body.frame_png;
  const report = Object.assign({}, body);
  delete report.frame_png;
  last = { report, stem };
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const img = await loadImage(frame);
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  ctx.drawImage(img, 0, 0);
  drawOverlay(ctx, report);
  fillMeasurements(report);
  fillFacts(report);
  $("message").textContent = report.reason || "";
  $("result").hidden = false;
  const n = Object.keys(report.measurements || {}).filter((k) => !HIDDEN.includes(k)).length;
  setState("done", report.status === "ok" ? `Done: ${n} measurement(s) in ${report.processing_ms} ms.`
                                         : `Done: nothing measurable found (${report.status}).`);
}

function drawOverlay(ctx, report) {
  const ov = report.overlay || {};
  const lw = Math.max(1.5, ctx.canvas.width / 400);
  ctx.lineWidth = lw;
  const e = ov.ellipse;
  if (e) {
    const t = (e.angle_deg * Math.PI) / 180;
    ctx.strokeStyle = COLORS.ellipse;
    ctx.beginPath();
    ctx.ellipse(e.cx, e.cy, e.a, e.b, t, 0, 2 * Math.PI);
    ctx.stroke();
  }
  for (const o of ov.outlines || []) { // closed traces, e.g. the NT band
    if (o.points.length < 3) continue;
    ctx.strokeStyle = COLORS.ellipse;
    ctx.beginPath();
    o.points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.closePath();
    ctx.stroke();
  }
  ctx.strokeStyle = COLORS.caliper;
  for (const { points: [[x1, y1], [x2, y2]] } of ov.calipers || []) { // BPD/OFD, NT, Vp: on-to-on bars
    line(ctx, x1, y1, x2, y2);
    const n = Math.hypot(x2 - x1, y2 - y1) || 1;
    const px = (-(y2 - y1) / n) * 4 * lw, py = ((x2 - x1) / n) * 4 * lw;
    for (const [x, y] of [[x1, y1], [x2, y2]]) line(ctx, x - px, y - py, x + px, y + py);
  }
  ctx.strokeStyle = COLORS.ruler;
  for (const [x, y] of ov.ruler_ticks || []) { // the depth-ruler ticks the pixel size came from
    ctx.beginPath();
    ctx.arc(x, y, 3 * lw, 0, 2 * Math.PI);
    ctx.stroke();
  }
  ctx.font = `${Math.round(6 * lw + 6)}px sans-serif`;
  for (const b of ov.boxes || []) {
    const [x1, y1, x2, y2] = b.box_xyxy;
    ctx.strokeStyle = ctx.fillStyle = COLORS.box;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.fillText(`${b.name} ${Number(b.confidence).toFixed(2)}`, x1, Math.max(12, y1 - 4));
  }
  const lines = Object.entries(report.measurements || {})
    .filter(([k, v]) => typeof v === "number" && ON_IMAGE.includes(baseOf(k)))
    .map(([k, v]) => `${label(k)} ${v.toFixed(1)} ${unitOf(k, report)}`);
  const size = Math.max(12, Math.round(ctx.canvas.width / 40));
  ctx.font = `bold ${size}px sans-serif`;
  lines.forEach((text, i) => {
    const y = (i + 1) * (size + 4);
    ctx.lineWidth = 3;
    ctx.strokeStyle = "#000";
    ctx.strokeText(text, 8, y);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, 8, y);
  });
}

function line(ctx, x1, y1, x2, y2) {
  ctx.beginPath();
  ctx.moveTo(x1, y1);
  ctx.lineTo(x2, y2);
  ctx.stroke();
}

function unitOf(key, report) {
  if (report.units && report.units[key]) return report.units[key];
  const hit = UNITS.find(([suffix]) => key.endsWith(suffix));
  return hit ? hit[1] : "";
}

function baseOf(key) {
  return key.replace(/_(mm|px|weeks|deg)$/, "");
}

function label(key) {
  const base = baseOf(key);
  return LABELS[base] || base.replace(/_/g, " ");
}

function fillMeasurements(report) {
  const tbody = $("measurements").tBodies[0];
  tbody.replaceChildren();
  for (const [key, value] of Object.entries(report.measurements || {})) {
    if (HIDDEN.includes(key)) continue;
    const tr = tbody.insertRow();
    tr.dataset.key = key;
    tr.insertCell().textContent = label(key);
    const v = tr.insertCell();
    v.className = "value";
    v.textContent = typeof value === "number" ? value.toFixed(2) : String(value ?? "–");
    tr.insertCell().textContent = unitOf(key, report);
  }
}

function fillFacts(report) {
  const im = report.image || {};
  const q = report.image_quality || {};
  const facts = [
    ["status", report.status],
    ["measurements", (report.measurers || []).join(" + ") || "–"],
    ["plane", report.plane ? `${report.plane} (${fmt(report.plane_confidence)})` : "–"],
    ["quality", fmt(report.quality)],
    ["image quality", fmt(q.score)],
    ["image", `${im.width} × ${im.height} px, ${im.format}` + (im.frames > 1 ? `, frame ${im.frame_index + 1} of ${im.frames}` : "")],
    ["pixel size", report.pixel_size_mm ? `${fmt(report.pixel_size_mm, 4)} mm (${SOURCES[report.pixel_size_source] ?? report.pixel_size_source})`
                                    : "none: lengths in px"],
    ["calibration", report.pixel_size_detail || "–"],
    ["detections", String((report.overlay?.boxes || []).length)],
    ...planeFacts(report.results?.nt?.details || {}),
    ["models", Object.entries(report.models || {}).map(([t, m]) => `${t}: ${m.weights} (${m.backend})`).join("; ") || "–"],
    ["version", report.version],
    ["processing", `${report.processing_ms} ms`],
  ];
  const dl = $("facts");
  dl.replaceChildren();
  for (const [k, v] of facts) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v ?? "–";
    dd.dataset.fact = k;
    dl.append(dt, dd);
  }
}

function planeFacts(details) { // NT: the plane check, as in the CLI, batch and API
  if (details.plane_ok === undefined || details.plane_ok === null) return [];
  return [["plane check", (details.plane_ok ? "ok" : "doubtful") + ` (score ${fmt(details.plane_score, 2)})`],
          ["missing", (details.missing || []).length ? details.missing.join(", ") : "none"]];
}

function fmt(v, digits = 3) {
  return typeof v === "number" ? v.toFixed(digits) : "–";
}

function csvOf(report, stem) {
  const row = {
    file: stem, status: report.status, reason: report.reason, measurers: (report.measurers || []).join("+"),
    plane: report.plane, plane_confidence: report.plane_confidence, ...report.measurements, quality: report.quality,
    image_quality: report.image_quality?.score, pixel_size_mm: report.pixel_size_mm,
    pixel_size_source: report.pixel_size_source, frame_index: report.image?.frame_index,
    detections: (report.overlay?.boxes || []).length, plane_ok: report.results?.nt?.details?.plane_ok,
    missing: (report.results?.nt?.details?.missing || []).join(";"), plane_score: report.results?.nt?.details?.plane_score,
    processing_ms: report.processing_ms,
    models: Object.entries(report.models || {}).map(([t, m]) => `${t}=${m.weights}/${m.backend}`).join(";"),
    version: report.version,
  };
  const cell = (v) => {
    const s = v === null || v === undefined ? "" : String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return Object.keys(row).map(cell).join(",") + "\n" + Object.values(row).map(cell).join(",") + "\n";
}

function download(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

async function loadMeasurers() { // the task list is the server's measurer table
  try {
    const res = await fetch("measurers");
    if (!res.ok) return;
    const table = await res.json();
    const select = $("task");
    for (const m of table.measurers) {
      const opt = document.createElement("option");
      opt.value = m.name;
      opt.textContent = `${m.name}: ${m.description}`;
      select.append(opt);
    }
  } catch (err) {
    // no table: auto still works
  }
}

function wire() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => analyze(e.target.files[0]));
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => analyze(e.dataTransfer.files[0]));
  $("dl-json").addEventListener("click", () => last && download(
    new Blob([JSON.stringify(last.report, null, 2)], { type: "application/json" }), `${last.stem}.json`));
  $("dl-csv").addEventListener("click", () => last && download(
    new Blob([csvOf(last.report, last.stem)], { type: "text/csv" }), `${last.stem}.csv`));
  $("dl-png").addEventListener("click", () => last && $("canvas").toBlob(
    (blob) => download(blob, `${last.stem}-overlay.png`), "image/png"));
  loadMeasurers().finally(() => { document.body.dataset.state = "ready"; });
}

wire();
