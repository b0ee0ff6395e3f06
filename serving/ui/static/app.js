// imgserve web UI: sign in, the page router and the audit page. Plain DOM, no framework, no network but this
// server's own /v1 and /v2 routes (and its /metrics for the charts). Each page lives in its own module.

import { $, KEY, ROLES, api, can, el, errorText, state } from "./core.js";
import { forgetAnalyze, showAnalyze, wireAnalyze } from "./analyze.js";
import { forgetConvert, showConvert, wireConvert } from "./operations.js";
import { forgetJobs, leaveJobs, showJobs, wireJobs } from "./jobs.js";
import { forgetCollections, leaveCollections, showCollections, wireCollections } from "./collections.js";
import { forgetServer, leaveServer, showServer } from "./server.js";

// ---- sign in -------------------------------------------------------------------------------------
const removed = []; // [placeholder comment, control] of the controls the signed-in role may not use
// What one key was shown (results, lists, reports, charts) leaves the page before another key signs in: the
// previous tenant's jobs stayed on screen until the new key's list arrived, and a page the new key may not load kept them.
const forgetShown = [forgetAnalyze, forgetConvert, forgetJobs, forgetCollections, forgetServer,
  () => $("#audit-table tbody").replaceChildren()];

async function signIn(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
  state.me = null; // a refused key is not "a key that stopped working" (core.js request)
  for (const forget of forgetShown) forget();
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
  // Controls a role may not use are removed, not just hidden: a viewer's page has no admin link or button at all.
  // A comment keeps each one's place, so signing in again with another key puts back what that key may use.
  for (const [mark, control] of removed.splice(0)) mark.replaceWith(control);
  for (const control of document.querySelectorAll("[data-role]")) {
    const allowed = me && ROLES.indexOf(me.role) >= ROLES.indexOf(control.dataset.role);
    if (allowed) continue;
    const mark = document.createComment(`${control.dataset.role} control`);
    control.replaceWith(mark);
    removed.push([mark, control]);
  }
}

// ---- pages ---------------------------------------------------------------------------------------
const pages = {
  signin: null,
  analyze: showAnalyze,
  convert: showConvert,
  jobs: showJobs,
  collections: showCollections,
  server: showServer,
  audit: showAudit,
};
const leave = [leaveJobs, leaveServer, leaveCollections];
// Pages a role below this cannot use (their links are removed at sign-in): the address alone leads home.
const needs = { analyze: "analyst", convert: "analyst", audit: "admin" };

// A viewer cannot analyze: its first page is Collections.
const home = () => (state.me && state.me.role === "viewer" ? "collections" : "analyze");
const NO_LONGER_ACCEPTED = "Your key is no longer accepted: sign in with another.";

// Navigations can overlap (the first load still asking who the stored key is when the address changes): only the
// latest one may choose the page, or a slow earlier one would hide the page asked for after it.
let navigation = 0;

async function route() {
  const mine = ++navigation;
  let page = location.hash.replace(/^#\//, "").split("?")[0];
  $("#page-error").textContent = ""; // an earlier page's error is not this page's
  if (!state.me && page !== "signin") {
    const stored = sessionStorage.getItem(KEY) || "";
    try {
      await signIn(stored);
    } catch (error) {
      if (stored && error.status === 401) $("#signin-error").textContent = NO_LONGER_ACCEPTED;
      if (error.kind === "invalid_key") $("#signin-error").textContent = error.message; // never sent: it never worked
      page = "signin";
    }
    if (mine !== navigation) return;
  }
  if (!Object.hasOwn(pages, page)) page = home(); // "#/constructor" is `in` every object: a blank page
  if (needs[page] && !can(needs[page])) page = home();
  for (const stop of leave) stop();
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${page}`;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const heading = $(`#page-${page} h1`);
  heading.tabIndex = -1;
  heading.focus({ preventScroll: true }); // a screen reader hears where it is; Tab continues from the page
  try {
    if (pages[page]) await pages[page]();
  } catch (error) {
    if (mine === navigation) throw error; // a page already left says nothing on the one shown now
  }
}

async function showAudit() {
  const answer = await api("/v1/audit?newest=true&limit=100"); // the latest, whatever flooded the week before
  const body = $("#audit-table tbody");
  body.replaceChildren();
  for (const entry of answer.entries) {
    body.append(el("tr", {}, el("td", { text: new Date(entry.at * 1000).toISOString().replace("T", " ").slice(0, 19) }),
      el("td", { text: entry.action }), el("td", { text: entry.outcome }),
      el("td", { text: [entry.role, entry.tenant, entry.key_id].filter(Boolean).join(" · ") || "—" }), el("td", { text: entry.target || "" })));
  }
}

// ---- wiring --------------------------------------------------------------------------------------
// A page that could not load says why in one place every page shows (#page-error, cleared by each navigation).
function showError(error) {
  $("#page-error").textContent = errorText(error);
}

// The stored key stopped working mid-session (core.js request dropped it): back to sign-in, saying why.
function keyRefused() {
  for (const forget of forgetShown) forget();
  showIdentity();
  $("#page-error").textContent = "";
  $("#signin-error").textContent = NO_LONGER_ACCEPTED;
  location.hash = "#/signin";
}

function wire() {
  $("#signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("#signin-error").textContent = "";
    try {
      await signIn($("#api-key").value.trim());
      $("#api-key").value = "";
      location.hash = `#/${home()}`;
    } catch (error) {
      $("#signin-error").textContent = error.status === 401 ? "That key was not accepted." : error.message;
    }
  });
  $("#signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    location.hash = "#/signin";
    location.reload();
  });
  wireAnalyze();
  wireConvert();
  wireJobs();
  wireCollections();
  window.addEventListener("hashchange", () => route().catch(showError));
  window.addEventListener("imgserve:key-refused", keyRefused);
}

wire();
route().catch(showError);
