// facegate demo page: verify two photos, identify one against a collection.
// Plain JS, no build step. The API key lives in sessionStorage (this tab only).
"use strict";

const KEY_STORAGE = "facegate.apiKey";
let info = { auth_enabled: true, api_key_header: "X-API-Key" };
const $ = (id) => document.getElementById(id);

function apiKey() { return sessionStorage.getItem(KEY_STORAGE) || ""; }

function headers() {
  const h = {};
  if (info.auth_enabled && apiKey()) h[info.api_key_header] = apiKey();
  return h;
}

async function call(method, path, body) {
  const resp = await fetch(path, { method, headers: headers(), body });
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (!resp.ok) {
    const err = (data && data.error) || { code: "http_" + resp.status, message: resp.statusText, request_id: "-" };
    throw err;
  }
  return data;
}

function showError(el, err) {
  el.className = "result error";
  el.textContent = "";
  const b = document.createElement("b");
  b.textContent = err.code;
  el.append(b, ": " + err.message + " (request " + err.request_id + ")");
  el.dataset.code = err.code;
}

// --- drawing -------------------------------------------------------------------------------------------
const images = {};  // canvas id -> {img, scale}

function loadInto(canvasId, file) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const canvas = $(canvasId);
      const maxW = canvas.id === "canvas3" ? 480 : 360;
      const scale = Math.min(1, maxW / img.naturalWidth, 480 / img.naturalHeight);
      canvas.width = Math.round(img.naturalWidth * scale);
      canvas.height = Math.round(img.naturalHeight * scale);
      images[canvasId] = { img, scale };
      redraw(canvasId, []);
      resolve();
    };
    img.onerror = () => reject(new Error("the browser cannot display this file"));
    img.src = URL.createObjectURL(file);
  });
}

