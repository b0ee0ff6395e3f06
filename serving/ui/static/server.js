// Server: models (backends, versions, traffic, accuracy), deployments and replicas (/v1/status), and live charts of
// the server's own Prometheus metrics (GET /metrics, sampled every 2 s while the page is open): inference requests
// per second, p50/p99 latency, error rate, and quality-tag rates (the share of judged images given each tag).

import { $, api, el, errorText, readsAllTenants, request, svg } from "./core.js";

const SAMPLE_MS = 2000;
const KEEP = 150; // samples: 5 minutes
// The inference endpoints, as deploy/prometheus/alerts.yml and the Grafana dashboard select them (plus image operations).
// "(shed)": requests refused at the admission limit before routing (503), counted so overload shows as errors.
const INFERENCE = /^(\/v1\/(classify|analyze|metadata|convert|enhance)|\/v2\/models\/.+\/infer|Classify|Analyze|AnalyzeStream|ModelInfer|ModelStreamInfer|Convert|Enhance|\(shed\))$/;
let samples = [];
let timer = null;
let shown = 0; // bumped by each showServer and by leaving: a page left while loading starts no timer

export async function showServer() {
  const generation = (shown += 1);
  const listing = await api("/v1/models");
  if (generation !== shown) return;
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
  if (!readsAllTenants()) {
    $("#deployments-note").textContent =
      "Replica counts and live charts are server-wide (every tenant's figures): they need an operator key of the server's own tenant (default).";
    $("#charts").replaceChildren();
    return;
  }
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
    $("#deployments-note").textContent = `Replica counts unavailable: ${errorText(error)}`;
  }
  if (generation === shown) startCharts();
}

export function leaveServer() {
  shown += 1;
  clearInterval(timer);
  timer = null;
}

// Another key signed in: models (a tenant may have its own), replicas and charts are read again with it.
export function forgetServer() {
  leaveServer();
  samples = [];
  for (const body of ["#models-table tbody", "#deployments-table tbody", "#charts"]) $(body).replaceChildren();
  for (const note of ["#deployments-note", "#charts-note"]) $(note).textContent = "";
}

// ---- metrics -------------------------------------------------------------------------------------
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    out.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return out;
}

function isInference(labels) {
  return INFERENCE.test(labels.endpoint || "");
}

function summarize(metrics) {
  const sample = { t: Date.now() / 1000, requests: 0, errors: 0, buckets: {}, judged: 0, tags: {} };
  for (const { name, labels, value } of metrics) {
    if (name === "imgserve_requests_total" && isInference(labels)) {
      sample.requests += value;
      if (!/^(2\d\d|OK)$/.test(labels.status)) sample.errors += value;
    } else if (name === "imgserve_request_latency_seconds_bucket" && isInference(labels)) {
      sample.buckets[labels.le] = (sample.buckets[labels.le] || 0) + value;
    } else if (name === "imgserve_quality_images_total") {
      sample.judged += value;
    } else if (name === "imgserve_quality_tags_total") {
      sample.tags[labels.tag] = (sample.tags[labels.tag] || 0) + value;
    }
  }
  return sample;
}

// histogram_quantile over the bucket counts that grew between two samples (linear inside a bucket).
function quantile(q, before, after) {
  const bounds = Object.keys(after.buckets).map((le) => [le === "+Inf" ? Infinity : Number(le), (after.buckets[le] || 0) - (before.buckets[le] || 0)])
    .sort((a, b) => a[0] - b[0]);
  const total = bounds.at(-1)?.[1] || 0;
  if (total <= 0) return null;
  let lower = 0;
  let below = 0;
  for (const [upper, count] of bounds) {
    if (count >= q * total) {
      if (upper === Infinity) return lower;
      return lower + (upper - lower) * ((q * total - below) / Math.max(count - below, 1e-9));
    }
    lower = upper;
    below = count;
  }
  return lower;
}

