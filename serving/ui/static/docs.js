// The API reference at /docs: Swagger UI (this server's copy of swagger-ui-dist, no CDN) over /openapi.json. When
// keys are required, the description and every "Try it out" request carry the key signed in to the web UI (the
// same sessionStorage entry); without one, the page asks for a key.

import { INVALID_KEY, KEY, $, validKey } from "/ui/core.js";

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

// Shows the reference read with `key` (the stored one, or one just typed). A typed key is stored for the tab (and the
// UI) only once the server took it: a wrong one stored first made /ui say "no longer accepted" of a key that never was.
async function show(key = sessionStorage.getItem(KEY), typed = false) {
  $("#docs-message").hidden = true;
  $("#docs-key").hidden = true;
  if (typeof window.SwaggerUIBundle !== "function") {
    say("Swagger UI is not installed on this server (make ui). The API description is at", "/openapi.json");
    return;
  }
  if (key && !validKey(key)) { // the browser would refuse the header with an error that says nothing to a person
    say(INVALID_KEY);
    $("#docs-key").hidden = false;
    return;
  }
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
  if (typed) sessionStorage.setItem(KEY, key);
  window.SwaggerUIBundle({ spec: await response.json(), dom_id: "#swagger", deepLinking: true, requestInterceptor: withKey });
}

$("#docs-key").addEventListener("submit", (event) => {
  event.preventDefault();
  show($("#docs-api-key").value.trim(), true);
});

show();
