// imgserve web UI: plain DOM, no framework, no network but this server's own /v1 and /v2 routes.
// Every value shown is set with textContent, never parsed as HTML: file names and labels cannot inject markup.

const KEY = "imgserve.apiKey";
const state = { me: null, results: [], models: [] };

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error || `HTTP ${status}`);
    this.status = status;
    this.kind = body?.kind || "";
  }
}

async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY);
  const headers = new Headers(options.headers || {});
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// ---- sign in -------------------------------------------------------------------------------------
async function signIn(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
  try {
    state.me = await api("/v1/whoami");
  } catch (error) {
    sessionStorage.removeItem(KEY);
    state.me = null;
    throw error;
  }
  showIdentity();
}

function showIdentity() {
  const me = state.me;
  $("#nav").hidden = !me;
  $("#signout").hidden = !me;
  $("#who").textContent = me ? `${me.role} · tenant ${me.tenant}${me.key_id ? ` · key ${me.key_id}` : ""}` : "";
  const rank = ["viewer", "analyst", "operator", "admin"];
  for (const link of document.querySelectorAll("[data-role]")) {
    // Controls a role may not use are removed, not just hidden: a viewer's page has no admin link at all.
    const allowed = me && rank.indexOf(me.role) >= rank.indexOf(link.dataset.role);
    if (!allowed) link.remove();
  }
}

// ---- pages ---------------------------------------------------------------------------------------
const pages = { signin: null, analyze: showAnalyze, server: showServer, audit: showAudit };

