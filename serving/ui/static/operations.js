// Enhance and convert: one image through POST /v1/enhance (auto or manual) or POST /v1/convert; the original and
// the result side by side with sizes, compression ratio and (enhance) the quality score before and after, from the
// answer's X-Imgserve-* headers; the result downloads as the file the server wrote.

import { $, api, bytes, el, errorText, request, saveBlob } from "./core.js";

const FACTORS = ["brightness", "contrast", "saturation", "sharpness"];
let loaded = false;
let output = null;
let runs = 0; // bumped by each run: an earlier run's late answer does not replace a later one's
let shownUrls = []; // object URLs of the pictures shown: let go when the next run replaces them

export async function showConvert() {
  if (loaded) return;
  const [formats, options] = await Promise.all([api("/v1/formats"), api("/v1/enhance/options")]);
  const select = $("#convert-format");
  for (const format of formats.output) {
    const option = el("option", { value: format.format, text: format.format.toUpperCase(), disabled: !format.available });
    if (!format.available) option.title = format.reason || "not available";
    if (format.format === "webp") option.selected = true;
    select.append(option);
  }
  const ops = $("#manual-ops");
  for (const op of options.operations) {
    const id = `op-${op.name}`;
    ops.append(el("label", { for: id, title: op.description }, el("input", { type: "checkbox", id, value: op.name }), ` ${op.name.replaceAll("_", " ")}`));
  }
  loaded = true;
}

function query() {
  const params = new URLSearchParams();
  const mode = new FormData($("#convert-form")).get("enhance");
  params.set("format", $("#convert-format").value);
  const lossy = !["png", "bmp", "gif", "tiff"].includes($("#convert-format").value);
  if (lossy) params.set("quality", $("#convert-quality").value);
  if ($("#convert-max-side").value) params.set("max_side", $("#convert-max-side").value);
  if (mode === "auto") params.set("auto", "true");
  let changes = 0;
  if (mode === "manual") {
    params.set("auto", "false"); // no option at all would be read as auto (pipelines/enhance/plan.py)
    for (const name of FACTORS) {
      if ($(`#factor-${name}`).value === "1") continue;
      params.set(name, $(`#factor-${name}`).value);
      changes += 1;
    }
    const ops = [...document.querySelectorAll("#manual-ops input:checked")].map((box) => box.value);
    if (ops.length) params.set("ops", ops.join(","));
    changes += ops.length;
  }
  return { mode, params, changes };
}

function showPictures(...urls) {
  for (const url of shownUrls) URL.revokeObjectURL(url);
  shownUrls = urls;
  return urls;
}

function saving(before, after) {
  const change = (after - before) / before;
  return change <= 0 ? `${(-change * 100).toFixed(0)} % smaller` : `${(change * 100).toFixed(0)} % larger`;
}

// A picture the browser cannot decode (Chromium shows no TIFF or HEIF, whatever the server writes) is replaced by a
// note saying so, not left as a broken image: the file itself is right and downloads as it is.
function figure(caption, src, format, lines) {
  const picture = el("img", { src, alt: caption });
  picture.addEventListener("error", () => {
    const what = format ? `${format.toUpperCase()} images` : "this image";
    picture.replaceWith(el("p", { class: "hint no-preview", text: `This browser cannot show ${what}; download the file to see it.` }));
  }, { once: true });
  return el("figure", { class: "side" }, picture, el("figcaption", {}, el("strong", { text: caption }),
    ...lines.filter(Boolean).map((line) => el("span", { text: line }))));
}

// Nothing of the last result stays: its pictures, its figures and the Download button of its file.
function clearResult() {
  runs += 1; // and an earlier run still under way shows nothing when it ends
  output = null;
  showPictures();
  $("#convert-result").replaceChildren();
}

async function run(event) {
  event.preventDefault();
  const file = $("#convert-file").files[0];
  const status = $("#convert-status");
  const out = $("#convert-result");
  if (!file) { status.textContent = "Choose an image first."; return; }
  const { mode, params, changes } = query();
  if (mode === "manual" && !changes) {
    clearResult(); // the previous run's result and Download stayed, as if they were this run's
    status.textContent = "Manual: nothing to change. Move a slider or tick an operation (or choose None or Automatic).";
    return;
  }
  const mine = ++runs;
  const path = `/v1/${mode === "none" ? "convert" : "enhance"}?${params}`;
  const form = new FormData();
  form.append("image", file, file.name);
  status.textContent = "Working…";
  out.replaceChildren();
  showPictures();
  try {
    const response = await request(path, { method: "POST", body: form });
    const blob = await response.blob();
    if (mine !== runs) return;
    const h = (name) => response.headers.get(`X-Imgserve-${name}`);
    const extension = (h("Format") || "img").replace("jpeg", "jpg");
    const name = `${file.name.replace(/\.[^.]+$/, "")}.${extension}`;
    output = { name, blob };
    const ratio = Number(h("Compression-Ratio"));
    const before = h("Score-Before");
    const after = h("Score-After");
    const [beforeUrl, afterUrl] = showPictures(URL.createObjectURL(file), URL.createObjectURL(blob));
    out.append(
      figure("Before", beforeUrl, file.name.match(/\.([^.]+)$/)?.[1], [bytes(file.size), before && `quality ${before} · ${h("Tags-Before")}`]),
      figure("After", afterUrl, h("Format"), [`${bytes(Number(h("Output-Bytes")))} · ${h("Size")} ${h("Format")?.toUpperCase()}`,
        `compression ${ratio.toFixed(2)}:1 (${saving(file.size, blob.size)})`,
        after && `quality ${after} · ${h("Tags-After")}`, mode !== "none" && `applied: ${h("Operations")}`]),
    );
    out.append(el("button", { type: "button", id: "convert-download", text: `Download ${name}` }));
    $("#convert-download").addEventListener("click", () => saveBlob(output.name, output.blob));
    status.textContent = `Done: ${name}, ${bytes(blob.size)}`;
  } catch (error) {
    if (mine === runs) status.textContent = errorText(error);
  }
}

// Another key signed in: the previous key's result is not shown or offered for download (formats are server-wide).
export function forgetConvert() {
  clearResult();
  $("#convert-status").textContent = "";
}

export function wireConvert() {
  $("#convert-form").addEventListener("submit", run);
  $("#convert-form").addEventListener("change", () => {
    $("#manual-controls").hidden = new FormData($("#convert-form")).get("enhance") !== "manual";
  });
  $("#convert-quality").addEventListener("input", () => { $("#convert-quality-value").textContent = $("#convert-quality").value; });
  for (const name of FACTORS) {
    const input = $(`#factor-${name}`);
    input.addEventListener("input", () => { $(`#factor-${name}-value`).textContent = Number(input.value).toFixed(2); });
  }
}
