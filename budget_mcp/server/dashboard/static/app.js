// budget-mcp's dashboard: the budget tree with a bar per limit, the selected budget's report and ledger, kept
// current from GET /api/v1/events (or by re-fetching every second without it), and allocate/release from the page.
// Everything goes through /api/v1 with the person's bearer token, which is asked for once and kept for the tab.
"use strict";

(() => {
  const TOKEN_KEY = "budget-mcp-token";
  const POLL_MS = 1000;
  const RECONNECT_MS = 3000;
  const SVG = "http://www.w3.org/2000/svg";
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const tokenRequired = meta("budget-mcp-token") === "required";
  const eventsPath = meta("budget-mcp-events");
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(TOKEN_KEY);
  let tokenAsked = null;
  let selected = null;
  let shown = "";
  let streaming = false;
  let lastEventId = null;

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  // ---- talking to /api/v1 ----

  function askToken(note) {
    if (tokenAsked) return tokenAsked;
    tokenAsked = new Promise((resolve) => {
      const dialog = $("token-dialog");
      if (note) $("token-note").textContent = note;
      $("token-input").value = "";
      $("token-form").onsubmit = () => {
        token = $("token-input").value.trim();
        sessionStorage.setItem(TOKEN_KEY, token);
        tokenAsked = null;
        resolve();
      };
      dialog.showModal();
    });
    return tokenAsked;
  }

  function headers(extra) {
    const all = { Accept: "application/json", ...extra };
    if (token) all.Authorization = `Bearer ${token}`;
    return all;
  }

  function forgetToken() {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    return askToken("That token was not accepted. Enter another; it is kept in this tab only.");
  }

  async function problemDetail(response) {
    try {
      const body = await response.json();
      return body.detail || body.title || `the server answered ${response.status}`;
    } catch {
      return `the server answered ${response.status} ${response.statusText}`;
    }
  }

  async function api(path, body) {
    for (;;) {
      if (tokenRequired && !token) await askToken();
      const init = { headers: headers(), cache: "no-store" };
      if (body !== undefined) {
        init.method = "POST";
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      let response;
      try {
        response = await fetch(`/api/v1/${path}`, init);
      } catch {
        throw new ApiError(0, "the server cannot be reached; trying again");
      }
      if (response.status === 401) {
        await forgetToken();
        continue;
      }
      if (!response.ok) throw new ApiError(response.status, await problemDetail(response));
      return response.json();
    }
  }

  // ---- formatting ----

  const usd = (amount) => {
    if (amount === null || amount === undefined) return "no limit";
    return amount.startsWith("-") ? `-$${amount.slice(1)}` : `$${amount}`;
  };
  const when = (iso) => (iso ? `${new Date(iso).toISOString().slice(0, 16).replace("T", " ")} UTC` : "never");
  const calls = (n) => `${n} call${n === 1 ? "" : "s"}`;
  const number = (text) => Number(text || 0); // for drawing only: every figure shown is the API's own text

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  function svg(tag, attributes = {}, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    node.append(...children);
    return node;
  }

  function flatten(nodes, out = []) {
    for (const node of nodes) {
      out.push(node);
      flatten(node.children || [], out);
    }
    return out;
  }

  // ---- the tree, a bar per limit ----

  function bar(limit) {
    const spent = number(limit.spent_usd);
    const held = number(limit.held_usd);
    const allocated = number(limit.allocated_usd);
    const cap = limit.limit_usd === null ? 0 : number(limit.limit_usd);
    const scale = Math.max(cap, spent + held + allocated) || 1;
    const over = cap > 0 && spent > cap;
    const parts = [];
    let x = 0;
    for (const [name, value] of [["spent", spent], ["held", held], ["allocated", allocated]]) {
      const width = (value / scale) * 100;
      if (width > 0) parts.push(svg("rect", { class: `seg ${name}${over && name === "spent" ? " over" : ""}`, x, y: 0, width, height: 10 }));
      x += width;
    }
    const label = limit.limit_usd === null
      ? `${limit.period}: spent ${usd(limit.spent_usd)}, no USD limit`
      : `${limit.period}: spent ${usd(limit.spent_usd)}, held ${usd(limit.held_usd)}, allocated ${usd(limit.allocated_usd)}, available ${usd(limit.available_usd)} of ${usd(limit.limit_usd)}`;
    return svg("svg", { class: "bar", viewBox: "0 0 100 10", preserveAspectRatio: "none", role: "img", "aria-label": label },
      svg("rect", { class: "track", x: 0, y: 0, width: 100, height: 10 }), ...parts);
  }

  function figure(name, label, text) {
    return el("div", { class: `fig ${name}` }, el("dt", {}, label), el("dd", { "data-field": name }, text));
  }

  function limitView(limit) {
    const figures = el("dl", { class: "figures" },
      figure("limit_usd", "limit", usd(limit.limit_usd)),
      figure("spent_usd", "spent", usd(limit.spent_usd)),
      figure("held_usd", "held", usd(limit.held_usd)),
      figure("allocated_usd", "allocated", usd(limit.allocated_usd)),
      figure("available_usd", "available", usd(limit.available_usd)),
      figure("resets_at", "resets at", when(limit.resets_at)));
    if (limit.limit_tokens !== null) figures.append(figure("tokens", "tokens", `${limit.spent_tokens} of ${limit.limit_tokens}`));
    if (limit.limit_calls !== null && limit.limit_calls !== undefined) figures.append(figure("calls", "calls", `${limit.calls} of ${limit.limit_calls}`));
    return el("div", { class: "limit", "data-period": limit.period },
      el("div", { class: "period" }, limit.period), bar(limit), figures);
  }

  function budgetView(node) {
    const id = node.budget_id;
    const actions = node.closed ? el("span", { class: "badge" }, "closed") : el("span", { class: "row-actions" },
      el("button", { type: "button", onclick: () => openBudgetDialog(node) }, "Resize"),
      el("button", { type: "button", onclick: () => openCloseDialog(node) }, "Close"));
    const limits = node.limits.length ? node.limits.map(limitView) : [limitView(node)];
    const row = el("div", { class: `budget${id === selected ? " selected" : ""}${node.closed ? " closed" : ""}`, role: "group", "aria-label": id, "data-budget": id },
      el("div", { class: "budget-head" },
        el("button", { type: "button", class: "select", "aria-pressed": String(id === selected), onclick: () => select(id) }, id),
        actions),
      node.description ? el("p", { class: "muted description" }, node.description) : null,
      ...limits);
    const children = (node.children || []).length ? el("ul", {}, ...node.children.map(budgetView)) : null;
    return el("li", {}, row, children);
  }

  // ---- the selected budget: spend over the window, by model, alerts, ledger ----

  function columns(points) {
    if (!points.length) return el("p", { class: "muted" }, "No spend in this window yet.");
    const max = Math.max(...points.map((p) => number(p.cost_usd))) || 1;
    const width = 100 / points.length;
    const chart = svg("svg", { class: "columns", viewBox: "0 0 100 40", preserveAspectRatio: "none", role: "img",
      "aria-label": `spend in ${points.length} intervals, at most $${points.reduce((a, p) => (number(p.cost_usd) > number(a) ? p.cost_usd : a), "0")} in one` });
    points.forEach((p, i) => {
      const height = (number(p.cost_usd) / max) * 38;
      chart.append(svg("rect", { class: "column", x: i * width + width * 0.1, y: 40 - height, width: width * 0.8, height },
        svg("title", {}, `${p.label}: ${usd(p.cost_usd)}, ${calls(p.calls)}`)));
    });
    return el("div", {}, chart, el("div", { class: "axis" }, el("span", {}, points[0].label), el("span", {}, points[points.length - 1].label)));
  }

  // Every hour (or day) of the window so far, the quiet ones as empty columns; a long window shows its spend only.
  function windowSteps(report, stepMs, most, key) {
    const start = Date.parse(report.window_start);
    const end = Math.min(Date.now(), report.resets_at ? Date.parse(report.resets_at) - 1 : Date.now());
    const keys = new Set();
    if (end >= start && (end - start) / stepMs <= most) for (let t = start; t <= end; t += stepMs / 2) keys.add(key(t));
    return keys;
  }

  function overTime(report) {
    const empty = { cost_usd: "0", calls: 0 };
    if ((report.by_hour || []).length) {
      const spent = new Map(report.by_hour.map((h) => [Date.parse(h.hour), h]));
      const hours = windowSteps(report, 3_600_000, 48, (t) => Math.floor(t / 3_600_000) * 3_600_000);
      const keys = [...new Set([...hours, ...spent.keys()])].sort((a, b) => a - b);
      return columns(keys.map((k) => ({ ...empty, ...spent.get(k), label: when(new Date(k).toISOString()) })));
    }
    const spent = new Map((report.by_day || []).map((d) => [d.day, d]));
    const day = new Intl.DateTimeFormat("en-CA", { timeZone: report.timezone, year: "numeric", month: "2-digit", day: "2-digit" });
    const days = windowSteps(report, 86_400_000, 62, (t) => day.format(new Date(t)));
    const keys = [...new Set([...days, ...spent.keys()])].sort();
    return columns(keys.map((k) => ({ ...empty, ...spent.get(k), label: k })));
  }

  function byModel(report) {
    const rows = report.by_model || [];
    if (!rows.length) return el("p", { class: "muted" }, "No charges in this window yet.");
    const max = Math.max(...rows.map((r) => number(r.cost_usd))) || 1;
    return el("ul", { class: "models" }, ...rows.map((r) => {
      const name = r.adjustments ? "adjustments" : r.model || "(no model)";
      return el("li", { "data-model": name },
        el("span", { class: "model" }, name),
        svg("svg", { class: "hbar", viewBox: "0 0 100 6", preserveAspectRatio: "none", "aria-hidden": "true" },
          svg("rect", { class: "seg spent", x: 0, y: 0, width: (number(r.cost_usd) / max) * 100, height: 6 })),
        el("span", { class: "amount" }, `${usd(r.cost_usd)} · ${calls(r.calls)}`));
    }));
  }

  function alertsView(report) {
    const alerts = (report.alerts || []).slice(-10).reverse();
    if (!alerts.length) return [el("li", { class: "muted" }, "No alerts in this window.")];
    return alerts.map((a) => el("li", {},
      `${when(a.at)}: ${a.budget_id} (${[a.period, ...(a.models || []), ...(a.providers || [])].join(", ")}) crossed ${Math.round(number(a.threshold) * 100)}%: spent ${usd(a.spent_usd)} of ${usd(a.limit_usd)}`));
  }

  function ledgerRows(listing) {
    if (!listing.entries.length) return [el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No entries yet."))];
    return listing.entries.map((e) => el("tr", { "data-entry": e.entry_id },
      el("td", {}, when(e.at)), el("td", {}, e.kind), el("td", {}, e.budget_id), el("td", {}, usd(e.cost_usd)),
      el("td", {}, e.model || ""), el("td", {}, String(e.input_tokens + e.output_tokens + e.cache_read_tokens + e.cache_write_tokens + e.reasoning_tokens))));
  }

  // ---- loading and drawing ----

  function render(tree, report, listing) {
    const drawn = JSON.stringify([tree, report, listing, selected]);
    if (drawn === shown) return;
    shown = drawn;
    const focused = document.activeElement && document.activeElement.closest("#tree [data-budget]") ? document.activeElement : null;
    $("tree").replaceChildren(...tree.map(budgetView));
    if (focused) refocus(focused.closest("[data-budget]").dataset.budget, focused.textContent);
    $("empty").hidden = tree.length > 0;
    $("detail").hidden = !report;
    if (!report) return;
    $("detail-heading").textContent = report.budget_id;
    $("detail-window").textContent = `${report.period} window from ${when(report.window_start)}, resets at ${when(report.resets_at)}; `
      + `spent ${usd(report.totals.spent_usd)} in ${calls(report.totals.calls)}, burn rate $${report.burn_rate_usd_per_hour} an hour`;
    $("over-time").replaceChildren(overTime(report));
    $("by-model").replaceChildren(byModel(report));
    $("alerts").replaceChildren(...alertsView(report));
    $("ledger").tBodies[0].replaceChildren(...ledgerRows(listing));
  }

  // Redrawing the tree keeps the keyboard where it was: on the same control of the same budget.
  function refocus(budgetId, label) {
    const row = [...$("tree").querySelectorAll("[data-budget]")].find((r) => r.dataset.budget === budgetId);
    const control = row && [...row.querySelectorAll("button")].find((b) => b.textContent === label);
    if (control) control.focus();
  }

  function showError(text) {
    $("error").textContent = text;
    $("error").hidden = !text;
  }

  async function load() {
    const tree = await api("budgets");
    const all = flatten(tree);
    if (!all.some((b) => b.budget_id === selected)) selected = (all.find((b) => !b.closed) || all[0] || {}).budget_id || null;
    let report = null;
    let listing = null;
    if (selected) [report, listing] = await Promise.all([api(`reports/${selected}`), api(`ledger/${selected}?limit=15`)]);
    render(tree, report, listing);
  }

  let loading = null;
  let again = false;

  function refresh() {
    if (loading) {
      again = true;
      return loading;
    }
    loading = load()
      .then(() => showError(""))
      .catch((error) => showError(error.message))
      .finally(() => {
        loading = null;
        if (again) {
          again = false;
          refresh();
        }
      });
    return loading;
  }

  function select(id) {
    selected = id;
    refresh();
  }

  // ---- live: the events stream, or re-fetching every second ----

  function setLive(text) {
    $("live").textContent = text;
  }

  async function readStream(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = {};
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (event.data !== undefined) refresh();
          event = {};
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") event.data = event.data === undefined ? text : `${event.data}\n${text}`;
          else if (field === "event") event.event = text;
          else if (field === "id") lastEventId = text;
        }
      }
    }
  }

  async function follow() {
    if (!eventsPath) {
      setLive("updating every second");
      return;
    }
    for (;;) {
      if (tokenRequired && !token) await askToken();
      const extra = { Accept: "text/event-stream" };
      if (lastEventId) extra["Last-Event-ID"] = lastEventId;
      try {
        const response = await fetch(eventsPath, { headers: headers(extra), cache: "no-store" });
        if (response.status === 401) {
          await forgetToken();
          continue;
        }
        if (response.status === 404) {
          setLive("updating every second");
          return;
        }
        if (response.ok && response.body) {
          streaming = true;
          setLive("live");
          refresh(); // what happened while connecting
          await readStream(response);
        }
      } catch {
        // dropped: re-fetch every second until the stream is back
      }
      streaming = false;
      setLive("updating every second (reconnecting to the event stream)");
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  }

  // ---- creating, resizing and closing budgets ----

  function dialogError(dialog, text) {
    const box = dialog.querySelector(".error");
    box.textContent = text;
    box.hidden = !text;
  }

  let editing = null;

  function openBudgetDialog(node) {
    editing = node;
    const dialog = $("budget-dialog");
    const form = $("budget-form");
    form.reset();
    dialogError(dialog, "");
    $("budget-title").textContent = node ? `Resize ${node.budget_id}` : "New budget";
    $("budget-submit").textContent = node ? "Resize" : "Create";
    for (const field of form.querySelectorAll("[data-for=new]")) field.hidden = Boolean(node);
    $("budget-id").required = !node;
    if (node) $("budget-limit").value = node.limit_usd || "";
    else if (selected) $("budget-id").value = `${selected}/`;
    dialog.showModal();
  }

  function openCloseDialog(node) {
    editing = node;
    const dialog = $("close-dialog");
    dialogError(dialog, "");
    $("close-title").textContent = `Close ${node.budget_id}`;
    $("close-note").textContent = node.parent_id
      ? `Closing ${node.budget_id} returns its unspent allocation to ${node.parent_id}. Its ledger stays.`
      : `Closing ${node.budget_id} stops it taking new spend. Its ledger stays.`;
    dialog.showModal();
  }

  async function submit(dialog, button, call) {
    button.disabled = true;
    try {
      const result = await call();
      dialog.close();
      await refresh();
      return result;
    } catch (error) {
      dialogError(dialog, error.message);
      return null;
    } finally {
      button.disabled = false;
    }
  }

  $("budget-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const values = Object.fromEntries(new FormData(form));
    const args = { budget_id: editing ? editing.budget_id : values.budget_id.trim() };
    if (values.limit_usd.trim()) args.limit_usd = values.limit_usd.trim();
    if (!editing && values.period) args.period = values.period;
    if (!editing && values.description.trim()) args.description = values.description.trim();
    const creating = !editing;
    submit($("budget-dialog"), $("budget-submit"), async () => {
      const status = await api("allocate", args);
      if (creating) selected = status.budget_id;
      return status;
    });
  });

  $("close-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const button = event.currentTarget.querySelector("[type=submit]");
    submit($("close-dialog"), button, () => api("release", { budget_id: editing.budget_id }));
  });

  for (const dialog of document.querySelectorAll("dialog")) {
    const cancel = dialog.querySelector(".cancel");
    if (cancel) cancel.addEventListener("click", () => dialog.close());
  }
  $("token-dialog").addEventListener("cancel", (event) => event.preventDefault()); // nothing works without it
  $("new-budget").addEventListener("click", () => openBudgetDialog(null));

  // ---- start ----

  setInterval(() => {
    if (!streaming) refresh();
  }, POLL_MS);
  refresh();
  follow();
})();
