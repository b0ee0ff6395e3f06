// The API reference at /docs: Swagger UI (this server's copy of swagger-ui-dist, no CDN) over /openapi.json. When
// keys are required, the description and every "Try it out" request carry the key signed in to the web UI (the
// same sessionStorage entry); without one, the page asks for a key.

import { KEY, $ } from "/ui/core.js";

function say(text, link) {
  const message = $("#docs-message");
  message.textContent = text;
  if (link) {
    const anchor = document.createElement("a");
    anchor.href = link;
    anchor.textContent = link;
    message.append(" ", anchor);
  }
  message.hidden = false;
}

function withKey(request) {
  const key = sessionStorage.getItem(KEY);
  if (key && !request.headers.Authorization) request.headers.Authorization = `Bearer ${key}`;
  return request;
}

async function show() {
  $("#docs-message").hidden = true;
  $("#docs-key").hidden = true;
  if (typeof window.SwaggerUIBundle !== "function") {
    say("Swagger UI is not installed on this server (make ui). The API description is at", "/openapi.json");
    return;
  }
  const key = sessionStorage.getItem(KEY);
  const response = await fetch("/openapi.json", { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  if (response.status === 401 || response.status === 403) {
    if (key) say(response.status === 401 ? "That key was not accepted." : "That key may not read the reference.");
    $("#docs-key").hidden = false;
    return;
  }
  if (!response.ok) {
    say(`The API description could not be read (HTTP ${response.status}).`, "/openapi.json");
    return;
  }
  window.SwaggerUIBundle({ spec: await response.json(), dom_id: "#swagger", deepLinking: true, requestInterceptor: withKey });
}

$("#docs-key").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("#docs-api-key").value.trim());
  show();
});

show();
