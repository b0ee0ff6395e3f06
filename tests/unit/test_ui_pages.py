"""The web UI's page scripts run in Node (no browser, no server) over a small DOM stand-in and a scripted fetch: what
a page puts on screen and which requests it sends. Skipped without `node`; the browser test covers the real DOM."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines.convert.options import MAX_TARGET_SIDE
from tests.paths import PROJECT_ROOT

STATIC = PROJECT_ROOT / "serving" / "ui" / "static"
NODE = shutil.which("node")

# Just the DOM the page scripts use. append/replaceChildren/prepend turn a non-node argument into a text node, as
# the DOM does (null becomes the text "null"): the reason this stand-in exists.
DOM = r"""
class Node {
  constructor() { this.childNodes = []; this.parent = null; }
  get textContent() { return this.childNodes.map((c) => c.textContent).join(""); }
  set textContent(v) { this.childNodes = []; if (v !== "") this.append(String(v)); }
  _adopt(items) {
    return items.map((x) => {
      const node = x instanceof Node ? x : new Text(String(x));
      node.parent?._drop(node);
      node.parent = this;
      return node;
    });
  }
  _drop(node) { this.childNodes = this.childNodes.filter((c) => c !== node); }
  append(...items) { this.childNodes.push(...this._adopt(items)); }
  prepend(...items) { this.childNodes.unshift(...this._adopt(items)); }
  replaceChildren(...items) { this.childNodes = []; this.append(...items); }
  remove() { this.parent?._drop(this); this.parent = null; }
}
class Text extends Node {
  constructor(data) { super(); this.data = data; }
  get textContent() { return this.data; }
}
class Element extends Node {
  constructor(tag) {
    super();
    this.tagName = tag.toUpperCase();
    this.attributes = {};
    this.listeners = {};
    this.style = {};
    this.dataset = {};
    this.hidden = false;
    this.disabled = false;
    this.value = "";
    this.options = [];
    const names = new Set();
    this.classList = { add: (n) => names.add(n), contains: (n) => names.has(n), remove: (n) => names.delete(n) };
  }
  get children() { return this.childNodes.filter((c) => c instanceof Element); }
  setAttribute(name, value) { this.attributes[name] = String(value); if (name === "id") document.ids.set(value, this); }
  getAttribute(name) { return name in this.attributes ? this.attributes[name] : null; }
  removeAttribute(name) { delete this.attributes[name]; }
  set alt(v) { this.attributes.alt = v; }
  get alt() { return this.attributes.alt ?? ""; }
  set className(v) { for (const n of v.split(/\s+/)) this.classList.add(n); }
  addEventListener(type, fn) { (this.listeners[type] ||= []).push(fn); }
  matches(part) {
    if (part.startsWith(".")) return this.classList.contains(part.slice(1));
    return part.startsWith("#") ? this.attributes.id === part.slice(1) : this.tagName === part.toUpperCase();
  }
  querySelector(selector) { // descendant selectors of tags, .classes and #ids
    let found = [this];
    for (const part of selector.trim().split(/\s+/)) {
      found = found.flatMap((e) => e.all().slice(1)).filter((e) => e.matches(part));
    }
    return found[0] ?? null;
  }
  querySelectorAll() { return []; }
  scrollIntoView() {}
  reset() {}
  all() { return [this, ...this.children.flatMap((c) => c.all())]; }
}
globalThis.document = {
  ids: new Map(),
  createElement: (tag) => new Element(tag),
  createElementNS: (ns, tag) => new Element(tag),
  querySelector(selector) {
    if (!selector.startsWith("#")) return null;
    const id = selector.slice(1);
    if (!this.ids.has(id)) this.ids.set(id, new Element("div"));
    return this.ids.get(id);
  },
  querySelectorAll: () => [],
  body: new Element("body"),
};
globalThis.window = { dispatchEvent() {}, addEventListener() {} };
globalThis.location = { hash: "" };
const stored = new Map();
globalThis.sessionStorage = {
  getItem: (k) => stored.get(k) ?? null, setItem: (k, v) => stored.set(k, v), removeItem: (k) => stored.delete(k),
};
URL.createObjectURL = () => "blob:x";
URL.revokeObjectURL = () => {};
globalThis.requested = [];
globalThis.answers = [];  // [pattern, status, body]: the first whose pattern the path contains answers
globalThis.fetch = async (path) => {
  requested.push(path);
  const found = answers.find(([pattern]) => path.includes(pattern));
  if (!found) return new Response(JSON.stringify({ error: `unscripted ${path}`, kind: "not_found" }), { status: 404 });
  const [, status, body] = found;
  return new Response(typeof body === "string" ? body : JSON.stringify(body), { status });
};
"""


def _run_page(script: str, tmp_path: Path) -> dict:
    """Runs `script` (an ES module body after the DOM stand-in; `STATIC` is the scripts' folder URL) and returns the
    JSON it prints last."""
    if NODE is None:
        pytest.skip("node is not installed")
    (tmp_path / "dom.mjs").write_text(DOM)
    main = f'import "./dom.mjs";\nconst STATIC = {json.dumps(STATIC.as_uri())};\n{script}'
    (tmp_path / "main.mjs").write_text(main)
    done = subprocess.run([NODE, str(tmp_path / "main.mjs")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_finished_jobs_results_end_without_a_stray_null(tmp_path: Path) -> None:
    """replaceChildren writes a null argument as the text "null": a job of at most 200 results ended with it."""
    seen = _run_page(
        """
const { state, $ } = await import(`${STATIC}/core.js`);
const { showJobs } = await import(`${STATIC}/jobs.js`);
state.me = { role: "analyst", tenant: "default" };
location.hash = "#/jobs?job=j1";
const job = { job_id: "j1", status: "completed", counts: { total: 1, done: 1, failed: 0 }, progress: 1,
  stages: ["classification"], timings: { created_at: "2026-01-01T00:00:00" } };
answers.push(["/v1/jobs?limit", 200, { jobs: [job] }], ["/v1/jobs/j1/results", 200,
  JSON.stringify({ index: 0, name: "cat.jpg", status: "done", result: {} }) + "\\n"], ["/v1/jobs/j1", 200, job]);
await showJobs();
console.log(JSON.stringify({ results: $("#job-results").textContent }));
""",
        tmp_path,
    )
    assert "cat.jpg" in seen["results"]
    assert not seen["results"].endswith("null"), seen["results"]


def test_a_failed_collection_image_asks_for_no_thumbnail(tmp_path: Path) -> None:
    """A failed record never decoded: its thumbnail is a 404 (a console error) and "no longer readable" is wrong."""
    seen = _run_page(
        """
const { $ } = await import(`${STATIC}/core.js`);
const { showCollections } = await import(`${STATIC}/collections.js`);
location.hash = "#/collections?c=c1";
const report = { collection: { id: "c1" }, name: "trip", images: 1, failed: 1, quality: {}, cameras: [], geotagged: 0 };
const images = [{ id: 1, name: "good.jpg", ok: true, tags: [] }, { id: 17, name: "bad.jpg", ok: false, tags: [] }];
answers.push(["/v1/collections?limit", 200, { collections: [] }], ["/report", 200, report],
  ["/images/1/thumbnail", 200, "jpeg"], ["/v1/collections/c1/images?", 200, { images, next: null }]);
await showCollections();
const tiles = $("#collection-grid").children.map((tile) => {
  const img = tile.all().find((e) => e.tagName === "IMG");
  const missing = img.classList.contains("missing");
  return { name: tile.getAttribute("data-name"), alt: img.alt, src: img.src ?? null, text: tile.textContent, missing };
});
console.log(JSON.stringify({ requested, tiles }));
""",
        tmp_path,
    )
    thumbnails = [path for path in seen["requested"] if path.endswith("/thumbnail")]
    assert thumbnails == ["/v1/collections/c1/images/1/thumbnail"], seen["requested"]
    good, bad = seen["tiles"]
    assert good["src"] == "blob:x" and not good["missing"]
    assert bad["src"] is None and bad["missing"] and "failed" in bad["text"]
    assert "no longer readable" not in bad["alt"] and "failed" in bad["alt"], bad


def test_a_dropped_file_that_is_no_image_is_named_not_dropped_silently(tmp_path: Path) -> None:
    seen = _run_page(
        """
const { $ } = await import(`${STATIC}/core.js`);
const { wireAnalyze } = await import(`${STATIC}/analyze.js`);
wireAnalyze();
const drop = async (files) => {
  $("#drop").listeners.drop[0]({ preventDefault() {}, dataTransfer: { files } });
  await new Promise((resume) => setTimeout(resume, 100)); // the listener does not wait for the uploads
};
await drop([new File(["# notes"], "README.md", { type: "text/markdown" })]);
const only = $("#analyze-status").textContent;
answers.push(["/v1/analyze", 200, { results: [{}] }]);
const notes = new File(["x"], "notes.txt", { type: "text/plain" });
await drop([new File(["jpeg"], "cat.jpg", { type: "image/jpeg" }), notes]);
const mixed = $("#analyze-status").textContent;
console.log(JSON.stringify({ only, mixed, cards: $("#results").children.length, requested }));
""",
        tmp_path,
    )
    assert "README.md" in seen["only"] and "not an image" in seen["only"], seen
    assert seen["requested"] == ["/v1/analyze?top_k=3"] and seen["cards"] == 1  # the image still goes
    assert "1 analyzed" in seen["mixed"] and "notes.txt" in seen["mixed"], seen


def test_the_longest_side_input_allows_what_the_server_allows() -> None:
    """The server answers max_side outside 1..MAX_TARGET_SIDE with a 400: the form should not offer more."""
    html = (STATIC / "index.html").read_text()
    field = re.search(r'<input id="convert-max-side"[^>]*>', html)
    assert field is not None
    bounds = dict(re.findall(r'\b(min|max)="(\d+)"', field.group(0)))
    assert bounds == {"min": "1", "max": str(MAX_TARGET_SIDE)}
