// Charts as SVG drawn here: colours come from classes in app.css or from
// fill attributes (the Content-Security-Policy forbids style attributes).

import { h, s, number } from "./dom.js";

const W = 640, H = 320, M = { top: 12, right: 16, bottom: 44, left: 56 };

/** About five round tick values covering [lo, hi]. */
function ticks(lo, hi) {
  if (lo === hi) return [lo];
  const raw = (hi - lo) / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((v) => v >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/**
 * A learning curve: series = [{name, points: [{x, y, loop}]}], each drawn
 * with colour class c0..c7. Points are focusable, so a keyboard user can
 * read every value (its <title>).
 */
export function lineChart(series, { xLabel, yLabel }) {
  const all = series.flatMap((line) => line.points);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "group", "aria-label": `${yLabel} against ${xLabel}` });
  if (!all.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no finished loop yet"));
    return svg;
  }
  const xs = all.map((p) => p.x), ys = all.map((p) => p.y);
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y0 >= 0 && y1 <= 1) [y0, y1] = [Math.min(y0, Math.max(0, y0 - 0.05)), Math.max(y1, Math.min(1, y1 + 0.05))];
  if (y0 === y1) [y0, y1] = [y0 - 1, y1 + 1];
  const x0 = 0, x1 = Math.max(...xs) || 1;
  const px = (x) => M.left + ((x - x0) / (x1 - x0)) * (W - M.left - M.right);
  const py = (y) => H - M.bottom - ((y - y0) / (y1 - y0)) * (H - M.top - M.bottom);

  const axes = s("g", { class: "axes" });
  for (const t of ticks(x0, x1)) {
    axes.append(s("line", { x1: px(t), x2: px(t), y1: H - M.bottom, y2: H - M.bottom + 5 }),
      s("text", { x: px(t), y: H - M.bottom + 18, "text-anchor": "middle" }, number(t)));
  }
  for (const t of ticks(y0, y1)) {
    axes.append(s("line", { class: "grid", x1: M.left, x2: W - M.right, y1: py(t), y2: py(t) }),
      s("text", { x: M.left - 6, y: py(t) + 4, "text-anchor": "end" }, Number(t.toPrecision(4))));
  }
  axes.append(
    s("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom }),
    s("line", { x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom }),
    s("text", { x: (M.left + W - M.right) / 2, y: H - 6, "text-anchor": "middle", class: "label" }, xLabel),
    s("text", { x: 14, y: (M.top + H - M.bottom) / 2, "text-anchor": "middle", class: "label",
      transform: `rotate(-90 14 ${(M.top + H - M.bottom) / 2})` }, yLabel),
  );
  svg.append(axes);
  series.forEach((line, i) => {
    const pts = [...line.points].sort((a, b) => a.x - b.x);
    const g = s("g", { class: `series c${i % 8}`, "data-series": line.name });
    if (pts.length > 1) g.append(s("polyline", { points: pts.map((p) => `${px(p.x)},${py(p.y)}`).join(" ") }));
    for (const p of pts) {
      g.append(s("circle", { cx: px(p.x), cy: py(p.y), r: 4, tabindex: 0, class: "point",
        "aria-label": `${line.name}, loop ${p.loop}: ${yLabel} ${number(p.y)} at ${p.x} labels` },
      s("title", null, `${line.name} · loop ${p.loop} · ${p.x} labels · ${number(p.y)}`)));
    }
    svg.append(g);
  });
  return svg;
}

export function legend(names) {
  return h("ul", { class: "legend" }, names.map((name, i) => h("li", { class: `c${i % 8}` }, h("span", { class: "swatch", "aria-hidden": "true" }), name)));
}

/** The confusion matrix as a heat map: rows true class, columns predicted. */
export function heatmap(matrix, names) {
  const n = matrix.length, cell = n > 12 ? 22 : 40, left = 90, top = 70;
  const max = Math.max(1, ...matrix.flat());
  const size = { w: left + n * cell + 4, h: top + n * cell + 4 };
  const svg = s("svg", { viewBox: `0 0 ${size.w} ${size.h}`, width: size.w, height: size.h, class: "heatmap", role: "img",
    "aria-label": "confusion matrix: rows are true classes, columns predicted classes" });
  const label = (i) => String(names?.[i] ?? i).slice(0, 12);
  for (let j = 0; j < n; j++) {
    const x = left + j * cell + cell / 2;
    svg.append(s("text", { x, y: top - 6, transform: `rotate(-45 ${x} ${top - 6})`, class: "tick" }, label(j)));
  }
  svg.append(s("text", { x: left, y: 12, class: "label" }, "predicted →"), s("text", { x: 2, y: top - 6, class: "label" }, "true ↓"));
  matrix.forEach((row, i) => {
    svg.append(s("text", { x: left - 6, y: top + i * cell + cell / 2 + 4, "text-anchor": "end", class: "tick" }, label(i)));
    row.forEach((v, j) => {
      const t = v / max;
      // white to a dark blue; the diagonal (right answers) in green
      const [r, g, b] = i === j ? [255 - 200 * t, 255 - 90 * t, 255 - 200 * t] : [255 - 215 * t, 255 - 175 * t, 255 - 80 * t];
      const fill = `rgb(${Math.round(r)},${Math.round(g)},${Math.round(b)})`;
      svg.append(s("rect", { x: left + j * cell, y: top + i * cell, width: cell - 1, height: cell - 1, fill },
        s("title", null, `true ${label(i)}, predicted ${label(j)}: ${v}`)));
      if (cell >= 30) svg.append(s("text", { x: left + j * cell + cell / 2, y: top + i * cell + cell / 2 + 4,
        "text-anchor": "middle", class: t > 0.55 ? "count dark" : "count" }, v));
    });
  });
  return svg;
}
