// Analyze: images picked or dropped here go to POST /v1/analyze, a few at a time; each answer is drawn as a card (top
// classes, quality with the region each defect was measured in drawn over the image, metadata, GPS map, palette).

import { $, api, csvCell, download, el, errorText, inPool } from "./core.js";
import { worldMap } from "./map.js";

const results = [];
let session = 0; // bumped when another key signs in: the previous key's answers still arriving are dropped
const WHOLE_FRAME = "0,0,1,1";
// Uploads in flight: a dropped folder stays inside the server's admission limit. A key's rate is not known here: the
// first refusal for it (429) leaves one upload at a time, each refused one sent again after the server's Retry-After
// (core.js request): a folder dropped with a key of 1 request/s is analyzed whole, only slower (unless
// something else spends the key's rate meanwhile).
const AT_ONCE = 3;

export async function showAnalyze() {
  const select = $("#model");
  if (select.options.length) return;
  const listing = await api("/v1/models");
  for (const model of listing.models) {
    if (model.task !== "classification" || model.state !== "READY") continue;
    const option = el("option", { value: model.name, text: `${model.name} (v${model.version})` });
    if (model.name === listing.default_model) option.selected = true;
    select.append(option);
  }
}

// Another key signed in: nothing the previous key analysed, nor its classifier list (a tenant may have its own), stays.
export function forgetAnalyze() {
  session += 1;
  results.length = 0;
  $("#results").replaceChildren();
  $("#analyze-status").textContent = "";
  $("#model").replaceChildren();
  $("#download-json").disabled = $("#download-csv").disabled = true;
}

const isImage = (file) => file.type.startsWith("image/") || /\.(jpe?g|png|webp|tiff?|bmp|gif|heic|heif|avif)$/i.test(file.name);

// Files that are not images are not sent; the status line names them (up to 3), or a drop would seem to do nothing.
function skippedText(files) {
  if (!files.length) return "";
  const names = files.slice(0, 3).map((file) => file.name).join(", ") + (files.length > 3 ? ` and ${files.length - 3} more` : "");
  return ` · skipped ${files.length} file(s) that are not an image: ${names}`;
}

async function analyzeFiles(files) {
  const images = [...files].filter(isImage);
  const skipped = skippedText([...files].filter((file) => !isImage(file)));
  const status = $("#analyze-status");
  if (!images.length) { status.textContent = skipped ? `Nothing to analyze${skipped}` : ""; return; }
  let analyzed = 0;
  let failed = 0;
  status.textContent = `Analyzing ${images.length} image(s)…${skipped}`;
  const model = $("#model").value;
  const mine = session;
  const cards = images.map((file) => {
    const card = el("article", { class: "card result", "aria-busy": "true" }, el("h2", { text: file.name }));
    $("#results").prepend(card);
    return [file, card];
  });
  let width = AT_ONCE;
  const slowDown = () => { width = 1; };
  await inPool(cards, () => width, async ([file, card]) => {
    if (mine !== session) return; // not sent with the key signed in since
    const form = new FormData();
    form.append("image", file, file.name);
    try {
      // an analysis changes nothing: one refused for the key's rate is sent again after the server's Retry-After
      // (a few times, spread out)
      const answer = await api(`/v1/analyze?top_k=3${model ? `&model=${encodeURIComponent(model)}` : ""}`, { method: "POST", body: form, retry: true, onRateLimited: slowDown });
      const result = answer.results[0];
      if (mine !== session) return;
      results.push({ name: file.name, result });
      const src = URL.createObjectURL(file);
      renderResult(card, src, file.name, result);
      const preview = card.querySelector(".preview img"); // drawn once loaded: the file's URL is let go then
      for (const done of ["load", "error"]) preview.addEventListener(done, () => URL.revokeObjectURL(src), { once: true });
      analyzed += 1;
    } catch (error) {
      card.append(el("p", { class: "error", role: "alert", text: errorText(error) }));
      failed += 1;
    } finally {
      card.removeAttribute("aria-busy");
    }
    if (mine === session) {
      const left = images.length - analyzed - failed;
      status.textContent = `${analyzed} analyzed, ${failed} failed${left ? `, ${left} to go` : ""}${skipped}`;
      $("#download-json").disabled = $("#download-csv").disabled = results.length === 0;
    }
  });
}

// An exposure as a camera shows it: whole or decimal seconds from 1 s, or under it, 1/N when the time is (close to)
// a unit fraction and decimal seconds otherwise (0.4 s is not "1/3 s").
export function exposureText(t) {
  if (t >= 1) return `${+t.toFixed(1)} s`;
  const n = 1 / t;
  return Math.abs(n - Math.round(n)) <= 0.02 * n ? `1/${Math.round(n)} s` : `${+t.toPrecision(2)} s`;
}

