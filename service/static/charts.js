// Small inline-SVG charts of a score: its interval band, the exemplars' votes, the alignment path.

const SVG = "http://www.w3.org/2000/svg";

function svgEl(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceTicks(low, high, count = 6) {
  const span = high - low || 1;
  const raw = span / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  const ticks = [];
  for (let t = Math.ceil(low / step) * step; t <= high + 1e-9; t += step) ticks.push(Number(t.toFixed(6)));
  return ticks;
}

function axis(svg, scale, low, high, y, left, right) {
  svg.append(svgEl("line", { x1: left, x2: right, y1: y, y2: y, stroke: "#8a97a6" }));
  for (const tick of niceTicks(low, high)) {
    const x = scale(tick);
    svg.append(svgEl("line", { x1: x, x2: x, y1: y, y2: y + 4, stroke: "#8a97a6" }));
    svg.append(svgEl("text", { x, y: y + 16, "text-anchor": "middle", "font-size": 11, fill: "#556373" }, String(tick)));
  }
}

/** The score on a scale with its 90% interval drawn as a band. */
export function intervalBand({ score, low, high }) {
  const width = 460, height = 64, left = 14, right = width - 14;
  const pad = Math.max((high - low) * 0.6, 2);
  const min = Math.max(0, Math.floor(low - pad)), max = Math.ceil(high + pad);
  const scale = (v) => left + ((v - min) / (max - min)) * (right - left);
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart interval-band", role: "img",
    "aria-label": `Score ${score.toFixed(2)}, 90% interval ${low.toFixed(2)} to ${high.toFixed(2)}` });
  svg.append(svgEl("rect", { x: scale(low), y: 10, width: Math.max(scale(high) - scale(low), 2), height: 22,
    fill: "#b9d3ec", stroke: "#6f9cc8", rx: 3, "data-role": "band" }));
  svg.append(svgEl("line", { x1: scale(score), x2: scale(score), y1: 4, y2: 38, stroke: "#1d2733", "stroke-width": 3 }));
  axis(svg, scale, min, max, 42, left, right);
  return svg;
}

/** Each exemplar's vote (in final-score points) as a dot, over the interval band and the score's line. */
export function voteChart({ votes, score, low, high }) {
  const values = votes.map((v) => v.value);
  const lo = Math.min(low, ...values), hi = Math.max(high, ...values);
  const pad = Math.max((hi - lo) * 0.1, 1);
  const min = lo - pad, max = hi + pad;
  const rows = Math.max(votes.length, 1);
  const width = 460, left = 14, right = width - 14, rowHeight = 14, top = 8;
  const height = top + rows * rowHeight + 30;
  const scale = (v) => left + ((v - min) / (max - min)) * (right - left);
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart vote-chart", role: "img",
    "aria-label": `${votes.length} exemplar votes around the score ${score.toFixed(2)}` });
  svg.append(svgEl("rect", { x: scale(low), y: top - 4, width: Math.max(scale(high) - scale(low), 2),
    height: rows * rowHeight + 4, fill: "#e3eef8" }));
  svg.append(svgEl("line", { x1: scale(score), x2: scale(score), y1: top - 4, y2: top + rows * rowHeight,
    stroke: "#1d2733", "stroke-width": 2 }));
  votes.forEach((vote, i) => {
    const y = top + i * rowHeight + rowHeight / 2;
    svg.append(svgEl("line", { x1: scale(score), x2: scale(vote.value), y1: y, y2: y, stroke: "#9fb3c8" }));
    const dot = svgEl("circle", { cx: scale(vote.value), cy: y, r: 4.5, fill: "#1f5f99", "data-role": "vote" });
    dot.append(svgEl("title", {}, `${vote.id}: votes ${vote.value.toFixed(2)}`));
    svg.append(dot);
  });
  axis(svg, scale, min, max, top + rows * rowHeight + 6, left, right);
  return svg;
}

/** The dynamic-time-warping path from the query's clips (across) to the closest exemplar's (down). */
export function alignmentChart({ path, queryClips, exemplarClips, onSelect }) {
  const cell = Math.max(6, Math.min(28, Math.floor(300 / Math.max(queryClips, exemplarClips))));
  const left = 34, top = 10;
  const width = left + queryClips * cell + 10, height = top + exemplarClips * cell + 30;
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart alignment-chart", role: "img",
    "aria-label": "Alignment of the dive's clips with the closest exemplar's clips", style: `max-width:${width}px` });
  for (let i = 0; i < queryClips; i++) {
    const column = svgEl("rect", { x: left + i * cell, y: top, width: cell, height: exemplarClips * cell,
      fill: i % 2 ? "#f3f6f9" : "#eaf0f6", "data-clip": i, style: "cursor:pointer" });
    column.append(svgEl("title", {}, `clip ${i + 1} of the dive: click to see it`));
    column.addEventListener("click", () => onSelect(i));
    svg.append(column);
  }
  const points = path.map(([i, j]) => `${left + (i + 0.5) * cell},${top + (j + 0.5) * cell}`).join(" ");
  svg.append(svgEl("polyline", { points, fill: "none", stroke: "#c0392b", "stroke-width": 2, "pointer-events": "none" }));
  for (const [i, j] of path) {
    svg.append(svgEl("circle", { cx: left + (i + 0.5) * cell, cy: top + (j + 0.5) * cell, r: 2.5, fill: "#c0392b",
      "pointer-events": "none" }));
  }
  svg.append(svgEl("text", { x: left, y: height - 8, "font-size": 11, fill: "#556373" }, "this dive's clips →"));
  svg.append(svgEl("text", { x: 12, y: top + 4, "font-size": 11, fill: "#556373",
    transform: `rotate(90 12 ${top + 4})` }, "exemplar's clips →"));
  return svg;
}
