// The edgeloop dashboard: the World, the loop and the audit log over /ws (JSON frames,
// docs/protocol.md), trends over /api/. No build step, nothing from the internet.
"use strict";
(() => {
  // name -> schema hash (hex), as `edgeloop protocol-types` lists them; a unit test
  // checks this table against the registry.
  const TYPES = {
    "edgeloop.Hello": "8da04678790f4563",
    "edgeloop.Subscribe": "b24f47465472e323",
    "safety.Stop": "5fd9d59de3c96492",
    "safety.Reset": "d5b61ef3018395ce",
    "alarm.Acknowledge": "5c354ad07d1c8222",
    "wiring.Request": "2017036a2aca71ee",
    "robot.Command": "8cbbd32865bca467",
  };
  const COOKIE = "edgeloop_token";
  const PROTOCOL_VERSION = 1;
  const UPDATE_HZ = 30;
  // Tables redrawn at most 4 times a second, whatever comes in: each redraw is a layout
  // and paint of the page, the dearest thing it does (bench/dashboard.py).
  const RENDER_MS = 250;
  const OFFLINE_MS = 1000; // how often "disconnected for N s" counts on
  const MAX_ROBOT_ROWS = 100; // of a fleet of 1 000: the DOM stays small
  const MAX_VALUE_ROWS = 400;
  const MAX_TREND_FIELDS = 10;
  const MAX_TREND_POINTS = 2000;
  const RECONNECT_MS = [250, 500, 1000, 2000, 5000];
  // Components shown in their own panels, not as values.
  const PANELS = new Set(["Name", "DeviceHealth", "ListenerHealth", "SafeStateStatus", "AlarmList", "Robot"]);
  const QUALITY = ["good", "stale", "bad"];
  const ALARM_BADGE = {
    active_unacked: ["ACTIVE, unacknowledged", "bad"],
    active_acked: ["active, acknowledged", "warn"],
    cleared_unacked: ["cleared, unacknowledged", "warn"],
    normal: ["normal", "good"],
  };

  const $ = (id) => document.getElementById(id);
  const world = new Map(); // "entity:Component" -> values
  const names = new Map(); // entity -> name
  const units = new Map(); // "entity.Component.field" -> unit (from the wiring)
  const wired = new Set(); // the fields the config moves in or out: shown unless "all"
  let role = "";
  let token = "";
  let ws = null;
  let connected = false;
  let fresh = false; // the next WorldUpdate is a subscription's first: everything
  let offlineSince = null;
  let attempt = 0;
  let commandId = 1;
  let dirty = false;
  let lastRender = 0;
  let wiringRows = [];

  // -- token -----------------------------------------------------------------------------

  function readCookie() {
    for (const part of document.cookie.split(";")) {
      const [key, ...rest] = part.trim().split("=");
      if (key === COOKIE) return decodeURIComponent(rest.join("="));
    }
    return "";
  }

  function keepToken(value) {
    const secure = location.protocol === "https:" ? "; Secure" : "";
    document.cookie = `${COOKIE}=${encodeURIComponent(value)}; Path=/; SameSite=Strict${secure}`;
  }

  function forgetToken() {
    document.cookie = `${COOKIE}=; Path=/; Max-Age=0; SameSite=Strict`;
  }

  function takeTokenFromUrl() {
    const url = new URL(location.href);
    const given = url.searchParams.get("token");
    if (given === null) return;
    keepToken(given);
    url.searchParams.delete("token"); // out of the address bar and the history
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }

  function showLogin(why) {
    $("main").hidden = true;
    $("login").hidden = false;
    $("logout").hidden = true;
    $("login-error").textContent = why || "";
  }

  // -- the connection --------------------------------------------------------------------

  async function session() {
    const answer = await fetch("/api/session", { cache: "no-store" });
    if (answer.status === 401 || answer.status === 403) return null; // none, or not ours
    if (!answer.ok) throw new Error(`session: HTTP ${answer.status}`);
    return (await answer.json()).role;
  }

  async function open() {
    token = readCookie();
    if (!token) return showLogin("");
    let granted;
    try {
      granted = await session();
    } catch (error) {
      return retry(); // the appliance is not answering: restarting, or the network
    }
    if (granted === null) {
      forgetToken();
      return showLogin("Not a token of this appliance.");
    }
    role = granted;
    showRole();
    connect();
  }

  function showRole() {
    $("login").hidden = true;
    $("main").hidden = false;
    $("logout").hidden = false;
    $("role").textContent = role;
    const commands = role === "operator" || role === "admin";
    for (const element of document.querySelectorAll(".operator-only")) element.hidden = !commands;
    document.body.classList.toggle("may-command", commands);
  }

  function mayCommand() {
    return role === "operator" || role === "admin";
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${scheme}//${location.host}/ws`);
    ws.onopen = () => {
      const id = `dashboard-${Math.random().toString(36).slice(2, 10)}`;
      send("edgeloop.Hello", { client_id: id, token, role, protocol_version: PROTOCOL_VERSION });
    };
    ws.onmessage = (event) => receive(JSON.parse(event.data));
    ws.onclose = () => {
      ws = null;
      setConnected(false);
      retry();
    };
  }

  function retry() {
    const delay = RECONNECT_MS[Math.min(attempt, RECONNECT_MS.length - 1)];
    attempt += 1;
    setTimeout(open, delay);
  }

  function send(name, payload) {
    if (ws === null || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify([name, TYPES[name], payload]));
    return true;
  }

  function setConnected(up) {
    connected = up;
    if (!up && offlineSince === null) offlineSince = new Date();
    if (up) offlineSince = null;
    document.body.classList.toggle("offline", !up);
    const link = $("link");
    link.textContent = up ? "live" : "disconnected";
    link.className = `badge ${up ? "good" : "bad"}`;
    link.dataset.state = up ? "live" : "disconnected";
    $("disconnected").hidden = up;
    showOffline();
  }

  function showOffline() {
    if (offlineSince === null) return;
    $("disconnected-for").textContent = `${Math.round((Date.now() - offlineSince) / 1000)} s`;
    $("disconnected-at").textContent = offlineSince.toLocaleTimeString();
  }

  function receive([name, , payload]) {
    switch (name) {
      case "edgeloop.Welcome":
        attempt = 0;
        fresh = true;
        $("server").textContent = payload.server;
        send("edgeloop.Subscribe", { topic: "world", max_hz: UPDATE_HZ, components: [] });
        send("edgeloop.Subscribe", { topic: "loop", max_hz: 1, components: [] });
        send("edgeloop.Subscribe", { topic: "audit", max_hz: 1, components: [] });
        wiringRows = [];
        send("wiring.Request", { offset: 0 });
        setConnected(true);
        loadFields();
        break;
      case "edgeloop.WorldUpdate":
        apply(payload);
        break;
      case "edgeloop.LoopStatus":
        showLoop(payload);
        break;
      case "edgeloop.AuditTail":
        showAudit(payload.entries);
        break;
      case "wiring.Page":
        takeWiring(payload);
        break;
      case "safety.Result":
        result(payload.action, payload.accepted, payload.reason);
        break;
      case "alarm.AckResult":
        result(`acknowledge ${payload.source}`, payload.accepted, payload.reason);
        break;
      case "robot.CommandResult":
        result(`${payload.robot_id} (${payload.origin})`, payload.accepted, payload.reason);
        break;
      case "edgeloop.Error":
        if (payload.code === "auth_failed") {
          forgetToken();
          showLogin(`Refused: ${payload.detail}`);
          return;
        }
        result("refused", false, `${payload.code}: ${payload.detail}`);
        break;
      default:
        break;
    }
  }

  function apply(update) {
    if (fresh) {
      world.clear();
      names.clear();
      fresh = false;
    }
    for (const change of update.changed) {
      const key = `${change.entity}:${change.component}`;
      world.set(key, { ...world.get(key), ...change.values });
      if (change.component === "Name") names.set(change.entity, change.values.value);
    }
    for (const entity of update.removed) {
      for (const key of [...world.keys()]) if (key.startsWith(`${entity}:`)) world.delete(key);
      names.delete(entity);
    }
    schedule();
  }

  // -- commands --------------------------------------------------------------------------

  function result(what, accepted, reason) {
    const line = $("command-result");
    line.textContent = `${what}: ${accepted ? "accepted" : "refused"}${reason ? ` — ${reason}` : ""}`;
    line.className = `result ${accepted ? "accepted" : "refused"}`;
  }

  function command(name, payload, what) {
    if (!send(name, payload)) result(what, false, "not connected to the appliance");
  }

  function stop() {
    command("safety.Stop", { reason: "stop button of the dashboard" }, "stop");
  }

  function reset() {
    command("safety.Reset", { command_id: commandId++ }, "reset");
  }

  function acknowledge(source) {
    command("alarm.Acknowledge", { source, command_id: commandId++ }, `acknowledge ${source}`);
  }

  function stopRobot(robotId) {
    command("robot.Command", { robot_id: robotId, action: "stop", command_id: commandId++ }, robotId);
  }

  // -- rendering -------------------------------------------------------------------------

  function schedule() {
    if (dirty) return;
    dirty = true;
    const wait = Math.max(0, lastRender + RENDER_MS - performance.now());
    setTimeout(() => requestAnimationFrame(render), wait);
  }

  function render() {
    dirty = false;
    lastRender = performance.now();
    const rows = { values: [], devices: [] };
    const robots = [];
    let safety = null;
    let alarms = [];
    let moreAlarms = 0;
    for (const [key, values] of world) {
      const cut = key.indexOf(":");
      const entity = Number(key.slice(0, cut));
      const component = key.slice(cut + 1);
      const name = names.get(entity) ?? `#${entity}`;
      if (component === "SafeStateStatus") safety = values;
      else if (component === "AlarmList") {
        alarms = values.alarms || [];
        moreAlarms = values.more || 0;
      }
      else if (component === "DeviceHealth") rows.devices.push(deviceRow(name, values));
      else if (component === "ListenerHealth") rows.devices.push(listenerRow(values));
      else if (component === "Robot") robots.push([name, values]);
      else if (!PANELS.has(component)) valueRows(rows.values, name, component, values);
    }
    for (const list of Object.values(rows)) list.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    // Rows are made for the robots shown only: a fleet of 1 000 costs a sort, not a table.
    robots.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    $("robots-count").textContent = robots.length > MAX_ROBOT_ROWS
      ? `(${MAX_ROBOT_ROWS} of ${robots.length} shown)` : `(${robots.length})`;
    sync($("values"), rows.values.slice(0, MAX_VALUE_ROWS));
    sync($("devices"), rows.devices);
    sync($("robots"), robots.slice(0, MAX_ROBOT_ROWS).map(([name, values]) => robotRow(name, values)));
    showSafety(safety);
    showAlarms(alarms, moreAlarms);
  }

  function format(value) {
    if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(3);
    if (value === null || value === undefined) return "–";
    return String(value);
  }

  function valueRows(out, name, component, values) {
    for (const [field, value] of Object.entries(values)) {
      if (field.endsWith("_quality") || typeof value === "object") continue;
      const path = `${name}.${component}.${field}`;
      const code = values[`${field}_quality`];
      if (!$("all-values").checked && code === undefined && !wired.has(path)) continue;
      const quality = code === undefined ? "" : QUALITY[code] ?? `q${code}`;
      out.push({
        key: path,
        cls: quality ? `q-${quality}` : "",
        cells: [
          name,
          `${component}.${field}`,
          { text: format(value), cls: "value num" },
          units.get(path) ?? "",
          quality ? { badge: quality.toUpperCase(), cls: quality === "good" ? "good" : "bad" } : "",
        ],
      });
    }
  }

  function deviceRow(name, values) {
    const good = values.state === "online";
    return {
      key: `device ${name}`,
      cls: good ? "" : "q-bad",
      cells: [name, values.driver, { badge: values.state, cls: good ? "good" : "bad" },
        values.rtt_ms ? `${values.rtt_ms.toFixed(1)} ms` : "", values.last_error || ""],
    };
  }

  function listenerRow(values) {
    const good = values.state === "listening";
    return {
      key: `listener ${values.provider}`,
      cls: good ? "" : "q-bad",
      cells: [`${values.provider} ${values.address}`, "listener",
        { badge: values.state, cls: good ? "good" : "bad" }, "", values.last_error || ""],
    };
  }

  function robotRow(name, values) {
    const up = values.connection !== 0;
    const status = up ? values.status : "disconnected";
    return {
      key: name,
      cls: up ? "" : "q-stale",
      cells: [name, { badge: status, cls: up && status !== "fault" ? "good" : "bad" },
        { text: format(values.position), cls: "value num" },
        { text: format(values.velocity), cls: "value num" },
        { text: format(values.temperature), cls: "value num" },
        mayCommand() ? { button: "stop", action: "robot-stop", arg: name } : ""],
    };
  }

  function showSafety(safety) {
    const active = safety !== null && safety.active;
    $("estop").hidden = !active;
    $("safe-state").textContent = safety === null ? "–" : active ? "HELD (safe values)" : "normal";
    $("safe-state").className = active ? "refused" : "";
    if (active) {
      $("estop-causes").textContent = safety.causes || "unknown";
      $("estop-since").textContent = safety.since_tick ? `(since tick ${safety.since_tick})` : "";
      const held = wiringRows.filter((row) => row.safe_value !== null)
        .map((row) => `${row.field} = ${row.safe_value}`);
      $("estop-held").textContent = held.length ? `Held: ${held.join(", ")}` : "";
    }
  }

  function showAlarms(alarms, more) {
    const rows = alarms.map((alarm) => {
      const [label, cls] = ALARM_BADGE[alarm.state] ?? [alarm.state, "bad"];
      const waiting = alarm.state === "active_unacked" || alarm.state === "cleared_unacked";
      return {
        key: alarm.source,
        cls: `alarm-${alarm.state}`,
        cells: [{ badge: label, cls }, alarm.source, alarm.text, alarm.severity,
          waiting && mayCommand() ? { button: "acknowledge", action: "ack", arg: alarm.source }
            : alarm.acked_by ? `acked by ${alarm.acked_by}` : ""],
      };
    });
    sync($("alarms"), rows);
    $("alarms-empty").hidden = rows.length > 0;
    $("alarms-more").textContent = more ? `and ${more} more (acknowledged or cleared ones last)` : "";
  }

  // Rows keyed and updated in place: a cell's text is set only when it changed, so an
  // update of one value costs one DOM write, not a table.
  function sync(body, rows) {
    const known = body.rows_ || (body.rows_ = new Map());
    const wanted = new Set();
    let previous = null;
    for (const row of rows) {
      wanted.add(row.key);
      let tr = known.get(row.key);
      if (tr === undefined) {
        tr = document.createElement("tr");
        tr.dataset.key = row.key;
        for (let i = 0; i < row.cells.length; i += 1) tr.appendChild(document.createElement("td"));
        known.set(row.key, tr);
      }
      if (tr.className !== row.cls) tr.className = row.cls;
      row.cells.forEach((cell, i) => fill(tr.cells[i], cell));
      const next = previous === null ? body.firstChild : previous.nextSibling;
      if (next !== tr) body.insertBefore(tr, next);
      previous = tr;
    }
    for (const [key, tr] of known) {
      if (!wanted.has(key)) {
        tr.remove();
        known.delete(key);
      }
    }
  }

  function fill(td, cell) {
    const spec = typeof cell === "object" ? cell : { text: cell };
    const signature = typeof cell === "object"
      ? `${spec.text}|${spec.cls}|${spec.badge}|${spec.button}|${spec.arg}` : cell;
    if (td.signature_ === signature) return;
    td.signature_ = signature;
    td.replaceChildren();
    td.className = spec.badge === undefined ? spec.cls || "" : "";
    if (spec.badge !== undefined) {
      const badge = document.createElement("span");
      badge.className = `badge ${spec.cls || ""}`;
      badge.textContent = spec.badge;
      td.appendChild(badge);
    } else if (spec.button !== undefined) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = spec.button;
      button.dataset.action = spec.action;
      button.dataset.arg = spec.arg;
      td.appendChild(button);
    } else {
      td.textContent = spec.text;
    }
  }

  // -- the wiring ------------------------------------------------------------------------

  function takeWiring(page) {
    if (page.offset !== wiringRows.length) return;
    wiringRows = wiringRows.concat(page.fields);
    $("wiring-config").textContent = page.config;
    if (wiringRows.length < page.total && page.fields.length > 0) {
      send("wiring.Request", { offset: wiringRows.length });
    }
    units.clear();
    wired.clear();
    for (const row of wiringRows) {
      wired.add(row.field);
      if (row.unit) units.set(row.field, row.unit);
    }
    const bounds = (row) => [row.min === null ? "" : `min ${row.min}`, row.max === null ? "" : `max ${row.max}`,
      row.safe_value === null ? "" : `safe ${row.safe_value}`].filter(Boolean).join(", ");
    sync($("wiring"), wiringRows.map((row) => ({
      key: row.field,
      cls: "",
      cells: [row.field, row.writer || "(nothing)", row.readers.join("; "), bounds(row)],
    })));
    schedule();
  }

  // -- the loop and the audit log (pushed over /ws); JSON over HTTP for the trends --------

  async function getJson(path) {
    const answer = await fetch(path, { cache: "no-store" });
    if (!answer.ok) throw new Error(`${path}: HTTP ${answer.status}`);
    return answer.json();
  }

  // One row per bucket with ticks in it: "up to" its edge, the count, a bar on a log
  // scale (a few late ticks among millions must still show).
  function showHistogram({ edges_us: edges, ticks }) {
    const body = $("loop-histogram").tBodies[0];
    const most = Math.max(1, ...ticks);
    const rows = [];
    ticks.forEach((count, i) => {
      if (!count) return;
      const label = i < edges.length ? `≤ ${microseconds(edges[i])}` : `> ${microseconds(edges[edges.length - 1])}`;
      const width = (100 * Math.log10(1 + count)) / Math.log10(1 + most);
      const row = document.createElement("tr");
      const cells = [label, String(count)].map((text) => {
        const cell = document.createElement("td");
        cell.textContent = text;
        return cell;
      });
      const bar = document.createElement("td");
      const fill = document.createElement("span");
      fill.className = "bar";
      fill.style.width = `${width.toFixed(1)}%`;
      bar.appendChild(fill);
      row.append(...cells, bar);
      rows.push(row);
    });
    body.replaceChildren(...rows);
  }

  function microseconds(us) {
    return us >= 1000 ? `${us / 1000} ms` : `${us} µs`;
  }

  function showLoop(loop) {
    $("loop-rate").textContent = `${loop.rate_hz.toFixed(1)} Hz`;
    $("loop-p99").textContent = `${loop.lateness_p99_us.toFixed(0)} µs`;
    $("loop-overruns").textContent = String(loop.overruns);
    $("loop-ticks").textContent = String(loop.ticks);
    showHistogram(loop.lateness_histogram);
  }

  function auditDetail(entry) {
    const skip = new Set(["event", "time", "seq", "tick"]);
    return Object.entries(entry).filter(([k]) => !skip.has(k))
      .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
  }

  function showAudit(entries) {
    sync($("audit"), entries.slice().reverse().map((entry) => ({
      key: String(entry.seq),
      cls: entry.accepted === false ? "q-bad" : "",
      cells: [new Date(entry.time).toLocaleTimeString(), entry.event, auditDetail(entry)],
    })));
  }

  // -- trends ----------------------------------------------------------------------------

  const trend = { picked: [], chart: null, data: new Map() };

  function loadPicked() {
    try {
      const saved = JSON.parse(localStorage.getItem("edgeloop.trends") || "[]");
      trend.picked = saved.filter((f) => typeof f === "string").slice(0, MAX_TREND_FIELDS);
    } catch (error) {
      trend.picked = [];
    }
  }

  function savePicked() {
    localStorage.setItem("edgeloop.trends", JSON.stringify(trend.picked));
    const list = $("trend-picked");
    list.replaceChildren(...trend.picked.map((field) => {
      const item = document.createElement("li");
      item.textContent = field;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "×";
      remove.dataset.action = "trend-remove";
      remove.dataset.arg = field;
      item.appendChild(remove);
      return item;
    }));
    makeChart();
  }

  async function loadFields() {
    try {
      const { fields } = await getJson("/api/fields");
      const select = $("trend-field");
      const chosen = select.value;
      select.replaceChildren(...fields.map((field) => new Option(field, field)));
      if (fields.includes(chosen)) select.value = chosen;
    } catch (error) { /* tried again with the next poll */ }
  }

  function makeChart() {
    if (trend.chart !== null) trend.chart.destroy();
    trend.chart = null;
    trend.data.clear();
    if (trend.picked.length === 0) return;
    const width = Math.max(280, $("chart").clientWidth || 600);
    const palette = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4d7c0f", "#9a3412", "#475569"];
    trend.chart = new uPlot({
      width,
      height: 260,
      series: [{}, ...trend.picked.map((field, i) => ({ label: field, stroke: palette[i % palette.length], spanGaps: true }))],
      axes: [{}, { size: 60 }],
      legend: { live: false },
    }, [[], ...trend.picked.map(() => [])], $("chart"));
  }

  async function pollTrends() {
    const span = Number($("trend-span").value);
    if (connected && !document.hidden && trend.chart !== null) {
      const until = Date.now() / 1000;
      const points = Math.min(MAX_TREND_POINTS, Math.round(trend.chart.width));
      try {
        const answers = await Promise.all(trend.picked.map((field) => getJson(
          `/api/trend?field=${encodeURIComponent(field)}&since=${until - span}&until=${until}&points=${points}`)));
        // Each poll replaces what the chart holds: at most `points` per field, ever.
        const tables = answers.map((a) => [a.t, a.mean]);
        trend.chart.setData(uPlot.join(tables));
        $("chart").dataset.points = String(tables.reduce((n, [t]) => n + t.length, 0));
        $("trend-error").textContent = "";
      } catch (error) {
        $("trend-error").textContent = String(error.message || error);
      }
    }
    // A longer span moves slower: no more polls than there are new buckets.
    setTimeout(pollTrends, Math.max(2000, (span * 1000) / MAX_TREND_POINTS));
  }

  // -- wiring up the page ----------------------------------------------------------------

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button === null) return;
    const { action, arg } = button.dataset;
    if (action === "ack") acknowledge(arg);
    else if (action === "robot-stop") stopRobot(arg);
    else if (action === "trend-remove") {
      trend.picked = trend.picked.filter((f) => f !== arg);
      savePicked();
    }
  });
  $("stop").addEventListener("click", stop);
  $("reset").addEventListener("click", reset);
  $("trend-add").addEventListener("click", () => {
    const field = $("trend-field").value;
    if (field && !trend.picked.includes(field) && trend.picked.length < MAX_TREND_FIELDS) {
      trend.picked.push(field);
      savePicked();
    }
  });
  $("trend-span").addEventListener("change", makeChart);
  $("all-values").addEventListener("change", schedule);
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    keepToken($("token").value);
    $("token").value = "";
    open();
  });
  $("logout").addEventListener("click", () => {
    forgetToken();
    if (ws !== null) ws.close();
    location.reload();
  });

  takeTokenFromUrl();
  loadPicked();
  setConnected(false);
  offlineSince = null;
  $("disconnected").hidden = true;
  savePicked();
  open();
  setInterval(loadFields, 30000);
  setInterval(showOffline, OFFLINE_MS);
  pollTrends();
})();