function redraw(canvasId, faces) {
  const entry = images[canvasId];
  const canvas = $(canvasId);
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!entry) return;
  ctx.drawImage(entry.img, 0, 0, canvas.width, canvas.height);
  const s = entry.scale;
  for (const f of faces) {
    const [x, y, w, h] = f.bbox;
    ctx.lineWidth = f.used ? 3 : 1.5;
    ctx.strokeStyle = f.color || (f.used ? "#22c55e" : "#cccccc");
    ctx.strokeRect(x * s, y * s, w * s, h * s);
    if (f.landmarks) {
      ctx.fillStyle = ctx.strokeStyle;
      for (const [lx, ly] of f.landmarks) {
        ctx.beginPath();
        ctx.arc(lx * s, ly * s, 2.5, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    if (f.label) {
      ctx.font = "13px system-ui, sans-serif";
      const tw = ctx.measureText(f.label).width + 6;
      ctx.fillStyle = ctx.strokeStyle;
      ctx.fillRect(x * s, Math.max(0, y * s - 17), tw, 17);
      ctx.fillStyle = "#000";
      ctx.fillText(f.label, x * s + 3, Math.max(12, y * s - 4));
    }
  }
}

function sameBox(a, b) { return a.bbox.every((v, i) => Math.abs(v - b.bbox[i]) < 0.5); }

// --- verify --------------------------------------------------------------------------------------------
async function verify() {
  const out = $("verify-result");
  const f1 = $("file1").files[0], f2 = $("file2").files[0];
  if (!f1 || !f2) { showError(out, { code: "missing_image", message: "choose two photos", request_id: "-" }); return; }
  const btn = $("verify-btn");
  btn.disabled = true;
  out.className = "result";
  out.textContent = "verifying…";
  delete out.dataset.same; delete out.dataset.code;
  try {
    const form = new FormData();
    form.append("image", f1);
    form.append("image2", f2);
    if ($("strict").checked) form.append("strict", "true");
    if ($("threshold").value !== "") form.append("threshold", $("threshold").value);
    const det = async (f) => { const d = new FormData(); d.append("image", f); return call("POST", "/v1/detect", d); };
    const [res, d1, d2] = await Promise.all([call("POST", "/v1/verify", form), det(f1), det(f2)]);
    const mark = (all, used) => all.faces.map((f) => ({ ...f, used: sameBox(f, used) }));
    redraw("canvas1", mark(d1, res.face));
    redraw("canvas2", mark(d2, res.face2));
    out.className = "result " + (res.same ? "same" : "different");
    out.dataset.same = String(res.same);
    out.innerHTML = "";
    const verdict = document.createElement("b");
    verdict.textContent = res.same ? "Same person" : "Different people";
    out.append(verdict, ` — similarity ${res.similarity.toFixed(4)} vs threshold ${res.threshold.toFixed(3)} ` +
      `(${res.threshold_source}); model ${res.model}; faces found ${res.face.faces_found} / ${res.face2.faces_found}, ` +
      `policy: ${res.policy} (green = face used).`);
  } catch (err) {
    showError(out, err);
  } finally {
    btn.disabled = false;
  }
}

// --- identify ------------------------------------------------------------------------------------------
async function loadCollections() {
  const sel = $("collection");
  try {
    const data = await call("GET", "/v1/collections");
    const keep = sel.value;
    sel.length = 1;
    for (const c of data.collections) {
      const o = document.createElement("option");
      o.value = c.id;
      o.textContent = `${c.id}${c.name ? " — " + c.name : ""} (${c.identities} identities, ${c.model})`;
      sel.append(o);
    }
    sel.value = keep;
  } catch (err) { /* a key without the read scope can still identify everywhere it may */ }
}

async function identify() {
  const out = $("identify-result");
  const f = $("identify-file").files[0];
  if (!f) { showError(out, { code: "missing_image", message: "choose a photo", request_id: "-" }); return; }
  const btn = $("identify-btn");
  btn.disabled = true;
  out.className = "result";
  out.textContent = "identifying…";
  try {
    const form = new FormData();
    form.append("image", f);
    if ($("collection").value) form.append("collection_id", $("collection").value);
    form.append("top_k", $("top-k").value || "3");
    const res = await call("POST", "/v1/identify", form);
    const faces = res.results.map((r) => ({
      ...r.face, used: true, color: r.unknown ? "#f59e0b" : "#22c55e",
      label: r.unknown ? "unknown" : `${r.best.name || r.best.external_id} ${r.best.similarity.toFixed(2)}`,
    }));
    redraw("canvas3", faces);
    out.className = "result";
    out.innerHTML = "";
    const table = document.createElement("table");
    table.innerHTML = "<tr><th>face</th><th>answer</th><th>candidates (similarity)</th></tr>";
    res.results.forEach((r, i) => {
      const tr = document.createElement("tr");
      const cells = [String(i + 1), r.unknown ? "unknown" : (r.best.name || r.best.external_id),
        r.candidates.map((c) => `${c.external_id}@${c.collection_id} ${c.similarity.toFixed(3)}`).join(", ") || "—"];
      for (const text of cells) { const td = document.createElement("td"); td.textContent = text; tr.append(td); }
      table.append(tr);
    });
    const thr = res.searched.map((s) => `${s.collection_id}: ${s.model} @ ${s.threshold} (${s.threshold_source})`);
    out.append(table, document.createTextNode("Searched " + (thr.join("; ") || "nothing")));
  } catch (err) {
    showError(out, err);
  } finally {
    btn.disabled = false;
  }
}

// --- start ---------------------------------------------------------------------------------------------
async function init() {
  try {
    info = await (await fetch("/v1/info")).json();
    $("version").textContent = "v" + info.version;
  } catch (e) { /* keep defaults: ask for a key */ }
  $("key-box").hidden = !info.auth_enabled;
  $("auth-off").hidden = info.auth_enabled;
  $("api-key").value = apiKey();
  $("key-state").textContent = apiKey() ? "key set for this tab" : "no key yet";
  $("save-key").onclick = () => {
    sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    $("key-state").textContent = "key set for this tab";
    loadCollections();
  };
  $("forget-key").onclick = () => {
    sessionStorage.removeItem(KEY_STORAGE);
    $("api-key").value = "";
    $("key-state").textContent = "no key yet";
  };
  $("file1").onchange = () => $("file1").files[0] && loadInto("canvas1", $("file1").files[0]);
  $("file2").onchange = () => $("file2").files[0] && loadInto("canvas2", $("file2").files[0]);
  $("identify-file").onchange = () => $("identify-file").files[0] && loadInto("canvas3", $("identify-file").files[0]);
  $("verify-btn").onclick = verify;
  $("identify-btn").onclick = identify;
  $("reload-collections").onclick = loadCollections;
  if (!info.auth_enabled || apiKey()) loadCollections();
  document.body.dataset.ready = "true";
}

init();
