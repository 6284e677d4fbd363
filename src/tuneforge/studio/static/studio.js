// tuneforge studio: plain JS, no framework. Every action goes through the JSON API under /api.
"use strict";
const TOKEN = document.querySelector('meta[name="studio-token"]').content;
const LIVE = ["queued", "running"];
let STRINGS = {}, lang = localStorage.getItem("studio-lang") || document.documentElement.lang || "en";
let currentRun = null, source = null, jobTimer = null, DEFAULTS = {};

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) (k === "class" ? (node.className = v) : node.setAttribute(k, v));
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
};
const t = (key) => (STRINGS[lang] && STRINGS[lang][key]) || STRINGS.en?.[key] || key;
const fmt = (x, d = 4) => (typeof x === "number" ? (Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(d)) : x ?? "");
const figureValue = (key, x) => (key.includes("accuracy") && typeof x === "number" ? `${(100 * x).toFixed(1)}%` : fmt(x));
const figureText = (figures) => Object.entries(figures || {}).map(([k, v]) => `${t(k)} ${figureValue(k, v)}`).join(", ");

async function api(method, path, body, raw) {
  const init = { method, headers: { "X-Studio-Token": TOKEN } };
  if (body !== undefined) {
    init.body = raw ? body : JSON.stringify(body);
    if (!raw) init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function showError(where, err) {
  const box = typeof where === "string" ? $(where) : where;
  box.replaceChildren(el("div", { class: "error" }, err.message || String(err)));
}

// --- language ---------------------------------------------------------------------------------
function applyStrings() {
  document.documentElement.lang = lang;
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  if (currentRun) renderRun(currentRun);
}
$("#lang").addEventListener("click", () => {
  lang = lang === "ko" ? "en" : "ko";
  localStorage.setItem("studio-lang", lang);
  applyStrings();
});

// --- tabs and the address bar (#runs, #run/<id>): a reload comes back to the same view ----------
function showTab(name) {
  for (const section of document.querySelectorAll(".tab")) section.hidden = section.id !== `tab-${name}`;
  for (const button of document.querySelectorAll("nav button")) button.classList.toggle("active", button.dataset.tab === name);
  if (name === "runs") loadRuns();
  if (name === "new") loadAdapters().catch(() => {});
  if (name === "exports") loadExports($("#exports-out"));
}
for (const button of document.querySelectorAll("nav button")) button.addEventListener("click", () => (location.hash = button.dataset.tab));
function route() {
  const [name, id] = location.hash.slice(1).split("/");
  if (name === "run" && id) openRun(decodeURIComponent(id));
  showTab(["new", "runs", "run", "exports"].includes(name) ? name : "new");
}
window.addEventListener("hashchange", route);

// --- new run ----------------------------------------------------------------------------------
function formSettings() {
  const settings = JSON.parse($("#f-extra").value.trim() || "{}");
  const put = (key, value, cast = String) => { if (value !== "") settings[key] = cast(value); };
  put("model.name", $("#f-model").value.trim());
  put("data.dataset", $("#f-data").value.trim());
  put("train.method", $("#f-method").value);
  put("model.adapter", $("#f-adapter").value);
  put("train.max_steps", $("#f-steps").value, Number);
  put("train.batch_size", $("#f-batch").value, Number);
  put("train.learning_rate", $("#f-lr").value, Number);
  return settings;
}
// what a typed name will read, as `train` decides it; the run's YAML carries the same absolute path
async function showResolved(input = "#f-data", box = "#resolved", field = "data") {
  const typed = $(input).value.trim();
  if (!typed) return $(box).replaceChildren();
  const info = await api("GET", `/api/resolve?field=${field}&path=${encodeURIComponent(typed)}`);
  $(box).dataset.kind = info.kind;
  $(box).textContent = `${t("resolved")}: ${info.path} (${t(`kind_${info.kind}`)}${info.size != null ? `, ${info.size} bytes` : ""})`;
}
$("#f-data").addEventListener("change", () => showResolved().catch((e) => showError("#resolved", e)));
$("#f-model").addEventListener("change", () => showResolved("#f-model", "#resolved-model", "model").catch((e) => showError("#resolved-model", e)));
$("#f-method").addEventListener("change", () => {  // dpo/orpo/kto without data read medical-preferences, as the CLI does
  $("#f-data").placeholder = DEFAULTS.method_datasets?.[$("#f-method").value || "sft"] || "";
});
async function loadAdapters() {  // "start from": a finished run's adapter, e.g. SFT before DPO
  const { runs } = await api("GET", "/api/runs");
  const select = $("#f-adapter"), kept = select.value;
  const finished = runs.filter((run) => run.status === "finished");
  select.replaceChildren(select.options[0], ...finished.map((run) => el("option", { value: `${DEFAULTS.runs_dir}/${run.id}` }, `${run.id} (${run.method || "?"})`)));
  select.value = kept;
}
$("#f-upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  try {
    const saved = await api("POST", `/api/uploads?name=${encodeURIComponent(file.name)}`, file, true);
    $("#f-data").value = saved.path;
    await showResolved();
  } catch (err) { showError("#resolved", err); }
});
$("#check").addEventListener("click", async () => {
  $("#check-out").replaceChildren(el("p", { class: "muted" }, "…"));
  try { renderCheck(await api("POST", "/api/check", { settings: formSettings() })); }
  catch (err) { showError("#check-out", err); }
});
function renderCheck(result) {
  const out = [];
  const data = result.data || {};
  if (data.error) out.push(el("div", { class: "error" }, data.error));
  else if ("pair" in data) out.push(...pairCheck(data));
  else {
    out.push(el("p", { id: "check-summary" }, `${t("method")}: ${data.method} · ${data.examples} ${t("examples")} (${data.format}); train ${data.split?.train}, held out ${data.split?.held_out}; ${data.template}`));
    const blocks = data.pretrain;
    if (blocks) out.push(el("p", {}, `${t("pretrain_blocks")}: ${blocks.documents} documents, ${blocks.tokens} tokens, ${blocks.blocks} × ${blocks.block}`));
    else {
      const example = el("pre", { id: "example" });
      for (const piece of data.example?.pieces || []) example.append(piece.trained ? el("mark", { class: "trained" }, piece.text) : piece.text);
      out.push(el("small", {}, t("trained_tokens")), example);
    }
  }
  const dry = result.settings || {};
  if (dry.error) out.push(el("div", { class: "error" }, dry.error));
  else {
    const body = el("tbody");
    for (const [section, values] of Object.entries(dry.config || {}))
      for (const [key, value] of Object.entries(values))
        body.append(el("tr", {}, el("td", {}, `${section}.${key}`), el("td", {}, JSON.stringify(value)), el("td", {}, dry.sources[`${section}.${key}`])));
    out.push(el("table", { id: "settings-table" }, el("thead", {}, el("tr", {}, el("th", {}, t("setting")), el("th", {}, t("value")), el("th", {}, t("source")))), body));
  }
  $("#check-out").replaceChildren(...out);
}
function pairCheck(data) {  // `data check --method dpo|orpo|kto`: one pair, the answer tokens each side is scored on
  const unpaired = data.unpaired ? `, ${data.unpaired} ${t("unpaired")}` : "";
  const out = [el("p", { id: "check-summary" }, `${t("method")}: ${data.method} · ${data.rows} ${t("pairs")} (${data.format}${unpaired}); train ${data.split.train}, held out ${data.split.held_out}; ${data.template}`)];
  if (data.pair) out.push(el("small", {}, t("scored_tokens")));
  for (const side of data.pair ? ["chosen", "rejected"] : [])
    out.push(el("p", {}, `${t(side)} (${data.pair[side].tokens})`), el("pre", { class: `pair ${side}` }, data.pair.prompt.text, el("mark", { class: "trained" }, data.pair[side].text)));
  return out;
}
$("#new-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const started = await api("POST", "/api/runs", { name: $("#f-name").value.trim() || undefined, settings: formSettings() });
    location.hash = `run/${encodeURIComponent(started.id)}`;
  } catch (err) { showError("#check-out", err); }
});

