// A loop's selection, best first. In labels mode "alectio" a person labels
// a classification task's records here: a click or a key per record (1..9
// the first nine classes, s skip, arrows or j/k to move), then Submit
// stores them all at once. Other tasks' labels are not one click: they go
// through `alectio export` / `alectio labels import` or a labeller.

import { api, ApiError, experimentPath } from "./api.js";
import { h, show, number, className, rendered } from "./dom.js";

const SKIP = Symbol("skip");

export async function selectionPage(root, id, loop, signal) {
  const path = experimentPath(id);
  const [experiment, selection] = await Promise.all([api(path, { signal }), api(`${path}/loops/${loop}/selection`, { signal })]);
  const classes = experiment.labels || [];
  const labelling = experiment.labels_mode === "alectio" && experiment.task === "classification" && classes.length > 0;
  const choices = new Map(); // index -> class name, or SKIP: what this page will submit
  const autoNext = document.querySelector('meta[name="auto-next"]')?.content === "true";
  const startNext = h("input", { type: "checkbox", id: "start-next", checked: autoNext });
  const message = h("p", { class: "message", role: "status", "aria-live": "polite" });
  const submit = h("button", { type: "button", id: "submit-labels" }, "Submit labels");
  const count = h("span", { class: "count" });
  let current = 0;

  const storedCells = [];
  const storedText = (row) => (row.skipped ? "skipped" : className(row.label, classes));
  const rows = selection.rows.map((row, i) => {
    const tr = h("tr", { "data-index": row.index, tabindex: labelling ? (i === 0 ? 0 : -1) : null });
    const cells = [
      ["#", i + 1], ["Reference", row.reference], ["Index", row.index], ["Score", number(row.score)],
      ["Prediction", className(row.prediction, classes)], ["Stored label", storedText(row)],
    ].map(([name, value]) => h("td", { "data-label": name }, value));
    storedCells.push(cells[5]);
    if (labelling) {
      const buttons = classes.map((name, c) => {
        const b = h("button", { type: "button", class: "choice", "aria-pressed": "false", "data-class": name,
          title: c < 9 ? `key ${c + 1}` : null }, c < 9 ? `${c + 1} ${name}` : name);
        b.addEventListener("click", () => choose(i, name));
        return b;
      });
      const skip = h("button", { type: "button", class: "choice skip", "aria-pressed": "false", "data-class": "", title: "key s" }, "s skip");
      skip.addEventListener("click", () => choose(i, SKIP));
      cells.push(h("td", { "data-label": "Label", class: "choices" }, h("div", null, buttons, skip)));
    }
    tr.append(...cells);
    return tr;
  });

  function refresh(i) {
    const row = selection.rows[i];
    const choice = choices.has(row.index) ? choices.get(row.index) : row.skipped ? SKIP : className(row.label, classes);
    for (const b of rows[i].querySelectorAll("button.choice")) {
      const pressed = choice === SKIP ? b.classList.contains("skip") : b.dataset.class === choice;
      b.setAttribute("aria-pressed", String(pressed));
    }
    const labelled = selection.rows.filter((r) => choices.has(r.index) || r.label !== null || r.skipped).length;
    count.textContent = `${labelled} of ${selection.rows.length} labelled or skipped`;
  }

  function move(i) {
    if (i < 0 || i >= rows.length) return;
    rows.forEach((row, j) => { row.tabIndex = j === i ? 0 : -1; }); // Tab comes back to this row
    current = i;
    rows[i].focus();
  }

  function choose(i, choice) {
    choices.set(selection.rows[i].index, choice);
    refresh(i);
    move(Math.min(i + 1, rows.length - 1));
  }

  const table = h("table", { class: "list selection" },
    h("thead", null, h("tr", null, ["#", "Reference", "Index", "Score", "Prediction", "Stored label", labelling ? "Label" : null]
      .filter(Boolean).map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", null, rows));

  if (labelling) {
    table.addEventListener("focusin", (event) => { // a row, or a button in it
      const i = rows.indexOf(event.target.closest("tr"));
      if (i >= 0) current = i;
    });
    table.addEventListener("keydown", (event) => {
      if (event.altKey || event.ctrlKey || event.metaKey) return;
      const key = event.key;
      if (/^[1-9]$/.test(key) && Number(key) <= classes.length) choose(current, classes[Number(key) - 1]);
      else if (key === "s") choose(current, SKIP);
      else if (key === "ArrowDown" || key === "j") move(current + 1);
      else if (key === "ArrowUp" || key === "k") move(current - 1);
      else return;
      event.preventDefault();
    });
    submit.addEventListener("click", async () => {
      const labels = {}, skip = [];
      for (const [index, choice] of choices) {
        if (choice === SKIP) skip.push(index);
        else labels[String(index)] = choice;
      }
      submit.disabled = true;
      message.textContent = "";
      try {
        const stored = await api(`${path}/labels`, { method: "POST", body: { labels, skip } });
        choices.clear();
        selection.rows = (await api(`${path}/loops/${loop}/selection`)).rows; // what is stored now
        selection.rows.forEach((row, i) => {
          storedCells[i].textContent = storedText(row);
          refresh(i);
        });
        let text = `Stored ${counted(stored.stored, "label")} and ${counted(stored.skipped, "skip")}; ${counted(stored.missing, "record")} of loop ${stored.loop} still ${stored.missing === 1 ? "needs" : "need"} one.`;
        if (stored.missing === 0 && startNext.checked) {
          const started = await api(`${path}/loops`, { method: "POST" });
          text += ` Loop ${started.loop} started.`;
        }
        message.textContent = text;
        message.append(" ", h("a", { href: `#/e/${encodeURIComponent(id)}` }, "Back to the experiment"));
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        message.textContent = err.message;
      } finally {
        submit.disabled = false;
      }
    });
  }

  show(root,
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Experiments"), " / ",
      h("a", { href: `#/e/${encodeURIComponent(id)}` }, id), ` / loop ${loop}`),
    h("h1", null, `Loop ${loop}: selection`),
    h("p", null, `${selection.rows.length} records, best first.`,
      labelling ? " Click a class, or focus a row and press 1–9 for the first nine classes, s to skip, ↑/↓ or j/k to move." : ""),
    selection.rows.length ? table : h("p", { class: "empty" }, "Nothing selected."),
    labelling ? h("div", { class: "actions" }, submit, count,
      h("label", { class: "inline" }, startNext, " Start the next loop when the batch is complete")) : null,
    message);
  if (labelling) rows.forEach((_, i) => refresh(i));
  rendered("selection");
}

/** "1 label", "2 labels", "0 skips". */
function counted(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}
