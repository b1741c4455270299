// rnnlm serve: the page's shared helpers and its tabs. Plain JavaScript, drawn with SVG and canvas; no library,
// no build step. Each page has its file (training.js, generate.js, inspect.js, tag.js, frames.js), loaded before
// this one calls their init functions.
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

window.addEventListener("DOMContentLoaded", () => init().catch((e) => { $("no-runs").textContent = "could not load the runs: " + e.message; }));
