// The operators' console: runs, uploads, dead letters, models, freshness and the audit trail.
// Plain browser JavaScript, no build step. Every request carries the operator's token in the
// Authorization header; actions are POSTs that the page sends only after an explicit confirmation.
//
// Links: /console?view=runs&days=14, ?view=run&run=<id>, ?view=uploads&dataset=retail,
// ?view=report&day=...&upload=..., ?view=store&dataset=retail&entity=7. A token may come in the
// fragment (#token=...): it is moved to session storage and removed from the address bar.
"use strict";

const TOKEN_KEY = "batchcast.console.token";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let datasets = {};

function takeTokenFromFragment() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function request(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!response.ok) {
    const detail = await response.json().then((b) => b.detail, () => response.statusText);
    throw new ApiError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response;
}

const api = async (path) => (await request("GET", path)).json();
const post = async (path, body) => (await request("POST", path, body)).json();

function say(text) {
  $("message").textContent = text || "";
}

function showLogin(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  $("login").hidden = false;
  $("tabs").hidden = true;
  $("view").replaceChildren();
  say(reason);
}

function handle(error) {
  if (error.status === 401) return showLogin("That token was not accepted. Enter an operator token.");
  if (error.status === 403) {
    $("tabs").hidden = true;
    $("view").replaceChildren();
    return say(`Refused: this console is for operators only (${error.message}).`);
  }
  say(`Something went wrong (${error.status || "network"}): ${error.message}`);
}

// -- building blocks ------------------------------------------------------------------------------

function el(name, attributes = {}, ...children) {
  const node = document.createElement(name);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null) continue;
    if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function link(query, text) {
  return el("a", { href: `/console?${new URLSearchParams(query)}` }, text);
}

function table(headings, rows, attributes = {}) {
  return el(
    "table",
    { class: "dense", ...attributes },
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c)))))),
  );
}

const fmt = (value, digits = 3) => (value === null || value === undefined ? "–" : typeof value === "number" ? value.toFixed(digits) : value);
const when = (text) => (text ? text.slice(0, 19).replace("T", " ") : "–");

function show(...nodes) {
  $("view").replaceChildren(...nodes.filter((node) => node !== null && node !== undefined));
}

function datasetPicker(current, view) {
  const select = el("select", { id: "dataset-select" }, Object.keys(datasets).map((d) => el("option", { value: d }, d)));
  select.value = current;
  select.addEventListener("change", () => {
    location.search = new URLSearchParams({ view, dataset: select.value });
  });
  return el("div", { class: "filters" }, el("label", { for: "dataset-select" }, "Dataset"), select);
}

function confirmBox(text, action) {
  // An explicit second click: the POST is sent only from the "Confirm" button.
  const box = el("div", { class: "confirm", id: "confirm-box", role: "alertdialog" }, el("p", {}, text));
  box.append(
    el("button", { id: "confirm-action", type: "button", onclick: async () => {
      box.remove();
      try {
        await action();
      } catch (error) {
        handle(error);
      }
    } }, "Confirm"),
    el("button", { type: "button", class: "link", onclick: () => box.remove() }, "Cancel"),
  );
  $("confirm-box")?.remove();
  $("view").prepend(box);
}

// -- views ----------------------------------------------------------------------------------------

async function runsView() {
  const days = params.get("days") || "14";
  const end = params.get("end") || "";
  const grid = await api(`/api/ops/runs?days=${days}${end ? `&end=${end}` : ""}`);
  const columns = grid.columns.map((c) => `${c.dataset} ${c.function} · ${c.city}`);
  const rows = grid.days.map((day) => {
    const cells = grid.columns.map((c) => {
      const cell = grid.cells[`${day}|${c.key}`];
      if (!cell) return el("td", { class: "cell" }, "");
      const text = [`${cell.outcome}`, `${cell.runs}× ${fmt(cell.seconds, 1)} s`];
      return el(
        "td",
        { class: `cell ${cell.outcome}`, title: cell.error || "" },
        link({ view: "run", run: cell.run_id }, text.join(" ")),
        cell.error ? el("div", { class: "reason" }, cell.error) : null,
      );
    });
    return [day, ...cells];
  });
  show(
    el("h2", {}, `Runs, last ${grid.days.length} days`),
    el("p", { class: "hint" }, "Each cell: the day's worst outcome for that function and city, how many runs, their total duration. A cell links to its most telling run."),
    table(["day", ...columns], rows, { class: "dense grid", id: "run-grid" }),
  );
}

