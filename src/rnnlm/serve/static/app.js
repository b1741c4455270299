// rnnlm serve: the page. Plain JavaScript, drawn with SVG and canvas; no library, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, text) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};
const svgEl = (tag, attrs = {}) => {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
};
const state = { runs: [], examples: [], page: null, timer: null };
const COLORS = ["#1e88e5", "#e53935", "#43a047", "#fb8c00", "#8e24aa", "#00acc1", "#6d4c41", "#546e7a"];

async function api(path, options = {}) {
  const r = await fetch(path, options);
  const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}
function post(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}
function status(id, text, isError) {
  const s = $(id);
  s.textContent = text;
  s.className = isError ? "error" : "muted";
}
function tooltip(text, ev) {
  const t = $("tooltip");
  if (!text) { t.style.display = "none"; return; }
  t.textContent = text;
  t.style.display = "block";
  t.style.left = Math.min(ev.clientX + 12, window.innerWidth - 260) + "px";
  t.style.top = ev.clientY + 14 + "px";
}
const shown = (s) => s.replace(/\n/g, "\u21b5\n").replace(/ /g, "\u00a0");
const esc = (s) => JSON.stringify(s).slice(1, -1);

// -- pages ------------------------------------------------------------------------------------------------
const NEEDS = { generate: "lm", inspect: "lm", tag: "tagger", frames: "frames" };

function showPage(page) {
  state.page = page;
  document.querySelectorAll(".page").forEach((p) => p.classList.toggle("active", p.id === "page-" + page));
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.page === page));
  location.hash = page;
  if (page === "training") refreshTraining();
}

async function init() {
  const data = await api("/api/runs");
  state.runs = data.runs;
  state.examples = data.examples;
  document.querySelectorAll(".run-select").forEach((sel) => {
    for (const r of state.runs.filter((r) => r.kind === sel.dataset.kind)) {
      const o = el("option", { value: r.id }, r.name + (r.model ? ` (${r.model})` : "") + (r.ready ? "" : " (not ready)"));
      sel.appendChild(o);
    }
  });
  document.querySelectorAll("#tabs button").forEach((b) => {
    const kind = NEEDS[b.dataset.page];
    if (kind && !state.runs.some((r) => r.kind === kind)) {
      b.disabled = true;
      b.title = `no ${kind} run was given to rnnlm serve`;
    }
    b.addEventListener("click", () => showPage(b.dataset.page));
  });
  initTraining();
  initGenerate();
  initInspect();
  initTag();
  initFrames();
  const wanted = location.hash.slice(1);
  const enabled = [...document.querySelectorAll("#tabs button")].filter((b) => !b.disabled).map((b) => b.dataset.page);
  showPage(enabled.includes(wanted) ? wanted : "training");
}

// -- Training ----------------------------------------------------------------------------------------------
const curves = {};  // run id -> sources

function initTraining() {
  const box = $("train-runs");
  state.runs.forEach((r, i) => {
    const cb = el("input", { type: "checkbox", value: r.id, id: "train-cb-" + r.id });
    cb.checked = i === 0;
    cb.addEventListener("change", refreshTraining);
    const lab = el("label", { for: cb.id }, " " + r.name);
    box.append(cb, lab, " ");
  });
  $("train-x").addEventListener("change", drawTraining);
  $("train-y").addEventListener("change", drawTraining);
  state.timer = setInterval(() => { if (state.page === "training" && !document.hidden) refreshTraining(); }, 2000);
}

async function refreshTraining() {
  const ids = [...document.querySelectorAll("#train-runs input:checked")].map((c) => c.value);
  try {
    await Promise.all(ids.map(async (id) => { curves[id] = (await api(`/api/runs/${encodeURIComponent(id)}/metrics`)).sources; }));
    status("train-live", `updated ${new Date().toLocaleTimeString()}`);
  } catch (e) { status("train-live", e.message, true); }
  drawTraining();
}

