"""The page ``runtime.serve`` answers ``GET /`` with: one HTML document, inline CSS and JS,
no external assets (the stream, legend, class box, threshold slider and frame rate)."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ovss-edge</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font-family: sans-serif; margin: 1em; color: #222; }
main { display: flex; flex-wrap: wrap; gap: 1.5em; }
#stream, #labels { max-width: 100%; background: #eee; min-width: 160px; min-height: 120px; }
section { margin-bottom: 1em; }
input[type=text] { width: 26em; }
#legend { list-style: none; padding: 0; }
#legend li { margin: 2px 0; }
.swatch { display: inline-block; width: 1em; height: 1em; margin-right: .4em;
  vertical-align: middle; border: 1px solid #444; }
.err { color: #b00; } .ok { color: #070; }
</style></head>
<body>
<h1>ovss-edge</h1>
<p>model <code id="model"></code>, source <code id="source"></code>:
<span id="fps">0</span> fps, <span id="frames">0</span> frames</p>
<main>
<div><img id="stream" src="/stream" alt="segmented stream (uploads without a source)"></div>
<div>
<section><form id="classes-form">
<label for="classes">Classes (comma separated)</label><br>
<input type="text" id="classes" name="classes"> <button id="apply" type="submit">Apply</button>
</form></section>
<section><label for="threshold">Score threshold <span id="thvalue">0.00</span></label><br>
<input type="range" id="threshold" min="0" max="0.99" step="0.01" value="0"></section>
<section><label for="upload">Segment an image</label><br>
<input type="file" id="upload" accept="image/png,image/jpeg"></section>
<p id="message"></p>
<h2>Legend</h2><ul id="legend"></ul>
<img id="labels" alt="labels of the last upload" hidden>
</div></main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let shownLegend = "";
function say(text, ok) {
  $("message").textContent = text; $("message").className = ok ? "ok" : "err";
}
async function post(path, body, type) {
  const r = await fetch(path, {method: "POST", headers: {"Content-Type": type}, body: body});
  const j = await r.json().catch(() => ({error: r.status + " " + r.statusText}));
  if (!r.ok) throw new Error(j.error || r.statusText);
  return j;
}
function drawLegend(j) {
  const key = JSON.stringify(j);
  if (key === shownLegend) return;
  shownLegend = key;
  const ul = $("legend");
  ul.textContent = "";
  const add = (name, colour) => {
    const li = document.createElement("li"), sw = document.createElement("span");
    sw.className = "swatch"; sw.style.background = colour;
    li.dataset.name = name; li.append(sw, document.createTextNode(name)); ul.append(li);
  };
  j.classes.forEach((c, i) => add(c, j.colours[i]));
  if (j.unknown) add("unknown", j.unknown);
}
async function legend() { drawLegend(await (await fetch("/legend")).json()); }
let first = true;
async function stats() {
  const j = await (await fetch("/stats")).json();
  $("fps").textContent = j.fps.toFixed(1); $("frames").textContent = j.frames;
  $("model").textContent = j.model; $("source").textContent = j.source || "none (uploads)";
  if (first) {
    first = false;
    $("classes").value = j.classes.join(", ");
    $("threshold").value = j.threshold; $("thvalue").textContent = j.threshold.toFixed(2);
    if (!j.text_encoder) {
      $("classes").disabled = $("apply").disabled = true;
      $("classes").title = "this folder has no text encoder: its vocabulary is fixed";
    }
  }
  await legend();
}
$("classes-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const names = $("classes").value.split(",").map((s) => s.trim()).filter((s) => s);
  try {
    drawLegend(await post("/classes", JSON.stringify({classes: names}), "application/json"));
    say("classes: " + names.join(", "), true);
  } catch (e) { say(e.message, false); }
});
$("threshold").addEventListener("input", () => {
  $("thvalue").textContent = Number($("threshold").value).toFixed(2);
});
$("threshold").addEventListener("change", async () => {
  try {
    await post("/threshold", JSON.stringify({value: Number($("threshold").value)}),
      "application/json");
    await legend();
  } catch (e) { say(e.message, false); }
});
$("upload").addEventListener("change", async () => {
  const file = $("upload").files[0];
  if (!file) return;
  try {
    const j = await post("/segment", file, file.type || "application/octet-stream");
    $("labels").src = "data:image/png;base64," + j.labels_png; $("labels").hidden = false;
    say(file.name + ": " + (j.present.join(", ") || "no class"), true);
  } catch (e) { say(e.message, false); }
});
stats().catch((e) => say(e.message, false));
setInterval(() => stats().catch(() => {}), 1000);
</script></body></html>
"""