async function runView() {
  const run = await api(`/api/ops/runs/${params.get("run")}`);
  const facts = el("dl", { class: "facts" });
  for (const key of ["run_id", "function", "status", "dataset", "city", "started_at", "duration_seconds", "error_class"]) {
    facts.append(el("dt", {}, key), el("dd", {}, run[key] ?? "–"));
  }
  show(
    el("h2", {}, `Run ${run.run_id}`),
    el("p", {}, el("span", { class: `pill ${run.status}` }, run.status), " ", run.message_text || ""),
    facts,
    run.error ? el("div", { class: "confirm", id: "run-error" }, el("strong", {}, "Error: "), run.error) : null,
    el("h2", {}, "Outputs"),
    el("pre", { class: "log" }, JSON.stringify({ published: run.published, counts: run.counts, details: run.details, notes: run.notes }, null, 2)),
    el("h2", {}, "Message"),
    el("pre", { class: "log" }, JSON.stringify(run.message ?? {}, null, 2)),
    el("h2", {}, "Log"),
    run.log_url ? el("p", {}, el("a", { href: run.log_url }, "Open in Cloud Logging")) : null,
    el("pre", { class: "log", id: "run-log" }, (run.log || []).map((line) => (typeof line === "string" ? line : JSON.stringify(line))).join("\n") || "(no log lines kept)"),
  );
}

async function download(path, name) {
  const blob = await (await request("GET", path)).blob();
  const anchor = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(anchor);
  anchor.click();
  anchor.remove();
}

async function uploadsView() {
  const dataset = params.get("dataset") || Object.keys(datasets)[0];
  const data = await api(`/api/ops/uploads/${dataset}?days=${params.get("days") || "7"}`);
  const rows = data.uploads.map((u) => [
    when(u.started_at),
    link({ view: "run", run: u.run_id }, u.upload_id || u.run_id),
    el("span", { class: `pill ${u.status}` }, u.status),
    u.rows_accepted,
    u.rows_rejected,
    el("span", { class: "reason" }, u.error || ""),
    u.has_report ? link({ view: "report", day: u.day, upload: u.upload_id }, "error report") : "",
    u.rejected_ext
      ? el("button", { type: "button", class: "link", onclick: () => download(`/api/ops/uploads/${u.day}/${u.upload_id}/rejected?ext=${u.rejected_ext}`, `${u.upload_id}.rejected.${u.rejected_ext}`).catch(handle) }, "rejected rows")
      : "",
  ]);
  const missing = data.missing.map((m) => [link({ view: "store", dataset, entity: m.entity }, m.entity), m.city, when(m.last_data), when(m.needed_from)]);
  show(
    datasetPicker(dataset, "uploads"),
    el("h2", {}, `Latest uploads of ${dataset}`),
    table(["at", "upload", "status", "accepted rows", "rejected rows", "error", "report", "rejected"], rows, { id: "uploads" }),
    el("h2", {}, `Expected but not uploaded (${missing.length})`),
    table(["store", "city", "data until", "needed from"], missing, { id: "missing" }),
  );
}

async function reportView() {
  const report = await api(`/api/ops/uploads/${params.get("day")}/${params.get("upload")}/report`);
  show(el("h2", {}, `Error report of upload ${params.get("upload")}`), el("pre", { class: "log", id: "report" }, JSON.stringify(report, null, 2)));
}

async function storeView() {
  const dataset = params.get("dataset");
  const entity = params.get("entity");
  const data = await api(`/api/ops/uploads/${dataset}/stores/${entity}`);
  show(
    el("h2", {}, `Uploads of ${dataset} store ${entity} (${data.city})`),
    table(
      ["upload", "kind", "first period", "last period", "rows"],
      data.files.map((f) => [f.upload_id || "(compacted)", f.kind, when(f.first), when(f.last), f.rows]),
      { id: "store-uploads" },
    ),
  );
}

