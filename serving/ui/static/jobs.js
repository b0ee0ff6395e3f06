// Jobs: submit images or archives as a batch job (POST /v1/batch), watch one job's progress live over server-sent
// events (GET /v1/jobs/{id}/progress), see its per-item results, cancel, purge, save as a collection, download.

import { $, api, can, downloadFrom, el, errorText, readEvents, request, state, table } from "./core.js";

const FINAL = new Set(["completed", "failed", "cancelled"]);
const ROWS = 200; // result rows shown; the CSV download has them all
let watching = null; // AbortController of the open progress stream
let opened = 0; // bumped by each openJob and by leaving the page
let lastStatus = null;

export async function showJobs() {
  $("#job-form").hidden = !can("analyst");
  await listJobs();
  const id = new URLSearchParams(location.hash.split("?")[1] || "").get("job");
  if (id) await openJob(id);
}

// Operators and admins read every tenant's jobs (but change only their own): their list says whose each one is.
async function listJobs() {
  const answer = await api("/v1/jobs?limit=20");
  const tenants = can("operator");
  const rows = answer.jobs.map((job) => {
    const link = el("a", { href: `#/jobs?job=${encodeURIComponent(job.job_id)}`, text: job.job_id });
    return el("tr", {}, el("th", { scope: "row" }, link), tenants ? el("td", { class: "tenant", text: job.tenant ?? "—" }) : null,
      el("td", { text: job.status }),
      el("td", { text: `${job.counts.done + job.counts.failed} / ${job.counts.total}` }), el("td", { text: job.stages.join(", ") }),
      el("td", { text: job.timings.created_at.replace("T", " ").slice(0, 19) }));
  });
  const head = ["Job", ...(tenants ? ["Tenant"] : []), "Status", "Finished", "Stages", "Created (UTC)"];
  $("#jobs-list").replaceChildren(rows.length ? table(head, rows) : el("p", { class: "hint", text: "No jobs yet." }));
}

// Cancel, purge and save act inside the caller's tenant only: another tenant's job (an operator may read it) has none.
const ownJob = (job) => job.tenant === undefined || job.tenant === state.me?.tenant;

// The Idempotency-Key of the submission being made (docs/BATCH.md, "Idempotent submission"): kept while the form is
// unchanged and the job not yet accepted, so sending the same files again after a lost answer (a dropped connection,
// a proxy timeout) answers the job already made instead of making a second one; a changed form is a new submission.
let submission = null;

// A uuid4: crypto.randomUUID exists only in a secure context (HTTPS, localhost, 127.0.0.1), not on a plain HTTP
// address of another host; getRandomValues exists in both.
function newIdempotencyKey() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; // version 4
  b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

async function submit(event) {
  event.preventDefault();
  const status = $("#job-status");
  const button = $("#job-form button[type=submit]");
  if (button.disabled) return; // an upload is in flight: a double click made two jobs
  const files = [...$("#job-files").files];
  if (!files.length) { status.textContent = "Choose images or an archive first."; return; }
  const form = new FormData();
  for (const file of files) form.append(/\.(zip|tar|tgz|tar\.gz)$/i.test(file.name) ? "archive" : "image", file, file.name);
  const params = new URLSearchParams();
  const stages = [...document.querySelectorAll("#job-stages input:checked")].map((box) => box.value);
  if (stages.length) params.set("stages", stages.join(","));
  if ($("#job-convert").value) params.set("convert", `format=${$("#job-convert").value}`);
  submission ??= newIdempotencyKey();
  status.textContent = `Uploading ${files.length} file(s)…`;
  button.disabled = true;
  try {
    // retry: a request refused for the key's rate is sent again; with the same key it cannot make a second job
    const job = await api(`/v1/batch?${params}`, { method: "POST", body: form, headers: { "Idempotency-Key": submission }, retry: true });
    submission = null;
    status.textContent = `Job ${job.job_id} accepted.`;
    $("#job-form").reset();
    location.hash = `#/jobs?job=${encodeURIComponent(job.job_id)}`;
  } catch (error) {
    status.textContent = errorText(error);
  } finally {
    button.disabled = false;
  }
}

function renderJob(job) {
  if (job.status !== lastStatus) { // announced once per change of state, not every half second
    $("#job-status").textContent = `Job ${job.job_id}: ${job.status}`;
    lastStatus = job.status;
  }
  const finished = job.counts.done + job.counts.failed;
  const percent = Math.round((job.progress || 0) * 100);
  const bar = $("#job-progress");
  bar.value = percent;
  bar.textContent = `${percent} %`;
  $("#job-progress-text").textContent = `${percent} % · ${finished} of ${job.counts.total} finished (${job.counts.failed} failed) · ${job.status}` +
    (job.timings.images_per_s ? ` · ${job.timings.images_per_s.toFixed(1)} images/s` : "");
  const own = ownJob(job);
  show("#job-cancel", own && !FINAL.has(job.status));
  show("#job-purge", own);
  show("#job-outputs", job.outputs_url && job.outputs?.count);
  show("#job-save", own && job.status === "completed");
  show("#job-save-row", own);
  if (job.error) $("#job-message").textContent = `Job failed: ${job.error}`; // the whole job's reason, e.g. its model is gone
}

// Controls a role may not use are not in the page at all (removed at sign-in); the others are shown when they apply.
function show(selector, visible) {
  const control = $(selector);
  if (control) control.hidden = !visible;
}