function drawTraining() {
  const ids = [...document.querySelectorAll("#train-runs input:checked")].map((c) => c.value);
  const keys = new Set();
  ids.forEach((id) => (curves[id] || []).forEach((s) => s.rows.forEach((r) => Object.keys(r).forEach((k) => keys.add(k)))));
  const ySel = $("train-y");
  const skip = new Set(["step", "epoch", "elapsed_s"]);
  const options = [...keys].filter((k) => !skip.has(k)).sort();
  const current = ySel.value || "val_loss";
  if ([...ySel.options].map((o) => o.value).join() !== options.join()) {
    ySel.replaceChildren(...options.map((k) => el("option", { value: k }, k)));
  }
  ySel.value = options.includes(current) ? current : options.includes("train_loss") ? "train_loss" : options[0] || "";
  const x = $("train-x").value, y = ySel.value;
  const series = [];
  ids.forEach((id) => (curves[id] || []).forEach((s) => {
    const pts = s.rows.filter((r) => r[x] !== undefined && r[y] !== undefined).map((r) => [r[x], r[y]]);
    if (pts.length) series.push({ name: s.source === "run" ? id : `${id}/${s.source}`, pts });
  }));
  lineChart($("train-chart"), series, x === "elapsed_s" ? "seconds" : "step", y);
}