// --- runs -------------------------------------------------------------------------------------
async function loadRuns() {
  const { runs } = await api("GET", "/api/runs");
  const rows = runs.map((run) => {
    const figures = figureText(run.figures);
    const row = el("tr", { class: "clickable", "data-run": run.id },
      el("td", {}, el("input", { type: "checkbox", value: run.id })), el("td", {}, run.id),
      el("td", {}, el("span", { class: `status ${run.status}` }, t(run.status))), el("td", {}, run.model || ""),
      el("td", {}, run.data || ""), el("td", {}, run.method || ""), el("td", {}, `${run.step}/${run.max_steps ?? "?"}`), el("td", {}, figures));
    row.addEventListener("click", (e) => { if (e.target.tagName !== "INPUT") location.hash = `run/${encodeURIComponent(run.id)}`; });
    return row;
  });
  $("#runs-table tbody").replaceChildren(...rows);
  $("#no-runs").hidden = runs.length > 0;
}
$("#compare").addEventListener("click", async () => {
  const ids = [...document.querySelectorAll("#runs-table input:checked")].map((box) => box.value).slice(0, 2);
  if (ids.length < 2) return $("#compare-out").replaceChildren(el("p", { class: "muted" }, t("compare_hint")));
  let compared;
  try { compared = await api("GET", `/api/compare?${ids.map((id) => `runs=${encodeURIComponent(id)}`).join("&")}`); }
  catch (err) { return showError("#compare-out", err); }
  const { runs, figures } = compared;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 600 240");
  svg.id = "compare-chart";
  drawChart(svg, runs.map((run) => ({ label: run.id, points: run.points })));
  const row = (label, cell) => el("tr", {}, el("td", {}, label), ...runs.map((run) => el("td", {}, cell(run))));
  const table = el("table", { id: "compare-figures" }, el("tr", {}, el("th", {}), ...runs.map((run) => el("th", {}, run.id))),
    row(t("method"), (run) => run.method || ""), ...figures.map((key) => row(t(key), (run) => figureValue(key, run.figures[key]))));
  $("#compare-out").replaceChildren(svg, table);
});

