// Shared by the pages: the signed-in key, DOM helpers and the one way this UI talks to the server (its own
// /v1 and /v2 routes, with the key as a Bearer token). Every value shown is set with textContent, never parsed as
// HTML: file names, labels and tags cannot inject markup.

export const KEY = "imgserve.apiKey";
export const ROLES = ["viewer", "analyst", "operator", "admin"];
export const state = { me: null };

export const $ = (selector, root = document) => root.querySelector(selector);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error || `HTTP ${status}`);
    this.status = status;
    this.kind = body?.kind || "";
  }
}

// API keys (isk_<id>_<secret>) and JWTs are printable ASCII; a header cannot carry anything else.
export const validKey = (key) => /^[\x21-\x7e]+$/.test(key);
export const INVALID_KEY = "That is not a valid API key: keys are plain ASCII (isk_…), and this one has other characters.";

function authorized(options) {
  const key = sessionStorage.getItem(KEY);
  // the browser's own refusal ("Failed to execute 'set' on 'Headers'") tells a person nothing
  // (a 400: refused here, never sent; not a 401, which would read as a key that stopped working)
  if (key && !validKey(key)) throw new ApiError(400, { error: INVALID_KEY, kind: "invalid_key" });
  const headers = new Headers(options.headers || {});
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return { ...options, headers };
}

const RETRY_WITHIN_S = 5; // a request refused by the key's rate limit is sent again when the server says this soon
const RETRIES = 3; // at most this many times (waits of about 1, 2 and 4 s for a Retry-After of 1)

// A GET, or a request the caller marks `retry: true` (it changes nothing, e.g. an analysis, or cannot be made twice,
// e.g. a job sent with an Idempotency-Key), refused by the key's rate limit is sent again after the server's short
// Retry-After, up to RETRIES times; `onRateLimited` is told of each such refusal (a caller sending many at once sends
// fewer). A 401 while signed in means the key stopped working (revoked, expired, new keys): the key is dropped and
// "imgserve:key-refused" sent, for the app to ask for another.
export async function request(path, options = {}) {
  const { retry = false, onRateLimited, ...init } = options;
  const repeatable = retry || (init.method || "GET") === "GET";
  let response;
  for (let attempt = 0; ; attempt += 1) {
    response = await fetch(path, authorized(init));
    if (response.status !== 429) break;
    onRateLimited?.();
    const wait = Number(response.headers.get("Retry-After"));
    if (!repeatable || !(wait > 0 && wait <= RETRY_WITHIN_S) || attempt >= RETRIES) break;
    // a key allowed one request at a time (rate under 2/s) spent it on the sign-in check: the page's first figures
    // were a 429 error. The wait doubles with each try and has up to a second added at random: uploads refused
    // together, sent again together after the same Retry-After, met the same empty bucket (4 of 6 failed at 1/s).
    const seconds = wait * 2 ** attempt + Math.random();
    await new Promise((resume) => setTimeout(resume, seconds * 1000));
  }
  if (response.status === 401 && state.me && sessionStorage.getItem(KEY)) {
    sessionStorage.removeItem(KEY);
    state.me = null;
    window.dispatchEvent(new Event("imgserve:key-refused"));
  }
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
  return response;
}

// Runs `work(item)` for every item, at most `size()` at a time (each worker takes the next item when it is done; one
// numbered `size()` or above, the size having shrunk, stops): a folder of photos dropped at once would otherwise
// meet the key's rate and the server's admission limit together.
export async function inPool(items, size, work) {
  const queue = [...items];
  const worker = async (index) => {
    while (queue.length && index < size()) await work(queue.shift());
  };
  await Promise.all(Array.from({ length: Math.min(size(), queue.length) }, (_, index) => worker(index)));
}

export async function api(path, options = {}) {
  return (await request(path, options)).json();
}

export const can = (role) => Boolean(state.me) && ROLES.indexOf(state.me.role) >= ROLES.indexOf(role);
// The server's own operators and admins (tenant "default"): server-wide figures (/metrics, /v1/status) are theirs.
export const readsAllTenants = () => can("operator") && state.me.tenant === "default";

export function saveBlob(name, blob) {
  const link = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000); // the download has read it by then
}

export function download(name, type, text) {
  saveBlob(name, new Blob([text], { type }));
}

export async function downloadFrom(path, name) {
  saveBlob(name, await (await request(path)).blob());
}

export function csvCell(value) {
  // Text starting like a formula gets a leading apostrophe, as the server's CSVs do (serving/spreadsheet.py):
  // EXIF fields and labels are the uploader's, and a spreadsheet would run "=HYPERLINK(...)".
  let text = value === null || value === undefined ? "" : String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

export function bytes(n) {
  if (n == null) return "—";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

export function errorText(error) {
  return `${error.kind || "error"}: ${error.message}`;
}

// Server-sent events read with fetch (EventSource cannot send the Authorization header): calls onEvent(name, data)
// for each event until the server closes the stream or `signal` aborts it. Returns the last event's name: "end" or
// "error" when the server ended it on purpose, anything else when the stream was cut (the caller may open it again).
export async function readEvents(path, onEvent, signal) {
  const response = await request(path, { signal, headers: { Accept: "text/event-stream" } });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let last = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return last;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trim());
        }
        if (data.length) {
          last = name;
          onEvent(name, JSON.parse(data.join("\n")));
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

export function table(head, rows) {
  const body = el("tbody");
  for (const row of rows) body.append(row);
  return el("table", { class: "card" }, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col", text: h })))), body);
}