function lineChart(svg, series, xLabel, yLabel) {
  svg.replaceChildren();
  const W = +svg.getAttribute("width"), H = +svg.getAttribute("height");
  const m = { l: 60, r: 170, t: 15, b: 40 };
  const all = series.flatMap((s) => s.pts);
  if (!all.length) {
    const t = svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#78909c" });
    t.textContent = "no metrics yet";
    svg.appendChild(t);
    return;
  }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y1 += 0.5; y0 -= 0.5; }
  const sx = (v) => m.l + ((v - x0) / (x1 - x0)) * (W - m.l - m.r);
  const sy = (v) => H - m.b - ((v - y0) / (y1 - y0)) * (H - m.t - m.b);
  const axis = svgEl("g", { stroke: "#999", "font-size": 11 });
  axis.append(svgEl("line", { x1: m.l, y1: H - m.b, x2: W - m.r, y2: H - m.b }), svgEl("line", { x1: m.l, y1: m.t, x2: m.l, y2: H - m.b }));
  for (let i = 0; i <= 5; i++) {
    const xv = x0 + ((x1 - x0) * i) / 5, yv = y0 + ((y1 - y0) * i) / 5;
    const tx = svgEl("text", { x: sx(xv), y: H - m.b + 15, "text-anchor": "middle", stroke: "none", fill: "#555" });
    tx.textContent = +xv.toPrecision(4);
    const ty = svgEl("text", { x: m.l - 6, y: sy(yv) + 4, "text-anchor": "end", stroke: "none", fill: "#555" });
    ty.textContent = +yv.toPrecision(4);
    axis.append(tx, ty, svgEl("line", { x1: m.l, x2: W - m.r, y1: sy(yv), y2: sy(yv), stroke: "#eee" }));
  }
  const xl = svgEl("text", { x: (W - m.r + m.l) / 2, y: H - 6, "text-anchor": "middle", stroke: "none", fill: "#333" });
  xl.textContent = xLabel;
  const yl = svgEl("text", { x: 12, y: m.t + 10, stroke: "none", fill: "#333" });
  yl.textContent = yLabel;
  axis.append(xl, yl);
  svg.appendChild(axis);
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const d = s.pts.map((p, k) => (k ? "L" : "M") + sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join("");
    svg.appendChild(svgEl("path", { d, fill: "none", stroke: color, "stroke-width": 1.8, class: "curve" }));
    if (s.pts.length < 60) s.pts.forEach((p) => svg.appendChild(svgEl("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: color })));
    const lg = svgEl("text", { x: W - m.r + 12, y: m.t + 14 + 16 * i, fill: color, "font-size": 12 });
    lg.textContent = s.name;
    svg.appendChild(lg);
  });
}

// -- Generate ----------------------------------------------------------------------------------------------
let genAbort = null;

function initGenerate() {
  $("gen-go").addEventListener("click", generate);
  $("gen-stop").addEventListener("click", () => genAbort && genAbort.abort());
  $("gen-out").addEventListener("mousemove", (ev) => {
    const t = ev.target;
    tooltip(t.dataset && t.dataset.alts ? t.dataset.alts : "", ev);
  });
  $("gen-out").addEventListener("mouseleave", () => tooltip(""));
}

function probColor(p) {  // likely: dark teal; unlikely: pale red
  const h = 10 + 160 * p, l = 92 - 30 * p;
  return `hsl(${h.toFixed(0)}, 70%, ${l.toFixed(0)}%)`;
}

async function generate() {
  const run = $("gen-run").value;
  const body = { prefix: $("gen-prefix").value, alternatives: 5 };
  for (const k of ["temperature", "top_k", "top_p", "beam", "length"]) body[k] = Number($("gen-" + k).value);
  if ($("gen-seed").value !== "") body.seed = Number($("gen-seed").value);
  const out = $("gen-out");
  out.replaceChildren();
  status("gen-status", "generating...");
  genAbort = new AbortController();
  const t0 = performance.now();
  let n = 0;
  try {
    const r = await fetch(`/api/runs/${encodeURIComponent(run)}/generate`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal: genAbort.signal,
    });
    if (!r.ok) throw new Error((await r.json()).error);
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const line = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        if (!line.startsWith("data: ")) continue;
        const ev = JSON.parse(line.slice(6));
        if (ev.error) throw new Error(ev.error);
        if (ev.prefix !== undefined) out.appendChild(el("b", {}, ev.prefix));
        if (ev.t !== undefined) {
          const s = el("span", { class: "tok" }, ev.t);
          s.style.background = probColor(ev.p);
          s.dataset.p = ev.p;
          s.dataset.alts = `p = ${ev.p.toFixed(3)}\n` + (ev.alts || []).map(([t, p]) => `${esc(t).padEnd(6)} ${p.toFixed(3)}`).join("\n");
          out.appendChild(s);
          n++;
        }
      }
    }
    status("gen-status", `${n} tokens in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  } catch (e) {
    status("gen-status", e.name === "AbortError" ? `stopped after ${n} tokens` : e.message, e.name !== "AbortError");
  }
}

// -- Inspect -----------------------------------------------------------------------------------------------
let ins = null;  // the last inspect answer, with its values decoded

function initInspect() {
  const sel = $("ins-run");
  const fill = () => {
    const r = state.runs.find((x) => x.id === sel.value);
    if (!r) return;
    $("ins-layer").replaceChildren(...[...Array(r.layers || 1).keys()].map((l) => el("option", { value: l }, l)));
    $("ins-layer").value = (r.layers || 1) - 1;
    const signals = { lstm: ["h", "c", "i", "f", "g", "o"], gru: ["h", "r", "z", "n"], rnn: ["h"] }[r.cell] || ["h"];
    const names = { h: "hidden state", c: "cell state", i: "input gate", f: "forget gate", g: "candidate", o: "output gate", r: "reset gate", z: "update gate", n: "candidate" };
    $("ins-signal").replaceChildren(...signals.map((s) => el("option", { value: s }, names[s])));
  };
  sel.addEventListener("change", fill);
  fill();
  $("ins-go").addEventListener("click", () => inspect());
  $("ins-sample").addEventListener("click", () => pickSample());
  const pickSample = async () => {
    const r = await api(`/api/runs/${encodeURIComponent(sel.value)}/sample`);
    if (r.text) $("ins-text").value = r.text;
    else status("ins-status", "the run's validation text is not available here; paste a text", true);
  };
  if (sel.value) pickSample().catch((e) => status("ins-status", e.message, true));
  $("ins-order").addEventListener("change", drawHeat);
  $("ins-loss").addEventListener("mouseup", spanSelected);
  const canvas = $("ins-heat");
  canvas.addEventListener("mousemove", (ev) => {
    if (!ins) return;
    const rect = canvas.getBoundingClientRect();
    const t = Math.floor((ev.clientX - rect.left) / ins.px), row = Math.floor((ev.clientY - rect.top) / ins.py);
    if (t < 0 || t >= ins.steps || row < 0 || row >= ins.units) return tooltip("", ev);
    const u = ins.order[row];
    const v = ((ins.q[t * ins.units + u] / 127.5) - 1) * ins.scale;
    tooltip(`unit ${u}  step ${t}  ${esc(ins.tokens[t])}\nvalue ${v.toFixed(3)}`, ev);
  });
  canvas.addEventListener("mouseleave", () => tooltip(""));
}

async function inspect(span) {
  const run = $("ins-run").value;
  const body = { text: $("ins-text").value, layer: Number($("ins-layer").value), signal: $("ins-signal").value };
  if (span) Object.assign(body, span);
  status("ins-status", "computing...");
  const t0 = performance.now();
  try {
    const r = await post(`/api/runs/${encodeURIComponent(run)}/inspect`, body);
    const bin = atob(r.values);
    r.q = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) r.q[i] = bin.charCodeAt(i);
    ins = r;
    if (!span) { drawLoss(); drawRank(); $("ins-span").textContent = "select a span of the text above"; }
    drawHeat();
    if (r.span) drawSpan(r.span);
    status("ins-status", `${r.steps} tokens x ${r.units} units in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
    document.body.dataset.inspected = "1";
  } catch (e) { status("ins-status", e.message, true); }
}

