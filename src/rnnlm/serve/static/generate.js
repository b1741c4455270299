// Generate: a language model's text streamed as server-sent events, each token shaded by its probability.
"use strict";
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
        const frag = document.createDocumentFragment();
        for (const tok of ev.tokens || []) {  // the tokens drawn since the last event
          const s = el("span", { class: "tok" }, tok.t);
          s.style.background = probColor(tok.p);
          s.dataset.p = tok.p;
          s.dataset.alts = `p = ${tok.p.toFixed(3)}\n` + (tok.alts || []).map(([t, p]) => `${esc(t).padEnd(6)} ${p.toFixed(3)}`).join("\n");
          frag.appendChild(s);
          n++;
        }
        out.appendChild(frag);
      }
    }
    status("gen-status", `${n} tokens in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  } catch (e) {
    status("gen-status", e.name === "AbortError" ? `stopped after ${n} tokens` : e.message, e.name !== "AbortError");
  }
}
