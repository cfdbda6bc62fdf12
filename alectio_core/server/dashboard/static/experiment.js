// The experiment page: its learning curve (with others overlaid), the
// running loop live from server-sent events (polling when they fail), each
// loop's details, and the buttons that start and cancel loops.

import { api, ApiError, experimentPath } from "./api.js";
import { h, show, when, seconds, number, rendered } from "./dom.js";
import { lineChart, legend, heatmap } from "./charts.js";

const ACTIVE = new Set(["queued", "running"]);
const POLL_MS = 2000;
const STAGES = ["train", "test", "metrics", "infer", "select"]; // a loop's order; others after

function stageTimes(times) {
  const rank = (stage) => (STAGES.includes(stage) ? STAGES.indexOf(stage) : STAGES.length);
  return Object.entries(times || {}).sort((a, b) => rank(a[0]) - rank(b[0]))
    .map(([stage, t]) => `${stage} ${seconds(t)}`).join(" · ");
}

function numericMetrics(curve) {
  const names = new Set();
  for (const point of curve) for (const [k, v] of Object.entries(point.metrics || {})) if (typeof v === "number") names.add(k);
  return names;
}

// A square matrix of counts, small enough to draw cell by cell (a
// multilabel task's per-class 2 x 2 matrices, or thousands of classes, are not).
const MAX_CLASSES = 50;
function isMatrix(m) {
  return Array.isArray(m) && m.length > 0 && m.length <= MAX_CLASSES
    && m.every((row) => Array.isArray(row) && row.length === m.length && row.every((v) => typeof v === "number"));
}

function perClass(counts) {
  return Object.entries(counts || {}).map(([k, v]) => `${k} ${v}`).join(" · ");
}