function drawLoss(highlight) {
  const out = $("ins-loss");
  const frag = document.createDocumentFragment();
  const max = Math.max(1e-6, ...ins.loss.filter((v) => v !== null));
  ins.tokens.forEach((tok, i) => {
    const s = el("span", { class: "tok", "data-i": i }, tok);
    const v = highlight ? highlight[i] : ins.loss[i];
    if (highlight) s.style.background = `hsl(${v > 0 ? 200 : 10}, 80%, ${(95 - 45 * Math.min(1, Math.abs(v))).toFixed(0)}%)`;
    else if (v !== null) s.style.background = `hsl(10, 85%, ${(97 - 45 * (v / max)).toFixed(0)}%)`;
    s.title = highlight ? `value ${v.toFixed(3)}` : v === null ? "first token" : `loss ${v.toFixed(3)} nats`;
    frag.appendChild(s);
  });
  out.replaceChildren(frag);
}

function drawHeat() {
  if (!ins) return;
  const order = ins.orders[$("ins-order").value];
  ins.order = order;
  const T = ins.steps, U = ins.units;
  ins.px = Math.max(1, Math.min(6, Math.floor(2400 / T)));
  ins.py = Math.max(2, Math.min(8, Math.floor(480 / U)));
  const canvas = $("ins-heat");
  canvas.width = T * ins.px;
  canvas.height = U * ins.py;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(T, U);
  for (let row = 0; row < U; row++) {
    const u = order[row];
    for (let t = 0; t < T; t++) {
      const v = ins.q[t * U + u] / 127.5 - 1;  // -1..1 in units of the scale
      const k = 4 * (row * T + t);
      if (v >= 0) { img.data[k] = 255 * (1 - v); img.data[k + 1] = 255 * (1 - 0.6 * v); img.data[k + 2] = 255; }
      else { img.data[k] = 255; img.data[k + 1] = 255 * (1 + 0.7 * v); img.data[k + 2] = 255 * (1 + v); }
      img.data[k + 3] = 255;
    }
  }
  const off = document.createElement("canvas");
  off.width = T; off.height = U;
  off.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
}

function unitValues(u) {
  return ins.tokens.map((_, t) => ((ins.q[t * ins.units + u] / 127.5) - 1) * ins.scale);
}

function unitLink(u, extra) {
  const a = el("a", { href: "#inspect", class: "unit" }, `unit ${u}`);
  a.addEventListener("click", (ev) => { ev.preventDefault(); drawLoss(unitValues(u)); });
  const li = el("li");
  li.append(a, extra ? " " + extra : "");
  return li;
}

function drawRank() {
  const box = $("ins-rank");
  box.replaceChildren();
  const entries = Object.entries(ins.ranking);
  if (!entries.length) { box.textContent = "(ranking needs a character model)"; return; }
  for (const [name, units] of entries) {
    box.appendChild(el("b", {}, name));
    if (!units.length) { box.appendChild(el("div", { class: "muted" }, "does not vary in this text")); continue; }
    const ul = el("ul");
    units.slice(0, 4).forEach(([u, r]) => ul.appendChild(unitLink(u, `r = ${r.toFixed(2)}`)));
    box.appendChild(ul);
  }
}

function spanSelected() {
  const sel = window.getSelection();
  if (!ins || !sel || sel.isCollapsed) return;
  const idx = (node) => {
    const e = node.nodeType === 3 ? node.parentElement : node;
    return e && e.dataset && e.dataset.i !== undefined ? Number(e.dataset.i) : null;
  };
  let a = idx(sel.anchorNode), b = idx(sel.focusNode);
  if (a === null || b === null) return;
  if (a > b) [a, b] = [b, a];
  inspect({ start: a, end: b + 1 });
}

function drawSpan(span) {
  const box = $("ins-span");
  box.replaceChildren();
  box.className = "";
  box.appendChild(el("div", {}, `tokens ${span.start} to ${span.end - 1}: "${esc(ins.tokens.slice(span.start, span.end).join(""))}"`));
  box.appendChild(el("b", {}, "units on there"));
  const ul = el("ul", { id: "span-units" });
  span.units.forEach(([u, mean, z]) => ul.appendChild(unitLink(u, `mean ${mean.toFixed(2)}, z ${z.toFixed(1)}`)));
  box.appendChild(ul);
  box.appendChild(el("b", {}, "where the top 5 fire most in the validation text"));
  if (span.note) box.appendChild(el("div", { class: "muted" }, span.note));
  const ol = el("ol", { id: "span-places" });
  span.places.forEach((p) => {
    const li = el("li", { class: "textout" });
    li.append(shown(p.before), el("mark", {}, shown(p.span)), shown(p.after));
    ol.appendChild(li);
  });
  box.appendChild(ol);
}