async function openJob(id) {
  watching?.abort();
  const generation = (opened += 1); // a later openJob or leaving the page makes this one stale
  const panel = $("#job-detail");
  panel.hidden = false;
  panel.dataset.job = id;
  $("#job-title").textContent = `Job ${id}`;
  $("#job-results").replaceChildren();
  $("#job-message").textContent = "";
  lastStatus = null;
  const job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
  if (generation !== opened) return;
  renderJob(job);
  if (FINAL.has(job.status)) { await showResults(id, job.counts.total); return; }
  watching = new AbortController();
  const { signal } = watching;
  let total = job.counts.total;
  for (let cuts = 0; cuts < 5 && !signal.aborted; cuts += 1) {
    let ended = null;
    try {
      ended = await readEvents(`/v1/jobs/${encodeURIComponent(id)}/progress`, (name, data) => {
        if (generation !== opened || data.job_id !== id) return;
        if (name === "progress") { renderJob(data); total = data.counts.total; cuts = 0; }
        if (name === "error") $("#job-message").textContent = `${data.kind}: ${data.error}`;
      }, signal);
    } catch (error) {
      if (error.name === "AbortError") return;
      $("#job-message").textContent = errorText(error);
      return;
    }
    if (generation !== opened) return;
    if (ended === "end") { await showResults(id, total); await listJobs(); return; }
    if (ended === "error") return;
    await new Promise((resolve) => setTimeout(resolve, 1000)); // cut before the end: open it again
  }
}

async function showResults(id, total) {
  const text = await (await request(`/v1/jobs/${encodeURIComponent(id)}/results?format=jsonl&limit=${ROWS + 1}`)).text();
  const items = text.split("\n").filter(Boolean).map((line) => JSON.parse(line));
  const more = items.length > ROWS; // one row past the table's: there are more than it shows
  const rows = items.slice(0, ROWS).map((item) => {
    const top = item.result?.classification?.predictions?.[0];
    const quality = item.result?.quality;
    return el("tr", {}, el("td", { text: String(item.index) }), el("th", { scope: "row", text: item.name }), el("td", { text: item.status }),
      el("td", { text: top ? `${top.label} (${(top.score * 100).toFixed(0)} %)` : item.error ? `${item.error.kind}: ${item.error.message}` : "" }),
      el("td", { text: quality ? `${quality.score.toFixed(0)} ${quality.level}` : "" }),
      el("td", { text: (quality?.tags || []).map((t) => t.name).join(", ") }));
  });
  // replaceChildren, unlike el(), would write a null as the text "null": the hint is passed only when there is one
  const hint = more ? [el("p", { class: "hint", id: "job-results-more", text: `First ${ROWS} of ${total} results: download the CSV for all of them.` })] : [];
  $("#job-results").replaceChildren(table(["#", "Image", "Status", "Top class", "Quality", "Tags"], rows), ...hint);
}

async function act(action) {
  const id = $("#job-detail").dataset.job;
  const message = $("#job-message");
  try {
    if (action === "cancel") renderJob(await api(`/v1/jobs/${encodeURIComponent(id)}`, { method: "DELETE" }));
    if (action === "purge") {
      await api(`/v1/jobs/${encodeURIComponent(id)}?purge=true`, { method: "DELETE" });
      watching?.abort();
      $("#job-detail").hidden = true;
      location.hash = "#/jobs";
      await listJobs();
    }
    if (action === "save") {
      const name = $("#job-collection-name").value.trim() || `job ${id}`;
      const info = await api(`/v1/jobs/${encodeURIComponent(id)}/collection?name=${encodeURIComponent(name)}`, { method: "POST" });
      message.textContent = `Saved as collection “${info.name}” (${info.images} images).`;
    }
  } catch (error) {
    message.textContent = errorText(error);
  }
}

export function wireJobs() {
  $("#job-form").addEventListener("submit", submit);
  $("#job-form").addEventListener("change", () => { submission = null; }); // other files or options: a new submission
  $("#job-cancel").addEventListener("click", () => act("cancel"));
  $("#job-purge").addEventListener("click", () => {
    if (confirm("Erase this job now: inputs, results and events?")) act("purge");
  });
  $("#job-save").addEventListener("click", () => act("save"));
  $("#job-csv").addEventListener("click", () => {
    const id = $("#job-detail").dataset.job;
    downloadFrom(`/v1/jobs/${encodeURIComponent(id)}/results?format=csv`, `${id}.csv`).catch((e) => { $("#job-message").textContent = errorText(e); });
  });
  $("#job-outputs").addEventListener("click", () => {
    const id = $("#job-detail").dataset.job;
    downloadFrom(`/v1/jobs/${encodeURIComponent(id)}/outputs.zip`, `${id}-outputs.zip`).catch((e) => { $("#job-message").textContent = errorText(e); });
  });
}

export function leaveJobs() {
  opened += 1;
  watching?.abort();
  watching = null;
}

// Another key signed in: nothing of the previous key's jobs stays on the page until this key's list arrives.
export function forgetJobs() {
  leaveJobs();
  lastStatus = null;
  submission = null;
  $("#jobs-list").replaceChildren();
  $("#job-detail").hidden = true;
  $("#job-results").replaceChildren();
  for (const line of ["#job-status", "#job-message", "#job-progress-text"]) $(line).textContent = "";
}
