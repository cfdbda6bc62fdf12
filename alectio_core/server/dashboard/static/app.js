// The dashboard: hash routes to pages. Each page fetches what it shows
// from the JSON API and cleans up (event streams, timers) when left; a page
// left before its data came is dropped (its requests aborted), so it never
// covers the next one or leaves a stream open.

import { h, show } from "./dom.js";
import { listPage } from "./list.js";
import { createPage } from "./create.js";
import { experimentPage } from "./experiment.js";
import { selectionPage } from "./selection.js";

const root = document.getElementById("app");
let leaving = [];
let loading = new AbortController();

function route(signal) {
  const [path, query] = (window.location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return () => listPage(root, params, signal);
  if (parts[0] === "new" && parts.length === 1) return () => createPage(root, signal);
  if (parts[0] === "e" && parts.length === 2) return () => experimentPage(root, parts[1], (fn) => leaving.push(fn), signal);
  if (parts[0] === "e" && parts[2] === "loops" && parts.length === 4 && /^\d+$/.test(parts[3])) {
    return () => selectionPage(root, parts[1], Number(parts[3]), signal);
  }
  return null;
}

async function render() {
  for (const fn of leaving) fn();
  leaving = [];
  loading.abort();
  loading = new AbortController();
  const signal = loading.signal;
  const page = route(signal);
  try {
    if (!page) show(root, h("h1", null, "Not found"), h("p", null, h("a", { href: "#/" }, "Back to the experiments")));
    else await page();
    root.focus({ preventScroll: true });
  } catch (err) {
    if (err.status === 401 || signal.aborted) return; // going to the sign-in page, or left for another
    show(root, h("h1", null, "Something went wrong"), h("p", { class: "error", role: "alert" }, err.message),
      h("p", null, h("a", { href: "#/" }, "Back to the experiments")));
  }
}

window.addEventListener("hashchange", render);
render();
