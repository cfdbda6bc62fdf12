// The new-experiment form. The server checks the fields; its error names
// the field at fault and is shown next to it.

import { api, ApiError } from "./api.js";
import { h, show, rendered } from "./dom.js";

function field(name, label, input, hint) {
  input.id = `f-${name}`;
  input.name = name;
  input.setAttribute("aria-describedby", `e-${name}`);
  return h("div", { class: "field" },
    h("label", { for: input.id }, label), input,
    hint ? h("small", null, hint) : null,
    h("p", { class: "field-error", id: `e-${name}`, "aria-live": "polite" }));
}

const numberInput = (placeholder) => h("input", { type: "number", inputmode: "numeric", step: "1", placeholder });

export async function createPage(root, signal) {
  const [{ models }, { plugins }] = await Promise.all([api("/api/v1/models", { signal }), api("/api/v1/plugins", { signal })]);
  const strategies = plugins.flatMap((p) => p.provides?.strategies || []).sort();
  const preset = document.querySelector('meta[name="default-strategy"]')?.content;
  const form = h("form", { class: "create", novalidate: true },
    h("p", { class: "form-error", "aria-live": "polite" }),
    field("model", "Model", h("select", { required: true }, models.map((m) => h("option", { value: m.name }, m.name)))),
    field("strategy", "Strategy", h("select", null,
      strategies.map((name) => h("option", { value: name, selected: name === preset }, name))),
      "how the records to label next are picked"),
    field("batch_size", "Batch (records per loop)", numberInput("default")),
    field("initial", "Initial records (loop 0)", numberInput("default")),
    field("loops", "Loops", numberInput("default")),
    field("seed", "Seed", numberInput("0")),
    field("labels", "Labels", h("select", null,
      h("option", { value: "plugin" }, "from the model plugin"),
      h("option", { value: "alectio" }, "by people (label selections here)"))),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Create experiment"), h("a", { href: "#/" }, "Cancel")));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const p of form.querySelectorAll(".field-error, .form-error")) p.textContent = "";
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    const body = { model: form.elements.model.value, labels: form.elements.labels.value };
    if (form.elements.strategy.value) body.strategy = form.elements.strategy.value; // none installed: the server says so
    for (const name of ["batch_size", "initial", "loops", "seed"]) {
      const raw = form.elements[name].value.trim();
      // A number the browser cannot read is sent as text, so the server's message names it.
      if (raw !== "") body[name] = /^-?\d+$/.test(raw) ? Number(raw) : raw;
      else if (form.elements[name].validity.badInput) body[name] = "not a number";
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const made = await api("/api/v1/experiments", { method: "POST", body });
      window.location.hash = `#/e/${encodeURIComponent(made.id)}`;
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      const name = err.field;
      const input = name && form.elements[name];
      if (input) {
        form.querySelector(`#e-${name}`).textContent = err.message;
        input.setAttribute("aria-invalid", "true");
        input.focus();
      } else {
        form.querySelector(".form-error").textContent = err.message;
      }
    } finally {
      button.disabled = false;
    }
  });
  show(root, h("h1", null, "New experiment"), form);
  rendered("create");
}
