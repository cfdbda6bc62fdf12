// The experiments page: one row per experiment from the list's summary.

import { api } from "./api.js";
import { h, show, when, number, rendered } from "./dom.js";

function metric(summary) {
  const m = summary && summary.metric;
  return m && m.value !== null && m.value !== undefined ? `${m.name} ${number(m.value)}` : "";
}

export async function listPage(root, params, signal) {
  const { experiments } = await api("/api/v1/experiments", { signal });
  const models = [...new Set(experiments.map((e) => e.model))].sort();
  const chosen = params.get("model") || "";
  const filter = h("select", { id: "model-filter", name: "model" },
    h("option", { value: "" }, "all models"),
    models.map((m) => h("option", { value: m, selected: m === chosen }, m)));
  filter.addEventListener("change", () => {
    window.location.hash = filter.value ? `#/?model=${encodeURIComponent(filter.value)}` : "#/";
  });
  const rows = experiments.filter((e) => !chosen || e.model === chosen).reverse(); // newest first
  const columns = ["Experiment", "Model", "Strategy", "Status", "Loops done", "Labels used", "Metric", "Created"];
  const body = h("tbody", null, rows.map((e) => {
    const summary = e.summary || {};
    const cells = [
      h("a", { href: `#/e/${encodeURIComponent(e.id)}` }, e.id),
      e.model,
      e.strategy || "(labeller)",
      h("span", { class: `status ${summary.status || ""}` }, summary.status || ""),
      `${summary.loops_done ?? ""} / ${e.loops}`,
      summary.labeled ?? "",
      metric(summary),
      when(e.created),
    ];
    return h("tr", { "data-id": e.id }, cells.map((c, i) => h("td", { "data-label": columns[i] }, c)));
  }));
  show(root,
    h("div", { class: "bar" },
      h("h1", null, "Experiments"),
      h("label", { class: "inline" }, "Model ", filter),
      h("a", { class: "button", href: "#/new" }, "New experiment")),
    rows.length
      ? h("table", { class: "list" }, h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col" }, c)))), body)
      : h("p", { class: "empty" }, experiments.length ? "No experiment of this model." : "No experiment yet: create one."));
  rendered("experiments");
}
