// Training: learning curves of every run from its metrics.jsonl, redrawn every 2 s.
"use strict";
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