async function route() {
  let page = (location.hash.replace(/^#\//, "") || "analyze").split("?")[0];
  if (!(page in pages)) page = "analyze";
  if (!state.me && page !== "signin") {
    try {
      await signIn(sessionStorage.getItem(KEY) || "");
    } catch {
      page = "signin";
    }
  }
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${page}`;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (pages[page]) await pages[page]();
  $(`#page-${page} h1`)?.focus?.();
}

// ---- analyze -------------------------------------------------------------------------------------
async function showAnalyze() {
  const select = $("#model");
  if (select.options.length) return;
  const listing = await api("/v1/models");
  state.models = listing.models;
  for (const model of listing.models) {
    if (model.task !== "classification" || model.state !== "READY") continue;
    const option = el("option", { value: model.name, text: `${model.name} (v${model.version})` });
    if (model.name === listing.default_model) option.selected = true;
    select.append(option);
  }
}

async function analyzeFiles(files) {
  const images = [...files].filter((file) => file.type.startsWith("image/") || file.name.match(/\.(jpe?g|png|webp|tiff?|bmp|gif|heic|heif|avif)$/i));
  if (!images.length) return;
  const status = $("#analyze-status");
  let done = 0;
  status.textContent = `Analyzing ${images.length} image(s)…`;
  const model = $("#model").value;
  await Promise.all(images.map(async (file) => {
    const card = el("article", { class: "card result", "aria-busy": "true" }, el("h2", { text: file.name }));
    $("#results").prepend(card);
    const form = new FormData();
    form.append("image", file, file.name);
    try {
      const answer = await api(`/v1/analyze?top_k=3${model ? `&model=${encodeURIComponent(model)}` : ""}`, { method: "POST", body: form });
      const result = answer.results[0];
      state.results.push({ name: file.name, result });
      renderResult(card, file, result);
    } catch (error) {
      card.append(el("p", { class: "error", role: "alert", text: `${error.kind || "error"}: ${error.message}` }));
    } finally {
      card.removeAttribute("aria-busy");
      done += 1;
      status.textContent = `${done} of ${images.length} analyzed`;
      $("#download-json").disabled = $("#download-csv").disabled = state.results.length === 0;
    }
  }));
}

function renderResult(card, file, result) {
  const figure = el("figure", { class: "preview" });
  const image = el("img", { alt: file.name, src: URL.createObjectURL(file) });
  figure.append(image);
  card.append(figure);
  const facts = el("div", { class: "facts" });
  card.append(facts);

  const classification = result.classification;
  if (classification) {
    const list = el("ol", { class: "classes", "aria-label": "Top classes" });
    for (const p of classification.predictions) {
      const bar = el("span", { class: "bar-fill" });
      bar.style.width = `${Math.round(p.score * 100)}%`;
      list.append(el("li", {}, el("span", { class: "label", text: p.label }), el("span", { class: "bar" }, bar),
        el("span", { class: "score", text: `${(p.score * 100).toFixed(1)} %` })));
    }
    facts.append(el("h3", { text: `Classes (${classification.model} v${classification.model_version || "?"})` }), list);
  }

  const quality = result.quality;
  if (quality) {
    facts.append(el("h3", { text: "Quality" }),
      el("p", { class: `level level-${quality.level.toLowerCase()}`, text: `${quality.score.toFixed(0)} / 100 · ${quality.level}` }));
    const tags = el("ul", { class: "tags", "aria-label": "Quality tags" });
    for (const tag of quality.tags) {
      const evidence = Object.entries(tag.evidence || {}).map(([k, v]) => `${k} = ${typeof v === "number" ? v.toFixed(3) : v}`).join(", ");
      tags.append(el("li", {}, el("strong", { text: tag.name }), el("span", { text: ` ${(tag.confidence * 100).toFixed(0)} % · ${tag.rule}` }),
        el("small", { text: evidence })));
    }
    if (!quality.tags.length) tags.append(el("li", { text: "no defect found" }));
    facts.append(tags);
  }

  const meta = result.metadata;
  if (meta) {
    const rows = [];
    const exif = meta.exif || {};
    const camera = [exif.make, exif.model].filter(Boolean).join(" ");
    if (camera) rows.push(["Camera", camera]);
    if (exif.lens_model) rows.push(["Lens", exif.lens_model]);
    const exposure = [exif.exposure_time_s && `1/${Math.round(1 / exif.exposure_time_s)} s`, exif.f_number && `f/${exif.f_number}`,
      exif.iso && `ISO ${exif.iso}`, exif.focal_length_mm && `${exif.focal_length_mm} mm`].filter(Boolean).join(" · ");
    if (exposure) rows.push(["Exposure", exposure]);
    if (exif.datetime_original) rows.push(["Taken", exif.datetime_original]);
    if (meta.image) rows.push(["Size", `${meta.image.width} × ${meta.image.height} ${meta.file?.format || ""}`]);
    const gps = meta.gps || {};
    if (gps.latitude_deg != null && gps.longitude_deg != null) rows.push(["GPS", `${gps.latitude_deg.toFixed(5)}, ${gps.longitude_deg.toFixed(5)}`]);
    const table = el("dl", { class: "meta" });
    for (const [name, value] of rows) table.append(el("dt", { text: name }), el("dd", { text: value }));
    facts.append(el("h3", { text: "Metadata" }), rows.length ? table : el("p", { class: "hint", text: "no camera metadata" }));
    const palette = meta.colors?.palette || [];
    if (palette.length) {
      const swatches = el("div", { class: "palette", role: "list", "aria-label": "Colour palette" });
      for (const swatch of palette) {
        const chip = el("span", { class: "swatch", role: "listitem", title: `${swatch.hex} ${(swatch.fraction * 100).toFixed(0)} %`, "aria-label": swatch.hex });
        chip.style.background = swatch.hex;
        chip.style.flexGrow = String(Math.max(swatch.fraction, 0.02));
        swatches.append(chip);
      }
      facts.append(swatches);
    }
  }
}

function download(name, type, text) {
  const link = el("a", { href: URL.createObjectURL(new Blob([text], { type })), download: name });
  document.body.append(link);
  link.click();
  link.remove();
}

function csvCell(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function resultsCsv() {
  const lines = [["image", "top_label", "top_score", "quality_score", "quality_level", "tags", "camera", "taken"].join(",")];
  for (const { name, result } of state.results) {
    const top = result.classification?.predictions?.[0];
    const exif = result.metadata?.exif || {};
    lines.push([name, top?.label, top?.score, result.quality?.score, result.quality?.level,
      (result.quality?.tags || []).map((t) => t.name).join(" "), [exif.make, exif.model].filter(Boolean).join(" "),
      exif.datetime_original].map(csvCell).join(","));
  }
  return lines.join("\n") + "\n";
}

// ---- server ----------------------------------------------------------------------------------------
async function showServer() {
  const listing = await api("/v1/models");
  const body = $("#models-table tbody");
  body.replaceChildren();
  for (const model of listing.models) {
    const versions = (model.versions || []).map((v) => `v${v.version} ${v.state === "READY" ? `${v.traffic_percent} %` : "—"}` +
      (v.accuracy != null ? `, acc ${(v.accuracy * 100).toFixed(1)} %` : "")).join("; ");
    const backend = model.backend?.backend ? `${model.backend.backend} ${model.backend.device} ${model.backend.precision}` : "";
    body.append(el("tr", {}, el("th", { scope: "row", text: model.name }), el("td", { text: model.task }),
      el("td", { class: model.state === "READY" ? "ok" : "warn", text: model.state, title: model.reason || "" }),
      el("td", { text: backend }), el("td", { text: versions })));
  }
  const deployments = $("#deployments-table tbody");
  deployments.replaceChildren();
  try {
    const status = await api("/v1/status");
    $("#deployments-note").textContent = "";
    for (const app of Object.values(status.applications)) {
      for (const [name, info] of Object.entries(app.deployments)) {
        const replicas = Object.entries(info.replicas).map(([s, n]) => `${n} ${s.toLowerCase()}`).join(", ");
        deployments.append(el("tr", {}, el("th", { scope: "row", text: name }), el("td", { text: info.status }), el("td", { text: replicas })));
      }
    }
  } catch (error) {
    $("#deployments-note").textContent = error.status === 403 ? "Replica counts need an operator key." : `Replica counts unavailable: ${error.message}`;
  }
}

async function showAudit() {
  const since = Date.now() / 1000 - 7 * 86400;
  const answer = await api(`/v1/audit?since=${since}&limit=1000`);
  const body = $("#audit-table tbody");
  body.replaceChildren();
  for (const entry of answer.entries.slice(-100).reverse()) {
    body.append(el("tr", {}, el("td", { text: new Date(entry.at * 1000).toISOString().replace("T", " ").slice(0, 19) }),
      el("td", { text: entry.action }), el("td", { text: entry.outcome }),
      el("td", { text: [entry.role, entry.tenant, entry.key_id].filter(Boolean).join(" · ") || "—" }), el("td", { text: entry.target || "" })));
  }
}

// ---- wiring --------------------------------------------------------------------------------------
function wire() {
  $("#signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("#signin-error").textContent = "";
    try {
      await signIn($("#api-key").value.trim());
      $("#api-key").value = "";
      location.hash = "#/analyze";
    } catch (error) {
      $("#signin-error").textContent = error.status === 401 ? "That key was not accepted." : error.message;
    }
  });
  $("#signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    location.hash = "#/signin";
    location.reload();
  });
  $("#files").addEventListener("change", (event) => analyzeFiles(event.target.files));
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => { event.preventDefault(); drop.classList.remove("over"); analyzeFiles(event.dataTransfer.files); });
  $("#download-json").addEventListener("click", () => download("imgserve-results.json", "application/json", JSON.stringify(state.results, null, 2)));
  $("#download-csv").addEventListener("click", () => download("imgserve-results.csv", "text/csv", resultsCsv()));
  window.addEventListener("hashchange", () => route().catch(showError));
}

function showError(error) {
  $("#analyze-status").textContent = `${error.kind || "error"}: ${error.message}`;
}

wire();
route().catch(showError);
