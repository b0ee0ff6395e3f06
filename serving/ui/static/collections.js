// Collections: the list, one collection's report (summary, tags, cameras, insights) and its images as a thumbnail
// grid filtered by tag, level, camera, score and date (GET /v1/collections/{id}/images with the same filters as the
// API); one image opens with its analysis; the filtered list exports as CSV.

import { $, api, downloadFrom, el, errorText, request, table } from "./core.js";
import { renderResult } from "./analyze.js";
import { worldMap } from "./map.js";

const PAGE = 48;
let current = null; // { id, name, next, params: the filters the grid was loaded with (More and the export use them) }
let opens = 0; // bumped by each openCollection and by leaving: an older report does not replace a newer one
let loads = 0; // bumped by each fresh load: an older load's answer is dropped, not mixed into the grid
let loading = false; // a page of the grid is on its way: More waits for it (a double click asked for it twice)
const thumbnails = new Map(); // "collection id/image id" -> object URL (kept while the collection is open)
let detailUrl = null; // the opened image's larger thumbnail

export async function showCollections() {
  const answer = await api("/v1/collections?limit=100");
  const rows = answer.collections.map((c) => el("tr", {},
    el("th", { scope: "row" }, el("a", { href: `#/collections?c=${encodeURIComponent(c.id)}`, text: c.name })),
    el("td", { text: String(c.images) }), el("td", { text: String(c.failed) }), el("td", { text: c.status }),
    el("td", { text: new Date(c.created_at * 1000).toISOString().replace("T", " ").slice(0, 16) })));
  $("#collections-list").replaceChildren(rows.length ? table(["Collection", "Images", "Failed", "Status", "Created (UTC)"], rows)
    : el("p", { class: "hint", text: "No collections yet: save a finished job as one (Jobs page), or run `imgserve collection analyze`." }));
  const ref = new URLSearchParams(location.hash.split("?")[1] || "").get("c");
  $("#collection-detail").hidden = !ref;
  if (ref) await openCollection(ref);
}

function option(value, text, selected = false) {
  return el("option", { value, text, selected });
}

// Object URLs of the thumbnails shown: let go when another collection opens or the page is left.
function forgetPictures() {
  for (const url of [...thumbnails.values(), detailUrl]) if (url) URL.revokeObjectURL(url);
  thumbnails.clear();
  detailUrl = null;
}

export function leaveCollections() {
  opens += 1;
  loads += 1;
  forgetPictures();
}

// Another key signed in: the previous key's collections, report and images leave the page.
export function forgetCollections() {
  leaveCollections();
  current = null;
  for (const part of ["#collections-list", "#collection-report", "#collection-grid", "#image-detail"]) $(part).replaceChildren();
  $("#collection-detail").hidden = true;
  $("#collection-status").textContent = "";
}

async function openCollection(ref) {
  const generation = ++opens;
  const report = await api(`/v1/collections/${encodeURIComponent(ref)}/report?format=json`);
  if (generation !== opens) return; // another collection was opened meanwhile
  if (current?.id !== report.collection.id) forgetPictures();
  current = { id: report.collection.id, name: report.name, next: null, params: new URLSearchParams() };
  $("#collection-title").textContent = report.name;
  const quality = report.quality || {};
  const facts = [
    ["Images", `${report.images} analysed, ${report.failed} failed`],
    ["Mean quality", quality.mean_score != null ? quality.mean_score.toFixed(1) : "—"],
    ["Levels", Object.entries(quality.levels || {}).map(([k, v]) => `${k} ${v}`).join(" · ")],
    ["Taken", [report.date_range?.first, report.date_range?.last].filter(Boolean).join(" → ") || "—"],
    ["Geotagged", String(report.geotagged)],
  ];
  const list = el("dl", { class: "meta" });
  for (const [name, value] of facts) list.append(el("dt", { text: name }), el("dd", { text: value }));
  const tags = el("ul", { class: "chips", "aria-label": "Quality tags in this collection" });
  for (const [tag, count] of Object.entries(quality.tags || {})) {
    const chip = el("button", { type: "button", class: "chip", "data-tag": tag, text: `${tag} ${count}` });
    chip.addEventListener("click", () => { $("#filter-tag").value = tag; loadImages(true); });
    tags.append(el("li", {}, chip));
  }
  const insights = el("ul", { class: "insights" }, ...(report.insights || []).map((i) => el("li", { text: i.text })));
  $("#collection-report").replaceChildren(list, el("h3", { text: "Quality tags" }), tags,
    el("h3", { text: "Insights" }), (report.insights || []).length ? insights : el("p", { class: "hint", text: "Nothing stands out." }));

  const tagSelect = $("#filter-tag");
  tagSelect.replaceChildren(option("", "any tag"), ...Object.keys(quality.tags || {}).map((t) => option(t, t)));
  const cameraSelect = $("#filter-camera");
  cameraSelect.replaceChildren(option("", "any camera"),
    ...(report.cameras || []).map((c) => option(JSON.stringify([c.make || "", c.model || ""]), `${[c.make, c.model].filter(Boolean).join(" ")} (${c.count})`)));
  $("#image-detail").replaceChildren();
  await loadImages(true);
}