// --- the chart: one SVG polyline per run, axes from the data ----------------------------------
const COLORS = ["#0b6bcb", "#d9480f", "#2b8a3e"];
function drawChart(svg, series) {
  const NS = "http://www.w3.org/2000/svg", W = 600, H = 240, L = 50, B = 25, pad = 10;
  const all = series.flatMap((s) => s.points);
  svg.replaceChildren();
  if (!all.length) return;
  const xs = all.map((p) => p.step), ys = all.map((p) => p.loss).filter(Number.isFinite);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - pad), Y = (y) => pad + (1 - (y - y0) / (y1 - y0)) * (H - B - pad);
  const add = (tag, attrs, text) => { const n = document.createElementNS(NS, tag); for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v); if (text != null) n.textContent = text; svg.append(n); return n; };
  add("line", { x1: L, y1: H - B, x2: W - pad, y2: H - B, stroke: "#d0d7de" });
  add("line", { x1: L, y1: pad, x2: L, y2: H - B, stroke: "#d0d7de" });
  add("text", { x: 4, y: pad + 10 }, fmt(y1, 3));
  add("text", { x: 4, y: H - B }, fmt(y0, 3));
  add("text", { x: L, y: H - 6 }, `${t("step")} ${x0}`);
  add("text", { x: W - 60, y: H - 6 }, `${x1}`);
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = s.points.filter((p) => Number.isFinite(p.loss)).map((p) => `${X(p.step).toFixed(1)},${Y(p.loss).toFixed(1)}`);
    add("polyline", { class: "line", points: pts.join(" "), stroke: color, "data-points": pts.length });
    for (const p of s.points) if (Number.isFinite(p.loss)) add("circle", { cx: X(p.step), cy: Y(p.loss), r: 2.5, fill: color, class: "point" });
    if (series.length > 1) add("text", { x: W - 150, y: 20 + 14 * i, fill: color }, s.label);
  });
}