// -- Tag ---------------------------------------------------------------------------------------------------
function initTag() {
  $("tag-go").addEventListener("click", () => tagLines([$("tag-text").value]));
  $("tag-text").addEventListener("keydown", (ev) => { if (ev.key === "Enter") tagLines([$("tag-text").value]); });
  $("tag-apple").addEventListener("click", () => tagLines(state.examples));
}

async function tagLines(lines) {
  const run = $("tag-run").value;
  status("tag-status", "tagging...");
  try {
    const results = await Promise.all(lines.map((text) => post(`/api/runs/${encodeURIComponent(run)}/tag`, { text })));
    const out = $("tag-out");
    out.replaceChildren(...results.map(drawSentence));
    drawTransitions(results[0].transitions);
    status("tag-status", "");
  } catch (e) { status("tag-status", e.message, true); }
}

function drawSentence(r) {
  const box = el("div", { class: "sentence" });
  const line = el("div");
  const entityOf = {};
  (r.entities || []).forEach((e) => { for (let i = e.start; i < e.end; i++) entityOf[i] = e.type; });
  r.tokens.forEach((tok, i) => {
    const type = entityOf[i];
    const known = ["PER", "LOC", "ORG", "MISC"].includes(type) ? type : "other";
    const s = el("span", { class: "tok" + (type ? ` ent ent-${known}` : "") }, tok);
    s.appendChild(el("small", {}, r.tags[i]));
    line.appendChild(s);
  });
  box.appendChild(line);
  const table = el("table", { class: "heat marginals" });
  const head = el("tr");
  head.appendChild(el("th", {}, ""));
  r.tag_names.forEach((t) => head.appendChild(el("th", {}, t)));
  table.appendChild(head);
  r.marginals.forEach((row, i) => {
    const tr = el("tr");
    tr.appendChild(el("th", {}, r.tokens[i]));
    row.forEach((p) => {
      const td = el("td", {}, p >= 0.005 ? p.toFixed(2) : "");
      td.style.background = `hsl(170, 60%, ${(98 - 50 * p).toFixed(0)}%)`;
      tr.appendChild(td);
    });
    table.appendChild(tr);
  });
  box.appendChild(el("div", { class: "muted" }, "tag marginals p(tag | sentence)"));
  box.appendChild(table);
  return box;
}

function drawTransitions(t) {
  const box = $("tag-trans");
  if (!t) { box.textContent = "(a softmax tagger has no transitions)"; return; }
  const max = Math.max(1e-6, ...t.matrix.flat().map(Math.abs));
  const table = el("table", { class: "heat" });
  const head = el("tr");
  head.appendChild(el("th", {}, ""));
  t.tags.forEach((x) => head.appendChild(el("th", {}, x)));
  table.appendChild(head);
  t.matrix.forEach((row, i) => {
    const tr = el("tr");
    tr.appendChild(el("th", {}, t.tags[i]));
    row.forEach((v) => {
      const td = el("td", {}, v.toFixed(1));
      td.style.background = `hsl(${v > 0 ? 200 : 10}, 80%, ${(97 - 45 * Math.abs(v) / max).toFixed(0)}%)`;
      tr.appendChild(td);
    });
    table.appendChild(tr);
  });
  box.replaceChildren(table);
}

// -- Frames ------------------------------------------------------------------------------------------------
let frameFile = null;

function initFrames() {
  $("fr-file").addEventListener("change", async () => {
    frameFile = $("fr-file").files[0];
    if (frameFile) await predictFrames();
  });
}

async function uploadFrames(query) {
  const run = $("fr-run").value;
  const data = await frameFile.arrayBuffer();
  return api(`/api/runs/${encodeURIComponent(run)}/frames?name=${encodeURIComponent(frameFile.name)}${query}`, { method: "POST", body: data });
}