function filters() {
  const params = new URLSearchParams();
  const put = (name, value) => { if (value) params.set(name, value); };
  put("tag", $("#filter-tag").value);
  put("level", $("#filter-level").value);
  if ($("#filter-camera").value) {
    const [make, model] = JSON.parse($("#filter-camera").value);
    put("camera_make", make);
    put("camera_model", model);
  }
  put("min_score", $("#filter-min-score").value);
  put("max_score", $("#filter-max-score").value);
  put("taken_after", $("#filter-after").value);
  put("taken_before", $("#filter-before").value);
  return params;
}

// A tile with no picture: `why` is its alt text (the tile's own text names the image).
function noPicture(img, why) {
  img.alt = why;
  img.classList.add("missing");
}

async function thumbnail(image, img, load) {
  // a failed record never decoded: asking for its thumbnail is a 404 (a console error in the browser)
  if (!image.ok) { noPicture(img, "analysis failed: no picture"); return; }
  const key = `${current.id}/${image.id}`; // image ids are a collection's own (and may come back after a delete)
  try {
    if (!thumbnails.has(key)) {
      const blob = await (await request(`/v1/collections/${encodeURIComponent(current.id)}/images/${image.id}/thumbnail`)).blob();
      if (load !== loads) return; // the grid was replaced or the page left: the URL would never be let go
      if (!thumbnails.has(key)) thumbnails.set(key, URL.createObjectURL(blob));
    }
    img.src = thumbnails.get(key);
  } catch {
    noPicture(img, "file no longer readable");
  }
}

async function loadImages(fresh) {
  const grid = $("#collection-grid");
  const status = $("#collection-status");
  const more = $("#collection-more");
  if (!fresh && (loading || !current.next)) return; // More clicked again before its page came
  if (fresh) { loads += 1; grid.replaceChildren(); current.next = null; current.params = filters(); }
  const load = loads;
  const params = new URLSearchParams(current.params); // the submitted filters, not what the form says now
  params.set("limit", String(PAGE));
  if (!fresh) params.set("after", String(current.next));
  loading = true;
  more.disabled = true;
  try {
    const answer = await api(`/v1/collections/${encodeURIComponent(current.id)}/images?${params}`);
    if (load !== loads) return; // the filter changed meanwhile
    loading = false;
    more.disabled = false;
    current.next = answer.next;
    const pending = [];
    for (const image of answer.images) {
      const img = el("img", { alt: "", width: 160, height: 160 }); // the tile's text names it
      const caption = [image.quality_score != null ? `${image.quality_score.toFixed(0)}` : "", ...(image.tags || [])].filter(Boolean).join(" · ");
      const tile = el("button", { type: "button", class: "tile", "data-name": image.name, title: image.name }, img,
        el("span", { class: "tile-name", text: image.name }), el("span", { class: "tile-tags", text: caption || (image.ok ? "" : "failed") }));
      tile.addEventListener("click", () => openImage(image));
      grid.append(tile);
      pending.push([image, img]);
    }
    status.textContent = `${grid.children.length} image(s) shown${current.next ? " (more below)" : ""}` + (params.get("tag") ? ` · tag ${params.get("tag")}` : "");
    more.hidden = !current.next;
    for (let i = 0; i < pending.length && load === loads; i += 6) await Promise.all(pending.slice(i, i + 6).map(([image, img]) => thumbnail(image, img, load)));
  } catch (error) {
    if (load !== loads) return;
    loading = false;
    more.disabled = false;
    status.textContent = errorText(error);
  }
}

async function openImage(image) {
  try {
    await showImage(image);
  } catch (error) {
    $("#collection-status").textContent = errorText(error);
  }
}

async function showImage(image) {
  const detail = $("#image-detail");
  const answer = await api(`/v1/collections/${encodeURIComponent(current.id)}/images?after=${image.id - 1}&limit=1&analysis=true`);
  const item = answer.images[0];
  const card = el("article", { class: "card result" }, el("h2", { text: image.name }));
  detail.replaceChildren(card);
  if (!item?.analysis) { card.append(el("p", { class: "error", text: item?.error || "no analysis stored for this image" })); return; }
  let src = thumbnails.get(`${current.id}/${image.id}`) || "";
  try {
    const blob = await (await request(`/v1/collections/${encodeURIComponent(current.id)}/images/${image.id}/thumbnail?side=512`)).blob();
    if (detailUrl) URL.revokeObjectURL(detailUrl);
    src = detailUrl = URL.createObjectURL(blob);
  } catch { /* the grid's thumbnail, or none */ }
  renderResult(card, src, image.name, item.analysis);
  if (item.latitude != null && item.longitude != null && !item.analysis.metadata?.gps) card.append(worldMap([{ lat: item.latitude, lon: item.longitude }]));
  card.scrollIntoView({ block: "nearest" });
}

export function wireCollections() {
  $("#collection-filters").addEventListener("submit", (event) => { event.preventDefault(); loadImages(true); });
  $("#collection-filters").addEventListener("reset", () => setTimeout(() => loadImages(true)));
  $("#collection-more").addEventListener("click", () => loadImages(false));
  $("#collection-export").addEventListener("click", () => {
    downloadFrom(`/v1/collections/${encodeURIComponent(current.id)}/export?format=csv&${current.params}`, `${current.name}.csv`)
      .catch((error) => { $("#collection-status").textContent = errorText(error); });
  });
}
