// Frames: predictions, confusion matrix and saliency of an uploaded .ts or .npz file.
"use strict";
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