const number = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(3));

// The box a tag's evidence names (x0, y0, x1, y1 in 0..1 of the upright image), drawn over the preview.
function regionBox(tag) {
  const region = tag.evidence?.region;
  if (!Array.isArray(region) || region.length !== 4 || region.join(",") === WHOLE_FRAME) return null;
  const [x0, y0, x1, y1] = region;
  const box = el("span", { class: "region", title: `${tag.name}: measured here` }, el("span", { text: tag.name }));
  Object.assign(box.style, { left: `${x0 * 100}%`, top: `${y0 * 100}%`, width: `${(x1 - x0) * 100}%`, height: `${(y1 - y0) * 100}%` });
  return box;
}

function evidenceText(evidence) {
  return Object.entries(evidence || {}).filter(([k]) => k !== "region")
    .map(([k, v]) => `${k} = ${typeof v === "number" ? number(v) : Array.isArray(v) ? v.map((x) => Number(x).toFixed(2)).join("–") : v}`)
    .join(", ");
}

export function renderResult(card, src, name, result) {
  const figure = el("figure", { class: "preview" }, el("img", { alt: name, src }));
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
      const region = tag.evidence?.region;
      const where = Array.isArray(region) && region.join(",") !== WHOLE_FRAME ? " · box on the image" : "";
      tags.append(el("li", {}, el("strong", { text: tag.name }), el("span", { text: ` ${(tag.confidence * 100).toFixed(0)} % · ${tag.rule}${where}` }),
        el("small", { text: evidenceText(tag.evidence) })));
      const box = regionBox(tag);
      if (box) figure.append(box);
    }
    if (!quality.tags.length) tags.append(el("li", { text: "no defect found" }));
    facts.append(tags);
  }

  const meta = result.metadata;
  if (meta) renderMetadata(facts, meta);
}

function renderMetadata(facts, meta) {
  const rows = [];
  const exif = meta.exif || {};
  const camera = [exif.make, exif.model].filter(Boolean).join(" ");
  if (camera) rows.push(["Camera", camera]);
  if (exif.lens_model) rows.push(["Lens", exif.lens_model]);
  const exposure = [exif.exposure_time_s > 0 && exposureText(exif.exposure_time_s), exif.f_number && `f/${exif.f_number}`,
    exif.iso && `ISO ${exif.iso}`, exif.focal_length_mm && `${exif.focal_length_mm} mm`].filter(Boolean).join(" · ");
  if (exposure) rows.push(["Exposure", exposure]);
  if (exif.datetime_original) rows.push(["Taken", exif.datetime_original]);
  if (meta.image) rows.push(["Size", `${meta.image.width} × ${meta.image.height} ${meta.file?.format || ""}`]);
  const gps = meta.gps || {};
  const located = gps.latitude_deg != null && gps.longitude_deg != null;
  if (located) rows.push(["GPS", `${gps.latitude_deg.toFixed(5)}, ${gps.longitude_deg.toFixed(5)}`]);
  const table = el("dl", { class: "meta" });
  for (const [name, value] of rows) table.append(el("dt", { text: name }), el("dd", { text: value }));
  facts.append(el("h3", { text: "Metadata" }), rows.length ? table : el("p", { class: "hint", text: "no camera metadata" }));
  if (located) facts.append(worldMap([{ lat: gps.latitude_deg, lon: gps.longitude_deg }], "Where it was taken"));
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

function resultsCsv() {
  const lines = [["image", "top_label", "top_score", "quality_score", "quality_level", "tags", "camera", "taken"].join(",")];
  for (const { name, result } of results) {
    const top = result.classification?.predictions?.[0];
    const exif = result.metadata?.exif || {};
    lines.push([name, top?.label, top?.score, result.quality?.score, result.quality?.level,
      (result.quality?.tags || []).map((t) => t.name).join(" "), [exif.make, exif.model].filter(Boolean).join(" "),
      exif.datetime_original].map(csvCell).join(","));
  }
  return lines.join("\n") + "\n";
}

export function wireAnalyze() {
  $("#files").addEventListener("change", (event) => analyzeFiles(event.target.files));
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => { event.preventDefault(); drop.classList.remove("over"); analyzeFiles(event.dataTransfer.files); });
  $("#download-json").addEventListener("click", () => download("imgserve-results.json", "application/json", JSON.stringify(results, null, 2)));
  $("#download-csv").addEventListener("click", () => download("imgserve-results.csv", "text/csv", resultsCsv()));
}