async function deadLettersView() {
  const data = await api("/api/ops/deadletters");
  // One letter: its topic and id; all: no topic and no ids (the server takes every one).
  const act = (what, letters, all) => {
    const body = all ? { topic: null, ids: null, confirm: true } : { topic: letters[0].topic, ids: [letters[0].id], confirm: true };
    confirmBox(`${what === "redrive" ? "Republish to the original topic" : "Discard for good"}: ${letters.length} dead letter(s)?`, async () => {
      const result = await post(`/api/ops/deadletters/${what}`, body);
      say(`${what}: ${result.done} message(s) done.`);
      await deadLettersView();
    });
  };
  const rows = data.letters.map((l) => [
    l.topic,
    l.attributes?.kind || "–",
    [l.dataset, l.city].filter(Boolean).join(" / ") || "–",
    el("span", { class: "reason" }, l.error || "–"),
    l.attempts ?? "–",
    `${Math.round((l.age_seconds || 0) / 60)} min`,
    el("code", {}, JSON.stringify(l.attributes || {})),
    el("span", {},
      el("button", { type: "button", class: "redrive", onclick: () => act("redrive", [l]) }, "Redrive"),
      el("button", { type: "button", class: "discard", onclick: () => act("discard", [l]) }, "Discard")),
  ]);
  const all = data.letters.length
    ? el("p", {},
      el("button", { type: "button", id: "redrive-all", onclick: () => act("redrive", data.letters, true) }, `Redrive all ${data.letters.length}`),
      " ",
      el("button", { type: "button", id: "discard-all", onclick: () => act("discard", data.letters, true) }, `Discard all ${data.letters.length}`))
    : el("p", { class: "hint" }, "No dead letters.");
  show(el("h2", {}, `Dead letters (${data.letters.length})`), all, table(["topic", "kind", "dataset / city", "error", "attempts", "age", "attributes", ""], rows, { id: "dead-letters" }));
}

async function modelsView() {
  const dataset = params.get("dataset") || Object.keys(datasets)[0];
  const data = await api(`/api/ops/models/${dataset}`);
  const sections = data.cities.map((city) => {
    // Live accuracy (the last scheduled notify's verdict) sits beside the LATEST backtest only.
    const live = city.live || {};
    const verdict = city.live
      ? el("span", { class: `pill live ${live.drifting ? "drifting" : live.note ? "unjudged" : "ok"}` },
        live.drifting ? "live accuracy drifting" : live.note ? `not judged: ${live.note}` : "live accuracy ok")
      : el("span", { class: "hint" }, "no live accuracy checked yet");
    return [
      el("h2", {}, `${city.city}: LATEST ${city.latest || "none"} `, verdict),
      table(
        ["version", "trained for", "training window", "rows", "stores", "train s", "MASE", "coverage raw", "coverage calibrated", "live MASE", "live coverage", "live points"],
        city.versions.map((v) => [
          el("span", { class: v.latest ? "pill succeeded" : "" }, v.version + (v.latest ? " (LATEST)" : "")),
          when(v.trained_for),
          v.training_window ? `${v.training_window.start.slice(0, 10)} – ${v.training_window.end.slice(0, 10)}` : "–",
          v.rows, v.entities, fmt(v.train_seconds, 1), fmt(v.mase), fmt(v.coverage_raw), fmt(v.coverage_calibrated),
          ...(v.latest ? [fmt(live.live_mase), fmt(live.live_coverage), live.points ?? "–"] : ["", "", ""]),
        ]),
        { class: "dense models" },
      ),
    ];
  });
  show(datasetPicker(dataset, "models"), ...sections.flat());
}