async function predictFrames() {
  status("fr-status", "predicting...");
  try {
    const r = await uploadFrames("");
    const table = el("table", { id: "fr-table" });
    const head = el("tr");
    ["#", "frames", "predicted", ...(r.labels ? ["gold"] : []), ...(r.probabilities ? r.classes : [])].forEach((h) => head.appendChild(el("th", {}, h)));
    table.appendChild(head);
    r.predictions.forEach((p, i) => {
      const tr = el("tr", { class: "clickable" });
      const name = r.task === "classify" ? r.classes[p] : `${p.length} frame labels`;
      [i, r.lengths[i], name].forEach((v) => tr.appendChild(el("td", {}, String(v))));
      if (r.labels) tr.appendChild(el("td", {}, r.task === "classify" ? r.classes[r.labels[i]] : ""));
      (r.probabilities ? r.probabilities[i] : []).forEach((q) => {
        const td = el("td", {}, q.toFixed(2));
        td.style.background = `hsl(170, 60%, ${(98 - 45 * q).toFixed(0)}%)`;
        tr.appendChild(td);
      });
      tr.addEventListener("click", () => {
        table.querySelectorAll("tr").forEach((x) => x.classList.remove("selected"));
        tr.classList.add("selected");
        showSaliency(i);
      });
      table.appendChild(tr);
    });
    $("fr-pred").replaceChildren(table);
    drawConfusion(r);
    status("fr-status", `${r.predictions.length} sequences` + (r.labels_note ? ` (labels not scored: ${r.labels_note})` : ""));
  } catch (e) { status("fr-status", e.message, true); }
}

function drawConfusion(r) {
  const box = $("fr-conf");
  if (!r.report) { box.textContent = "the file has no labels the model knows"; box.className = "muted"; return; }
  box.className = "";
  const cm = r.report.confusion;
  const max = Math.max(1, ...cm.flat());
  const table = el("table", { class: "heat", id: "fr-confusion" });
  const head = el("tr");
  head.appendChild(el("th", {}, "gold \\ predicted"));
  r.classes.forEach((c) => head.appendChild(el("th", {}, c)));
  table.appendChild(head);
  cm.forEach((row, i) => {
    const tr = el("tr");
    tr.appendChild(el("th", {}, r.classes[i]));
    row.forEach((v) => {
      const td = el("td", {}, String(v));
      td.style.background = `hsl(200, 70%, ${(98 - 50 * v / max).toFixed(0)}%)`;
      tr.appendChild(td);
    });
    table.appendChild(tr);
  });
  box.replaceChildren(el("div", {}, `accuracy ${(100 * r.report.accuracy).toFixed(1)}%`), table);
}

async function showSaliency(i) {
  status("fr-status", `saliency of sequence ${i}...`);
  try {
    const r = await uploadFrames(`&saliency=${i}`);
    const W = 520, H = 280, T = r.frames.length, F = r.frames[0].length;
    const svg = svgEl("svg", { width: W, height: H, class: "chart", id: "fr-saliency" });
    const sx = (t) => 40 + (t + 0.5) * (W - 60) / T;
    const vals = r.frames.flat();
    const lo = Math.min(...vals), hi = Math.max(...vals) + 1e-9;
    const top = (v) => 10 + (1 - (v - lo) / (hi - lo)) * 120;
    const smax = Math.max(1e-9, ...r.saliency.map(Math.abs));
    r.saliency.forEach((s, t) => {
      const h = 50 * Math.abs(s) / smax;
      svg.appendChild(svgEl("rect", { x: sx(t) - (W - 60) / T / 2 + 1, width: Math.max(1, (W - 60) / T - 2), y: s >= 0 ? 200 - h : 200, height: h, fill: s >= 0 ? "#43a047" : "#e53935", class: "sal" }));
    });
    svg.appendChild(svgEl("line", { x1: 40, x2: W - 20, y1: 200, y2: 200, stroke: "#999" }));
    for (let f = 0; f < Math.min(F, 8); f++) {
      const d = r.frames.map((row, t) => (t ? "L" : "M") + sx(t).toFixed(1) + "," + top(row[f]).toFixed(1)).join("");
      svg.appendChild(svgEl("path", { d, fill: "none", stroke: COLORS[f % COLORS.length], "stroke-width": 1.5 }));
    }
    const label = svgEl("text", { x: 40, y: H - 8, "font-size": 12, fill: "#555" });
    label.textContent = `sequence ${i}: frames (lines, ${Math.min(F, 8)} of ${F} features) and saliency per frame (bars)`;
    svg.appendChild(label);
    $("fr-sal").replaceChildren(svg);
    status("fr-status", "");
  } catch (e) { status("fr-status", e.message, true); }
}

init().catch((e) => { $("no-runs").textContent = "could not load the runs: " + e.message; });
