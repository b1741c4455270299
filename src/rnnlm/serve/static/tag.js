// Tag: tags, entity spans, tag marginals and CRF transition scores of a sentence.
"use strict";
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