// --- one run ----------------------------------------------------------------------------------
function openRun(id) {
  if (source) source.close();
  currentRun = null;
  $("#run-id").textContent = id;
  for (const box of ["#chat-log", "#eval-out", "#export-out"]) $(box).replaceChildren();
  source = new EventSource(`/api/runs/${encodeURIComponent(id)}/events`);
  source.onmessage = (event) => {
    const run = JSON.parse(event.data);
    renderRun(run);
    if (!LIVE.includes(run.status)) { source.close(); source = null; }
  };
}
function renderRun(run) {
  currentRun = run;
  $("#run-id").textContent = run.id;
  const status = $("#run-status");
  status.className = `status ${run.status}`;
  status.textContent = t(run.status);
  status.dataset.status = run.status;
  const p = run.progress || {};
  const eta = p.eta_s != null && LIVE.includes(run.status) ? ` · ${t("eta")} ${Math.round(p.eta_s)} s` : "";
  $("#run-progress").textContent = `${t("step")} ${p.step ?? 0}/${p.max_steps ?? "?"}` + (p.tokens_per_s ? ` · ${fmt(p.tokens_per_s, 0)} ${t("tokens_s")}` : "") + eta;
  $("#run-meta").textContent = [[t("base_model"), run.model], [t("data"), run.data], [t("method"), run.method]]
    .filter(([, value]) => value).map(([label, value]) => `${label}: ${value}`).join(" · ");
  $("#run-figures").textContent = figureText(run.figures);
  $("#run-error").hidden = !run.error;
  $("#run-error").textContent = run.error || "";
  $("#stop").disabled = !LIVE.includes(run.status);
  $("#resume").disabled = !["stopped", "failed"].includes(run.status);
  drawChart($("#chart"), [{ label: run.id, points: run.points || [] }]);
  $("#run-checkpoints").textContent = (run.checkpoints || []).join(", ") || "—";
  const log = $("#run-log");
  log.textContent = (run.log_tail || []).join("\n");
  log.scrollTop = log.scrollHeight;  // the newest line in view, as `tail -f` shows it
  $("#finished-tools").hidden = run.status !== "finished";
  const job = run.job;
  $("#job-line").textContent = job ? `${job.kind}: ${t(job.state)}${job.queue_position ? ` #${job.queue_position}` : ""} — ${job.command}` : "";
}
async function refreshRun() {
  const run = await api("GET", `/api/runs/${encodeURIComponent(currentRun.id)}`);
  renderRun(run);
  return run;
}
function waitForJob(kind, done) {
  clearInterval(jobTimer);
  jobTimer = setInterval(async () => {
    const run = await refreshRun();
    if (run.job && run.job.kind === kind) return;
    clearInterval(jobTimer);
    const last = (run.jobs || []).filter((job) => job.kind === kind).pop();
    done(last);
  }, 700);
}
$("#stop").addEventListener("click", () => api("POST", `/api/runs/${encodeURIComponent(currentRun.id)}/stop`).catch((e) => showError("#run-error", e)));
$("#resume").addEventListener("click", async () => {
  try { await api("POST", `/api/runs/${encodeURIComponent(currentRun.id)}/resume`); openRun(currentRun.id); }
  catch (err) { $("#run-error").hidden = false; $("#run-error").textContent = err.message; }
});

// --- chat: the answer streams in as plain text -------------------------------------------------
async function ask(model, messages, bubble) {
  const response = await fetch(`/api/runs/${encodeURIComponent(currentRun.id)}/chat`, {
    method: "POST", headers: { "X-Studio-Token": TOKEN, "Content-Type": "application/json" },
    body: JSON.stringify({ model, messages, max_new_tokens: 64 }),
  });
  if (!response.ok) throw new Error((await response.json()).error);
  const reader = response.body.getReader(), decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    bubble.textContent += decoder.decode(value, { stream: true });
  }
}
$("#chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("#chat-input").value.trim();
  if (!text) return;
  $("#chat-input").value = "";
  const messages = [{ role: "user", content: text }];
  $("#chat-log").append(el("div", { class: "bubble user" }, text));
  const models = $("#chat-base").checked ? ["tuned", "base"] : ["tuned"];
  const row = el("div", { class: models.length > 1 ? "answers" : "" });
  $("#chat-log").append(row);
  for (const model of models) {
    const bubble = el("div", { class: `bubble answer ${model}`, title: t(model) });
    row.append(bubble);
    try { await ask(model, messages, bubble); bubble.dataset.done = "1"; } catch (err) { showError(bubble, err); }
  }
});

