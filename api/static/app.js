// The managers' page: pick a store, see its history and forecast (P10–P90 band), and whether it is stale.
// Plain browser JavaScript, no build step and nothing fetched from elsewhere.
//
// Deep link: /?dataset=retail&entity=berlin-001 (the alert emails link there). A token may come in
// the URL fragment (#token=...): it is moved to session storage and removed from the address bar.
"use strict";

const TOKEN_KEY = "batchcast.token";
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function takeTokenFromFragment() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function api(path) {
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${token()}`, Accept: "application/json" },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body.detail || response.statusText);
  return body;
}

function say(text) {
  $("message").textContent = text || "";
}

function showLogin(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  $("login").hidden = false;
  $("picker").hidden = true;
  $("result").hidden = true;
  say(reason);
}

// What the caller's datasets call one entity (store, station), from /stores: the page's words.
let word = "store";

function useWords(stores) {
  const words = [...new Set(stores.map((s) => s.entity_word))];
  word = words.length ? words.join(" or ") : "store";
  const plural = words.map((w) => `${w}s`).join(" and ") || "stores";
  $("subtitle").textContent = `forecasts for your ${plural}`;
  $("entity-label").textContent = word[0].toUpperCase() + word.slice(1);
  document.title = `batchcast · ${words.join(" and ") || "store"} forecasts`;
}

function handle(error) {
  if (error.status === 401) return showLogin("That token was not accepted. Enter your access token.");
  const hints = {
    403: `Your token does not give access to this ${word}.`,
    404: `Nothing is known about this ${word} yet.`,
    503: "The service cannot check tokens right now; try again in a minute.",
  };
  $("result").hidden = true;
  say(hints[error.status] ? `${hints[error.status]} (${error.message})` : `Something went wrong: ${error.message}`);
}

// -- time -----------------------------------------------------------------------------------------

// Results carry local wall-clock periods without an offset ("2026-03-02T06:00:00") and instants with
// one ("2026-03-02T00:00:00+00:00"). Instants are shown on the store's clock; wall times as they are.
function hasOffset(text) {
  return /(Z|[+-]\d\d:\d\d)$/.test(text);
}

function wallTime(text, zone) {
  if (!text) return "–";
  if (!hasOffset(text)) return text.slice(0, 16).replace("T", " ");
  const parts = new Intl.DateTimeFormat("en-CA", {
    timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  }).formatToParts(new Date(text));
  const get = (type) => parts.find((p) => p.type === type).value;
  return `${get("year")}-${get("month")}-${get("day")} ${get("hour")}:${get("minute")}`;
}

function offsetName(text, zone) {
  const parts = new Intl.DateTimeFormat("en-US", { timeZone: zone, timeZoneName: "short" })
    .formatToParts(new Date(text));
  return parts.find((p) => p.type === "timeZoneName").value;
}

// A wall-clock period as a number for the chart's x axis (its own scale, never a real instant).
function wallMillis(text) {
  return Date.parse(text.slice(0, 19) + "Z");
}

// -- chart ----------------------------------------------------------------------------------------

function el(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// A round grid step (1, 2 or 5 times a power of ten) that cuts ``span`` into about ``count`` parts.
function niceStep(span, count) {
  const raw = span / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / magnitude;
  return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * magnitude;
}

// One chart: ``actuals`` ({period_start, actual}) as a line broken where a period was not reported,
// and ``rows`` ({period_start, period_end, p10, p50, p90}) as the P10–P90 band and P50 steps.
// ``marker`` labels a dashed line at the first row (the forecast's start); ``dots`` marks each actual.
function drawChart({ actuals, rows, label, marker, dots }) {
  const width = 900, height = 340, left = 64, right = 40, top = 16, bottom = 40;
  const reported = actuals.filter((h) => h.actual !== null);
  rows = rows.filter((r) => r.p10 !== null && r.p90 !== null);
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  const xs = [...actuals.map((h) => wallMillis(h.period_start)),
    ...rows.flatMap((r) => [wallMillis(r.period_start), wallMillis(r.period_end)])];
  const ys = [0, ...reported.map((h) => h.actual), ...rows.flatMap((r) => [r.p10, r.p90])];
  if (xs.length === 0) {
    svg.append(el("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "No data to draw yet"));
    return svg;
  }
  const [x0, x1] = [Math.min(...xs), Math.max(...xs) || 1];
  const step = niceStep(Math.max(...ys) - Math.min(...ys) || 1, 4);
  const y0 = Math.floor(Math.min(...ys) / step) * step;
  const y1 = Math.ceil((Math.max(...ys) * 1.04) / step) * step || step;
  const x = (t) => left + ((t - x0) / (x1 - x0 || 1)) * (width - left - right);
  const y = (v) => top + (1 - (v - y0) / (y1 - y0 || 1)) * (height - top - bottom);

  for (let value = y0; value <= y1 + step / 2; value += step) {  // horizontal grid at round values
    svg.append(el("line", { x1: left, x2: width - right, y1: y(value), y2: y(value), class: "grid",
      stroke: "#e3e8ee" }));
    svg.append(el("text", { x: left - 6, y: y(value) + 4, "text-anchor": "end", "font-size": 11,
      fill: "#5b6878" }, Number(value.toPrecision(12)).toLocaleString("en-US")));
  }
  const periods = [...new Set(xs)].sort((a, b) => a - b);  // ticks on period boundaries
  const every = Math.max(1, Math.ceil(periods.length / 7));
  const daily = periods.every((t) => t % 86400000 === 0);
  for (let i = 0; i < periods.length; i += every) {
    const text = new Date(periods[i]).toISOString().slice(5, 16).replace("T", " ");  // MM-DD hh:mm
    svg.append(el("text", { x: x(periods[i]), y: height - bottom + 18, "text-anchor": "middle",
      "font-size": 11, fill: "#5b6878" }, daily ? text.slice(0, 5) : text));
  }

  if (rows.length) {  // the P10–P90 band and the P50 steps, one step per forecast period
    const edges = (q) => rows.flatMap((r) => [[x(wallMillis(r.period_start)), y(r[q])], [x(wallMillis(r.period_end)), y(r[q])]]);
    svg.append(el("polygon", { points: [...edges("p90"), ...edges("p10").reverse()].map((p) => p.join(",")).join(" "),
      fill: "#9cc3e8", "fill-opacity": 0.75, class: "band" }));
    svg.append(el("polyline", { points: edges("p50").map((p) => p.join(",")).join(" "), fill: "none",
      stroke: "#1f5fa8", "stroke-width": 3, class: "median" }));
    if (marker) {
      const start = x(wallMillis(rows[0].period_start));
      svg.append(el("line", { x1: start, x2: start, y1: top, y2: height - bottom, stroke: "#8a96a3",
        "stroke-dasharray": "4 4" }));
      svg.append(el("text", { x: start - 4, y: top + 12, "text-anchor": "end", "font-size": 11,
        fill: "#5b6878" }, marker));
    }
  }

  // Actuals sit in the middle of their period when the rows say how long it is (the track record).
  const ends = Object.fromEntries(rows.map((r) => [r.period_start, r.period_end]));
  const at = (h) => (ends[h.period_start]
    ? (x(wallMillis(h.period_start)) + x(wallMillis(ends[h.period_start]))) / 2 : x(wallMillis(h.period_start)));
  let segment = [];  // actuals, broken where a period was not reported
  const flush = () => {
    if (segment.length) svg.append(el("polyline", { points: segment.join(" "), fill: "none",
      stroke: "#2b2b2b", "stroke-width": 1.6, class: "actual" }));
    segment = [];
  };
  for (const h of actuals) {
    if (h.actual === null) flush();
    else segment.push(`${at(h)},${y(h.actual)}`);
  }
  flush();
  if (dots) {
    for (const h of reported) svg.append(el("circle", { cx: at(h), cy: y(h.actual), r: 3, fill: "#2b2b2b",
      class: "actual-dot" }));
  }
  svg.append(el("line", { x1: left, x2: width - right, y1: height - bottom, y2: height - bottom, stroke: "#8a96a3" }));
  return svg;
}

// -- track record ---------------------------------------------------------------------------------

function number(value) {
  return value.toLocaleString("en-US", { maximumFractionDigits: 1 });
}

// The track record in words: MAE and band coverage over the periods whose actual arrived.
function trackSummary(result) {
  const { periods, mae, coverage } = result.accuracy;
  const first = result.track_record[0];
  const unit = wallMillis(first.period_end) - wallMillis(first.period_start) >= 86400000 ? "day" : "hour";
  if (!periods) return `No actuals have arrived yet for this ${word}'s past forecasts.`;
  const covered = Math.round(coverage * periods);
  return `Over the last ${periods} ${unit}${periods === 1 ? "" : "s"} with actuals, this ${word}'s forecasts ` +
    `were off by ${number(mae)} on average (MAE), and the actual fell inside the P10–P90 band ` +
    `${covered} of ${periods} times (${Math.round(coverage * 100)}% coverage).`;
}

