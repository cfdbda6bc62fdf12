// Building the page with DOM calls only: record references and class names
// come from users' plugins, so text is never parsed as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** An HTML element: h("a", {href: "#/"}, "text", child, ...). */
export const h = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);

/** An SVG element, drawn by our own code (no charting library). */
export const s = (tag, attrs, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);

export function show(root, ...children) {
  root.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function seconds(value) {
  if (value === null || value === undefined) return "";
  if (value < 60) return `${value < 10 ? value.toFixed(2) : value.toFixed(1)} s`;
  const m = Math.floor(value / 60);
  return `${m} min ${Math.round(value - m * 60)} s`;
}

export function number(value) {
  if (typeof value !== "number") return value === null || value === undefined ? "" : String(value);
  return Number.isInteger(value) ? String(value) : value.toFixed(4);
}

/** A record's prediction or label as people read it: class names, not ids. */
export function className(value, classes) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return value.map((v) => className(v, classes)).join(", ");
  if (Number.isInteger(value) && classes && value >= 0 && value < classes.length) return classes[value];
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

/** Marks the end of a page's first render (benchmarks/bench_dashboard.py reads it). */
export function rendered(page) {
  document.body.dataset.rendered = page;
  performance.mark(`rendered:${page}`);
}
