// Inspect: per-token loss, units x time heat map, a span's units and where they fire, units that follow a property.
"use strict";
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
  // a span of the text shown (not of an edited one): the heat map stays; the span's units and places come
  if (span) Object.assign(body, span, { text: ins.text, layer: ins.layer, signal: ins.signal, span_only: true });
  status("ins-status", "computing...");
  const t0 = performance.now();
  try {
    const r = await post(`/api/runs/${encodeURIComponent(run)}/inspect`, body);
    if (span) {
      drawSpan(r.span);
      status("ins-status", `span in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
      return;
    }
    const bin = atob(r.values);
    r.q = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) r.q[i] = bin.charCodeAt(i);
    ins = r;
    ins.text = body.text;
    drawLoss();
    drawRank();
    $("ins-span").textContent = "select a span of the text above";
    drawHeat();
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
  const pixels = new Uint32Array(img.data.buffer);  // one write per pixel, through a table of the 256 levels' colours
  const palette = heatPalette();
  for (let row = 0; row < U; row++) {
    const u = order[row], base = row * T;
    for (let t = 0; t < T; t++) pixels[base + t] = palette[ins.q[t * U + u]];
  }
  const off = document.createElement("canvas");
  off.width = T; off.height = U;
  off.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
}

let palette256 = null;
function heatPalette() {  // level q (0..255) -> RGBA as one little-endian word: blue above 0, red below
  if (palette256) return palette256;
  const bytes = new Uint8ClampedArray(256 * 4);
  for (let q = 0; q < 256; q++) {
    const v = q / 127.5 - 1, k = 4 * q;  // -1..1 in units of the scale
    if (v >= 0) { bytes[k] = 255 * (1 - v); bytes[k + 1] = 255 * (1 - 0.6 * v); bytes[k + 2] = 255; }
    else { bytes[k] = 255; bytes[k + 1] = 255 * (1 + 0.7 * v); bytes[k + 2] = 255 * (1 + v); }
    bytes[k + 3] = 255;
  }
  palette256 = new Uint32Array(bytes.buffer);
  return palette256;
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