// -- rendering ------------------------------------------------------------------------------------

function render(result) {
  const zone = result.timezone;
  const banner = $("stale-banner");
  banner.className = "banner";
  if (result.stale === true) {
    banner.replaceChildren();
    const strong = document.createElement("strong");
    strong.textContent = "This forecast is stale:";
    banner.append(strong, ` ${result.stale_reason || "it was not refreshed on schedule"}.` +
      ` Stale since ${wallTime(result.stale_since, zone)} (${zone}).`);
    banner.hidden = false;
  } else if (result.stale === null) {
    banner.className = "banner unknown";
    banner.textContent = `Freshness has not been checked yet for this ${word}.`;
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
  const name = result.city ? `${result.entity_id} · ${result.city}` : result.entity_id;
  $("title").textContent = `${name} (${result.dataset})`;
  $("as-of").textContent = result.as_of
    ? `As of ${wallTime(result.as_of, zone)} ${offsetName(result.as_of, zone)} (${zone} local time)` +
      (result.model_version ? ` · model ${result.model_version}` : "")
    : "No forecast has been produced yet.";
  const open = result.forecasts.flatMap((entry) => entry.forecast);
  $("chart").replaceChildren(drawChart({ actuals: result.history, rows: open, marker: "forecast →",
    label: `History and forecast of ${result.entity_id}` }));
  $("forecasts").replaceChildren(...result.forecasts.map((entry) => forecastTable(entry, zone)));
  $("track-chart").replaceChildren(drawChart({ actuals: result.track_record, rows: result.track_record, dots: true,
    label: `Past forecasts of ${result.entity_id} against their actuals` }));
  $("track-summary").textContent = trackSummary(result);
  $("result").hidden = false;
  say("");
}

// One open target period: its period and as-of as a heading, its rows as a table.
function forecastTable(entry, zone) {
  const section = document.createElement("section");
  section.className = "target";
  const [from, to] = [wallTime(entry.target.start, zone), wallTime(entry.target.end, zone)];
  const heading = document.createElement("h3");
  const whole = from.endsWith("00:00") && to.endsWith("00:00");
  heading.textContent = `Forecast for ${whole ? from.slice(0, 10) : `${from} – ${to.slice(11)}`}`;
  const meta = document.createElement("p");
  meta.className = "meta as-of";
  meta.textContent = `as of ${wallTime(entry.as_of, zone)} ${offsetName(entry.as_of, zone)} · model ${entry.model_version}`;
  const table = document.createElement("table");
  table.innerHTML = "<thead><tr><th>period (local time)</th><th>P10</th><th>P50</th><th>P90</th></tr></thead>";
  const body = document.createElement("tbody");
  body.append(...entry.forecast.map((row) => {
    const tr = document.createElement("tr");
    const [start, end] = [wallTime(row.period_start, zone), wallTime(row.period_end, zone)];
    const cells = [`${start} – ${end.slice(0, 10) === start.slice(0, 10) ? end.slice(11) : end}`,
      row.p10, row.p50, row.p90];
    for (const value of cells) {
      const td = document.createElement("td");
      td.textContent = typeof value === "number" ? number(value) : value ?? "–";
      tr.append(td);
    }
    return tr;
  }));
  table.append(body);
  section.append(heading, meta, table);
  return section;
}

async function show(dataset, entity) {
  const query = new URLSearchParams({ dataset, entity });
  history.replaceState(null, "", `${location.pathname}?${query}`);
  say("Loading…");
  try {
    render(await api(`/results/${encodeURIComponent(dataset)}/${encodeURIComponent(entity)}`));
  } catch (error) {
    handle(error);
  }
}

async function start() {
  takeTokenFromFragment();
  if (!token()) return showLogin("");
  $("login").hidden = true;
  let stores;
  try {
    stores = (await api("/stores")).stores;
  } catch (error) {
    return handle(error);
  }
  useWords(stores);
  const select = $("store-select");
  select.replaceChildren(...stores.map((s) => {
    const option = document.createElement("option");
    option.value = `${s.dataset}/${s.entity_id}`;
    option.textContent = `${s.entity_id}${s.city ? " · " + s.city : ""} (${s.dataset})${s.stale ? " — stale" : ""}`;
    return option;
  }));
  $("picker").hidden = false;
  const params = new URLSearchParams(location.search);
  const [dataset, entity] = [params.get("dataset"), params.get("entity")];
  if (dataset && entity) {
    select.value = `${dataset}/${entity}`;
    return show(dataset, entity);
  }
  if (stores.length === 0) return say(`Your token does not give access to any ${word} yet.`);
  show(stores[0].dataset, stores[0].entity_id);
}

$("store-select").addEventListener("change", (event) => {
  const [dataset, ...rest] = event.target.value.split("/");
  show(dataset, rest.join("/"));
});
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
  $("token-input").value = "";
  start();
});
$("sign-out").addEventListener("click", () => showLogin("Signed out."));
start();