function series() {
  const out = { rps: [], p50: [], p99: [], errors: [], tags: {} };
  for (let i = 1; i < samples.length; i += 1) {
    const [a, b] = [samples[i - 1], samples[i]];
    const dt = b.t - a.t;
    if (dt <= 0 || b.requests < a.requests) continue; // a restart reset the counters
    const requests = b.requests - a.requests;
    out.rps.push([b.t, requests / dt]);
    out.errors.push([b.t, requests ? (100 * (b.errors - a.errors)) / requests : 0]);
    const p50 = quantile(0.5, a, b);
    const p99 = quantile(0.99, a, b);
    if (p50 != null) out.p50.push([b.t, p50 * 1000]);
    if (p99 != null) out.p99.push([b.t, p99 * 1000]);
    const judged = b.judged - a.judged;
    for (const tag of Object.keys(b.tags)) {
      (out.tags[tag] ||= []).push([b.t, judged > 0 ? (100 * (b.tags[tag] - (a.tags[tag] || 0))) / judged : 0]);
    }
  }
  return out;
}

// ---- charts --------------------------------------------------------------------------------------
const W = 320;
const H = 120;
const PAD = 28;

function chart(title, lines, unit) {
  const all = lines.flatMap((l) => l.points);
  const figure = el("figure", { class: "card chart" });
  const latest = lines.map((l) => `${l.name} ${l.points.length ? l.points.at(-1)[1].toFixed(1) : "—"} ${unit}`).join(" · ");
  figure.append(el("figcaption", {}, el("strong", { text: title }), el("span", { text: latest })));
  const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}: ${latest}` });
  figure.append(plot);
  if (all.length < 1) {
    figure.append(el("p", { class: "hint", text: "collecting…" }));
    return figure;
  }
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]), t0 + 1);
  const top = Math.max(...all.map((p) => p[1]), 1) * 1.1;
  const x = (t) => PAD + ((t - t0) / (t1 - t0)) * (W - PAD - 4);
  const y = (v) => H - 14 - (v / top) * (H - 24);
  plot.append(svg("line", { x1: PAD, y1: H - 14, x2: W - 4, y2: H - 14, class: "axis" }));
  const label = svg("text", { x: 2, y: 12, class: "tick" });
  label.textContent = `${top >= 10 ? top.toFixed(0) : top.toPrecision(2)} ${unit}`;
  plot.append(label);
  lines.forEach((line, i) => {
    if (!line.points.length) return;
    const d = line.points.map(([t, v], j) => `${j ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join("");
    plot.append(svg("path", { d, class: `line line-${i % 6}` }));
    if (line.points.length === 1) {
      // a path of one point draws nothing: the first sample of a series is a dot until the next one arrives
      const [t, v] = line.points[0];
      plot.append(svg("circle", { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 1.5, class: `dot line-${i % 6}` }));
    }
  });
  const legend = el("ul", { class: "legend" }, ...lines.map((l, i) => el("li", { class: `key-${i % 6}`, text: l.name })));
  figure.append(legend);
  return figure;
}

async function sample() {
  try {
    const text = await (await request("/metrics")).text();
    samples.push(summarize(parseMetrics(text)));
    samples = samples.slice(-KEEP);
    const s = series();
    const latest = samples.at(-1).tags;
    const common = Object.keys(s.tags).sort((a, b) => latest[b] - latest[a]).slice(0, 6); // the six most given so far
    const tagLines = common.map((name) => ({ name, points: s.tags[name] }));
    $("#charts").replaceChildren(
      chart("Inference requests", [{ name: "req/s", points: s.rps }], "/s"),
      chart("Latency", [{ name: "p50", points: s.p50 }, { name: "p99", points: s.p99 }], "ms"),
      chart("Error rate", [{ name: "non-2xx", points: s.errors }], "%"),
      chart("Quality tags (share of judged images)", tagLines.length ? tagLines : [{ name: "no tags yet", points: [] }], "%"),
    );
    $("#charts-note").textContent = `from /metrics every ${SAMPLE_MS / 1000} s · ${samples.length} samples`;
  } catch (error) {
    $("#charts-note").textContent = `metrics unavailable: ${errorText(error)}`;
  }
}

function startCharts() {
  if (timer) return;
  samples = [];
  sample();
  timer = setInterval(sample, SAMPLE_MS);
}
