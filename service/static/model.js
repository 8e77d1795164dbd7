// The model's card: data, metrics with what they mean, limits, and its evaluation report's plots.
import { api, apiJson, askForKey, el, fixed, markCurrentPage, setupKey, showMessage } from "/static/api.js";

const $ = (id) => document.getElementById(id);

markCurrentPage();
setupKey(load);

async function load() {
  let card;
  try {
    card = await apiJson("/v1/model-card");
  } catch (problem) {
    showMessage($("model-message"), problem.message);
    if (problem.status === 401) askForKey(problem.message);
    return;
  }
  showMessage($("model-message"), "");
  $("card").hidden = false;
  $("model-title").textContent = `${card.model_id} ${card.version}`;
  $("model-summary").textContent = card.summary || "";
  $("model-live").replaceChildren(card.live
    ? el("span", { class: "badge good" }, "served now by a live worker")
    : el("span", { class: "badge bad" }, "configured here, but no live worker serves this version now"),
  " ", el("span", { class: "note" }, `${card.head} head${card.created ? `, made ${card.created}` : ""}`));

  $("metrics").tBodies[0].replaceChildren(...Object.entries(card.evaluations).map(([name, e]) => {
    const execution = e.execution || {};
    return el("tr", {}, el("td", {}, name), el("td", { class: "num" }, String(e.num_dives)),
      el("td", { class: "num" }, fixed(e.final.spearman, 3)), el("td", { class: "num" }, fixed(e.final.relative_l2_x100, 2)),
      el("td", { class: "num" }, fixed(execution.spearman, 3)), el("td", { class: "num" }, fixed(execution.relative_l2_x100, 2)),
      el("td", { class: "num" }, fixed(e.difficulty_only_spearman, 3)), el("td", { class: "num" }, fixed(e.interval_coverage, 3)));
  }));
  $("model-data").replaceChildren(...Object.entries(card.data).flatMap(([name, value]) =>
    [el("dt", {}, name.replaceAll("_", " ")), el("dd", {}, typeof value === "object" ? JSON.stringify(value) : String(value))]));
  $("model-limits").replaceChildren(...(card.limits.length ? card.limits : ["The card lists no limits."]).map((text) => el("li", {}, text)));

  if (card.report_url) {
    try {
      const html = await (await api(card.report_url)).text();
      const frame = $("report");
      frame.addEventListener("load", () => {
        frame.style.height = `${frame.contentDocument.documentElement.scrollHeight + 20}px`;
      }, { once: true });
      frame.srcdoc = html;
      $("report-block").hidden = false;
    } catch (problem) {
      showMessage($("model-message"), problem.message);
    }
  }
}