async function freshnessView() {
  const dataset = params.get("dataset") || Object.keys(datasets)[0];
  const data = await api(`/api/ops/freshness/${dataset}`);
  const summary = data.cities.map((c) => [c.city, when(c.expected), c.entities, c.stale.length]);
  const stale = data.cities.flatMap((c) => c.stale.map((s) => [
    link({ view: "store", dataset, entity: s.entity }, s.entity), c.city, when(s.as_of), when(s.forecast_for), when(s.since),
    el("span", { class: "reason" }, s.reason), el("span", { class: `pill alert-${s.alert.state.replace(" ", "-")}` }, s.alert.state),
    s.alert.last_error || (s.alert.sent_at ? `sent ${when(s.alert.sent_at)}` : ""),
  ]));
  show(
    datasetPicker(dataset, "freshness"),
    el("p", { class: "hint" }, `Period ${data.period}; checked ${when(data.checked_at)}.`),
    table(["city", "expected period", "stores", "stale"], summary, { id: "freshness-cities" }),
    el("h2", {}, `Stale stores (${stale.length})`),
    table(["store", "city", "as of", "forecast for", "stale since", "why", "alert", ""], stale, { id: "stale-stores" }),
  );
}

async function auditView() {
  const data = await api(`/api/ops/audit${params.get("day") ? `?day=${params.get("day")}` : ""}`);
  show(
    el("h2", {}, `Operator actions on ${data.day}`),
    table(["at", "who", "action", "target", "outcome", "detail"], data.actions.map((a) => [when(a.at), a.who, a.action, JSON.stringify(a.target), a.outcome, a.detail]), { id: "audit" }),
  );
}

async function rerunView() {
  // A rerun or backfill: list the ticks first (a dry run), then republish them after a confirmation.
  const dataset = params.get("dataset") || Object.keys(datasets)[0];
  const cities = datasets[dataset].map((c) => el("label", { class: "city" },
    el("input", { type: "checkbox", name: "city", value: c }), ` ${c}`));
  const form = el("form", { id: "rerun-form", class: "filters" },
    el("label", { for: "rerun-first" }, "From"), el("input", { id: "rerun-first", type: "date", required: "" }),
    el("label", { for: "rerun-last" }, "To"), el("input", { id: "rerun-last", type: "date" }),
    el("span", {}, "Cities (none: all):", ...cities),
    el("button", { type: "submit" }, "List what would run"));
  const planned = el("section", { id: "rerun-plan" });
  const body = () => ({
    dataset,
    first: $("rerun-first").value,
    last: $("rerun-last").value || null,
    cities: [...form.querySelectorAll("input[name=city]:checked")].map((box) => box.value),
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const dry = await post("/api/ops/rerun", { ...body(), dry_run: true });
      const ticks = dry.result.ticks;
      planned.replaceChildren(
        el("h2", {}, `${ticks.length} schedule tick(s) would be republished`),
        el("ul", { id: "rerun-ticks" }, ...ticks.map((t) => el("li", {}, el("code", {}, t)))),
        el("p", { class: "hint" }, "Outputs are named by the data they read: a day whose inputs did not change gets no second version."),
        el("button", { type: "button", id: "rerun-run", onclick: () => confirmBox(`Republish ${ticks.length} tick(s) of ${dataset}?`, async () => {
          const done = await post("/api/ops/rerun", { ...body(), confirm: true });
          say(`rerun ${done.result.rerun_id}: ${done.result.published} tick(s) republished; see Runs.`);
        }) }, `Rerun ${ticks.length} tick(s)`));
    } catch (error) {
      handle(error);
    }
  });
  show(datasetPicker(dataset, "rerun"), el("h2", {}, "Rerun or backfill days"), form, planned);
}

const VIEWS = {
  runs: runsView, run: runView, uploads: uploadsView, report: reportView, store: storeView,
  deadletters: deadLettersView, models: modelsView, freshness: freshnessView, audit: auditView,
  rerun: rerunView,
};

async function start() {
  takeTokenFromFragment();
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    location.reload();
  });
  if (!sessionStorage.getItem(TOKEN_KEY)) return showLogin("Enter an operator token to open the console.");
  const view = VIEWS[params.get("view")] ? params.get("view") : "runs";
  try {
    const me = await api("/api/ops/whoami");
    datasets = me.datasets;
    $("who").textContent = `${me.name} (${me.role})`;
    $("tabs").hidden = false;
    const tab = { run: "runs", report: "uploads", store: "uploads" }[view] || view;
    document.querySelector(`#tabs a[data-view=${tab}]`).classList.add("current");
    await VIEWS[view]();
    document.body.dataset.ready = view;
  } catch (error) {
    handle(error);
    document.body.dataset.ready = "error";
  }
}

start();