export async function experimentPage(root, id, onLeave, signal) {
  const path = experimentPath(id);
  const [experiment, { loops }, { experiments }] = await Promise.all(
    [api(path, { signal }), api(`${path}/loops`, { signal }), api("/api/v1/experiments", { signal })]);
  const page = {
    experiment,
    loops: new Map(loops.map((l) => [l.loop, l])),
    overlays: new Map(), // experiment id -> {name, curve}
    metric: null,
  };
  const label = (e) => `${e.id} (${e.strategy || "labeller"})`;

  const message = h("p", { class: "message", role: "status", "aria-live": "polite" });
  const startButton = h("button", { type: "button", id: "start-loop" }, "Start next loop");
  const cancelButton = h("button", { type: "button", id: "cancel-loop", class: "danger" }, "Cancel running loop");
  const header = h("section", { class: "meta" });
  const live = h("section", { class: "live", "aria-label": "running loop" });
  const progress = h("progress", { max: 1 });
  const liveText = h("span", { class: "live-text" });
  const elapsed = h("span", { class: "elapsed" });
  const metricSelect = h("select", { id: "metric" });
  const chartBox = h("div", { class: "chart-box" });
  const overlayBox = h("fieldset", { class: "overlays" });
  const allModels = h("input", { type: "checkbox", id: "all-models" });
  const loopsBox = h("section", { class: "loops" });

  const activeLoop = () => [...page.loops.values()].find((l) => ACTIVE.has(l.status)) || null;
  const ownCurve = () => [...page.loops.values()].filter((l) => l.status === "done")
    .sort((a, b) => a.loop - b.loop).map((l) => ({ loop: l.loop, labeled: l.labeled, metrics: l.metrics }));

  function renderHeader() {
    const e = page.experiment;
    const items = [["Model", e.model], ["Strategy", e.strategy || "(labeller)"], ["Labels", e.labels_mode],
      ["Task", e.task], ["Batch", e.batch_size], ["Initial", e.initial], ["Loops done", `${e.loops_done} / ${e.loops}`],
      ["Seed", e.seed], ["Pool", e.pool_size], ["Created", when(e.created)]];
    show(header, h("dl", null, items.map(([k, v]) => h("div", null, h("dt", null, k), h("dd", null, v ?? "")))));
  }

  function renderActions() {
    const running = activeLoop();
    const e = page.experiment;
    startButton.disabled = Boolean(running) || e.loops_done >= e.loops;
    cancelButton.disabled = !running || running.cancel_requested;
  }

  function tick() {
    const l = activeLoop();
    if (!l || !l.started_at) { elapsed.textContent = ""; return; }
    elapsed.textContent = `elapsed ${seconds((Date.now() - Date.parse(l.started_at)) / 1000)}`;
  }

  function renderLive() {
    const l = activeLoop();
    if (!l) {
      live.hidden = true;
      return;
    }
    live.hidden = false;
    const p = l.progress;
    let text = `Loop ${l.loop}: ${l.status}`;
    if (l.stage) text += ` · ${l.stage}`;
    if (p && p.total) {
      progress.max = p.total;
      progress.value = p.done;
      text += ` · ${p.done.toLocaleString()} / ${p.total.toLocaleString()} records`;
      if (p.shards) text += ` · shards ${p.shards.done} / ${p.shards.total}`;
    } else {
      progress.removeAttribute("value"); // indeterminate until infer reports
    }
    if (l.cancel_requested) text += " · cancelling";
    liveText.textContent = text;
    live.dataset.stage = l.stage || l.status;
    tick();
  }

  function renderChart() {
    const series = [{ name: label(page.experiment), curve: ownCurve() }, ...page.overlays.values()];
    const names = new Set(series.flatMap((line) => [...numericMetrics(line.curve)]));
    if (!page.metric || !names.has(page.metric)) page.metric = names.has("accuracy") ? "accuracy" : [...names][0] || null;
    show(metricSelect, [...names].sort().map((n) => h("option", { value: n, selected: n === page.metric }, n)));
    metricSelect.disabled = !names.size;
    const lines = series.map((line) => ({
      name: line.name,
      points: line.curve.filter((p) => typeof p.metrics?.[page.metric] === "number")
        .map((p) => ({ x: p.labeled, y: p.metrics[page.metric], loop: p.loop })),
    }));
    show(chartBox, lineChart(lines, { xLabel: "labels used", yLabel: page.metric || "metric" }), legend(series.map((l) => l.name)));
  }

  function renderOverlays() {
    const others = experiments.filter((e) => e.id !== id && (allModels.checked || e.model === page.experiment.model)).reverse();
    show(overlayBox,
      h("legend", null, "Compare with"),
      h("label", { class: "inline" }, allModels, " experiments of every model"),
      others.length ? h("ul", { class: "overlay-list" }, others.map((e) => {
        const box = h("input", { type: "checkbox", value: e.id, checked: page.overlays.has(e.id), "data-overlay": e.id });
        box.addEventListener("change", () => toggleOverlay(e, box));
        return h("li", null, h("label", null, box, ` ${label(e)}${e.model !== page.experiment.model ? ` · ${e.model}` : ""}`));
      })) : h("p", { class: "empty" }, "no other experiment to compare with"));
  }

  async function toggleOverlay(e, box) {
    if (!box.checked) page.overlays.delete(e.id);
    else {
      const { curve } = await api(`${experimentPath(e.id)}/metrics`);
      if (box.checked) page.overlays.set(e.id, { name: label(e), curve });
    }
    renderChart();
  }

  function renderLoops() {
    const e = page.experiment;
    const rows = [...page.loops.values()].sort((a, b) => a.loop - b.loop);
    const next = rows.length ? Math.max(...rows.map((l) => l.loop)) + (rows.at(-1).status === "done" ? 1 : 0) : 0;
    const labelLink = e.labels_mode === "alectio" && next < e.loops && !page.loops.has(next)
      ? h("p", null, h("a", { class: "button", href: `#/e/${encodeURIComponent(id)}/loops/${next}` }, `Label loop ${next}'s selection`))
      : null;
    const columns = ["Loop", "Status", "Labels used", "Stage times", "Queried per class", "Selection"];
    const table = h("table", { class: "list loops-table" },
      h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", null, rows.map((l) => {
        const cells = [
          l.loop,
          h("div", null, h("span", { class: `status ${l.status}` }, l.status),
            l.error ? h("div", { class: "error" }, l.error) : null,
            l.stop ? h("div", { class: "stop" }, `stopped by ${l.stop.criterion}: ${l.stop.reason}`) : null),
          l.labeled ?? "",
          stageTimes(l.stage_times),
          perClass(l.metrics?.num_queried_per_class || l.per_class_counts),
          h("a", { href: `#/e/${encodeURIComponent(id)}/loops/${l.loop}` }, `loop ${l.loop}`),
        ];
        return h("tr", { "data-loop": l.loop }, cells.map((c, i) => h("td", { "data-label": columns[i] }, c)));
      })));
    const matrices = rows.filter((l) => isMatrix(l.metrics?.confusion_matrix)).reverse().map((l, i) =>
      h("details", { open: i === 0, class: "matrix" },
        h("summary", null, `Loop ${l.loop}: confusion matrix`),
        heatmap(l.metrics.confusion_matrix, l.metrics.class_names || e.labels)));
    show(loopsBox, h("h2", null, "Loops"), labelLink, rows.length ? table : h("p", { class: "empty" }, "No loop yet."), matrices);
  }

  function onLoop(state) {
    const before = page.loops.get(state.loop);
    page.loops.set(state.loop, state);
    renderLive();
    renderActions();
    if (!before || before.status !== state.status) {
      if (before && !ACTIVE.has(state.status)) message.textContent = `Loop ${state.loop} ${state.status}.`;
      renderLoops();
      if (state.status === "done") renderChart();
    }
  }

  function onExperiment(body) {
    page.experiment = body;
    renderHeader();
    renderActions();
  }

  // -- live: server-sent events, polling while they are not connected ----------
  // (A stream the server ends on schedule reconnects within a second; one
  // refused or blocked never connects, and polling keeps the page live.)
  let poller = null;
  function poll() {
    if (poller) return;
    poller = setInterval(async () => {
      const l = activeLoop();
      if (!l) return;
      try {
        onLoop(await api(`${path}/loops/${l.loop}`));
        if (!activeLoop()) onExperiment(await api(path));
      } catch (err) {
        if (!(err instanceof ApiError)) throw err; // the next poll tries again
      }
    }, POLL_MS);
  }
  const events = new EventSource(`${path}/events`);
  events.addEventListener("loop", (ev) => onLoop(JSON.parse(ev.data)));
  events.addEventListener("experiment", (ev) => onExperiment(JSON.parse(ev.data)));
  events.addEventListener("open", () => {
    clearInterval(poller);
    poller = null;
  });
  events.addEventListener("error", () => {
    if (events.readyState !== EventSource.OPEN) poll();
  });
  const clock = setInterval(tick, 1000);
  onLeave(() => {
    events.close();
    clearInterval(clock);
    clearInterval(poller);
  });

  // -- buttons -----------------------------------------------------------------
  async function act(button, work) {
    button.disabled = true;
    message.textContent = "";
    try {
      await work();
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      message.textContent = err.message;
      if (err.code === "labels_missing") {
        const next = page.experiment.loops_done;
        message.append(" ", h("a", { href: `#/e/${encodeURIComponent(id)}/loops/${next}` }, "label them"));
      }
    } finally {
      renderActions();
    }
  }
  startButton.addEventListener("click", () => act(startButton, async () => {
    const started = await api(`${path}/loops`, { method: "POST" });
    message.textContent = `Loop ${started.loop} started.`;
    onLoop(await api(`${path}/loops/${started.loop}`));
  }));
  cancelButton.addEventListener("click", () => act(cancelButton, async () => {
    const l = activeLoop();
    if (!l) return;
    onLoop(await api(`${path}/loops/${l.loop}/cancel`, { method: "POST" }));
    message.textContent = `Loop ${l.loop}: cancel requested.`;
  }));
  metricSelect.addEventListener("change", () => { page.metric = metricSelect.value; renderChart(); });
  allModels.addEventListener("change", renderOverlays);

  show(root,
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Experiments"), " / ", id),
    h("h1", null, `Experiment ${id}`),
    header,
    h("div", { class: "actions" }, startButton, cancelButton),
    message,
    h("div", null, live),
    h("section", { class: "curve" },
      h("h2", null, "Learning curve"),
      h("label", { class: "inline", for: "metric" }, "Metric "), metricSelect,
      h("div", { class: "curve-grid" }, chartBox, overlayBox)),
    loopsBox);
  live.append(liveText, progress, elapsed);
  renderHeader();
  renderActions();
  renderLive();
  renderChart();
  renderOverlays();
  renderLoops();
  rendered("experiment");
}