// --- evaluate and export run as jobs; the page polls until they end ----------------------------
$("#eval").addEventListener("click", async () => {
  try {
    await api("POST", `/api/runs/${encodeURIComponent(currentRun.id)}/eval`, { limit: 8 });
    $("#eval-out").replaceChildren(el("p", { class: "muted" }, "…"));
    waitForJob("eval", async (job) => {
      if (job && job.error) return showError("#eval-out", new Error(job.error));
      renderEval(await api("GET", `/api/runs/${encodeURIComponent(currentRun.id)}/eval`));
    });
  } catch (err) { showError("#eval-out", err); }
});
function renderEval(report) {
  const keys = Object.keys(report.tuned || {}).filter((k) => typeof report.tuned[k] === "number");
  const figures = el("table", { id: "eval-figures" }, el("tr", {}, el("th", {}), el("th", {}, t("base")), el("th", {}, t("tuned"))),
    ...keys.map((k) => el("tr", {}, el("td", {}, k), el("td", {}, fmt(report.base?.[k])), el("td", {}, fmt(report.tuned[k])))));
  const samples = (report.samples || []).slice(0, 5).map((s) => el("div", {}, el("p", {}, el("b", {}, `${t("question")}: `), s.question),
    el("div", { class: "answers" }, el("div", { class: "bubble" }, `${t("base")}: ${s.base}`), el("div", { class: "bubble" }, `${t("tuned")}: ${s.tuned}`))));
  $("#eval-out").replaceChildren(figures, ...samples);
}
$("#export").addEventListener("click", async () => {
  const [format, quant] = $("#export-format").value.split(":");
  try {
    await api("POST", `/api/runs/${encodeURIComponent(currentRun.id)}/export`, { format, quant: quant || null });
    $("#export-out").replaceChildren(el("p", { class: "muted" }, "…"));
    waitForJob("export", async (job) => {
      if (job && job.error) return showError("#export-out", new Error(job.error));
      await loadExports($("#export-out"), currentRun.id);
    });
  } catch (err) { showError("#export-out", err); }
});
async function loadExports(box, run) {
  const { exports } = await api("GET", "/api/exports");
  const shown = exports.filter((x) => !run || x.name.startsWith(`${run}-`));
  box.replaceChildren(...shown.map((x) => el("div", { class: "export" }, el("h4", {}, x.name),
    el("ul", {}, ...x.files.map((f) => el("li", {}, el("a", { href: `/api/exports/${encodeURIComponent(x.name)}/${encodeURIComponent(f)}`, download: f }, `${t("download")} ${f}`)))),
    x.ollama ? el("p", {}, `${t("ollama")}: `, el("code", {}, x.ollama)) : "")));
}

// --- start ------------------------------------------------------------------------------------
(async () => {
  STRINGS = await api("GET", "/api/i18n");
  applyStrings();
  const defaults = DEFAULTS = await api("GET", "/api/defaults");
  $("#model-presets").replaceChildren(...defaults.models.map((m) => el("option", { value: m })));
  $("#data-presets").replaceChildren(...defaults.datasets.map((d) => el("option", { value: d })));
  $("#f-method").append(...defaults.methods.map((m) => el("option", { value: m, "data-i18n": `method_${m}` }, t(`method_${m}`))));
  route();
  document.body.dataset.readyMs = String(Math.round(performance.now()));  // benchmarks/studio_load.py reads it
  document.body.dataset.ready = "1";
})();
