// The organizers' live console: polls the hunt's figures and draws them; posts the controls.
// Texts from players go in with textContent only, never as HTML.
(function () {
  "use strict";
  const root = document.getElementById("console");
  const L = JSON.parse(document.getElementById("console-labels").textContent);
  const csrf = root.querySelector("input[name=csrfmiddlewaretoken]").value;
  const superuser = root.dataset.superuser === "1";
  const pollMs = Math.max(1, Number(root.dataset.poll) || 4) * 1000;
  let timer = null;
  let lastDiscovery = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fill(id, nodes) {
    document.getElementById(id).replaceChildren(...nodes);
  }

  function pairs(id, entries) {
    fill(id, entries.flatMap(([label, value, cls]) => [
      el("dt", {}, label), el("dd", { class: cls || null }, value),
    ]));
  }

  function when(iso) {
    return iso ? new Date(iso).toLocaleTimeString() : "—";
  }

  function ms(value) {
    return value === null || value === undefined ? "—" : `${value} ms`;
  }

  function announce(text) {
    document.getElementById("console-announcer").textContent = text;
  }

  async function post(url, data) {
    const body = new URLSearchParams(data);
    const response = await fetch(url, {
      method: "POST", body, credentials: "same-origin",
      headers: { "X-CSRFToken": csrf },
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.detail || `${response.status}`);
    return answer;
  }

  // Panels ---------------------------------------------------------------------------------

  function drawHeader(hunt, generatedAt) {
    const status = document.getElementById("hunt-status");
    const state = hunt.paused ? "paused" : hunt.status;
    status.dataset.status = state;
    status.textContent = L.status[state] || state;
    document.getElementById("updated").textContent = `${L.updated} ${when(generatedAt)}`;
    const pause = document.getElementById("pause-button");
    pause.dataset.paused = hunt.paused ? "1" : "0";
    pause.textContent = hunt.paused ? L.resume : L.pause;
    const reg = document.getElementById("registration-button");
    reg.dataset.open = hunt.registration_open ? "1" : "0";
    reg.textContent = hunt.registration_open ? L.close_registration : L.open_registration;
  }

  function drawProgress(p) {
    fill("progress-cards", [
      [L.registered, p.players.registered],
      [L.active_5m, p.players.active_5m],
      [L.active_1h, p.players.active_1h],
      [L.messages_per_minute, p.messages_per_minute],
    ].map(([label, value]) => el("div", { class: "card" },
      el("span", { class: "card-value" }, value), el("span", { class: "card-label" }, label))));
    drawTimeline(p.timeline);
    const tbody = document.querySelector("#funnel tbody");
    tbody.replaceChildren(...p.funnel.map((w) => {
      const top = Math.max(w.talked, 1);
      const bar = (n, cls) => el("span", { class: `bar ${cls}`, style: `width:${Math.round(100 * n / top)}%` });
      return el("tr", { "data-position": w.position },
        el("td", {}, w.position), el("td", {}, w.avatar),
        el("td", {}, w.talked, bar(w.talked, "talked")),
        el("td", {}, w.close, bar(w.close, "close")),
        el("td", { class: "found" }, w.found, bar(w.found, "found")),
        el("td", {}, w.first_finder ? `${w.first_finder} · ${when(w.first_at)}` : "—"));
    }));
    pairs("claims", Object.entries(p.claims).map(([k, v]) => [L.claims[k] || k, v]));
    pairs("cooldowns", [[L.cooldown_claims, p.cooldowns.claims], [L.cooldown_gate, p.cooldowns.gate]]);
    fill("discoveries", !p.recent_discoveries.length ? [el("li", { class: "muted" }, L.none)] : p.recent_discoveries.map((d) => el("li", { "data-id": d.id },
      el("strong", {}, `#${d.position}`), " ", d.player, d.first ? ` ★ ${L.first}` : "",
      el("span", { class: "muted" }, ` ${when(d.at)}`))));
    const newest = p.recent_discoveries[0];
    if (newest && lastDiscovery !== null && newest.id !== lastDiscovery) {
      announce(`${L.new_discovery} #${newest.position}: ${newest.player}`);
    }
    lastDiscovery = newest ? newest.id : 0;
  }

  function drawTimeline(points) {
    const svg = document.getElementById("timeline");
    const ns = "http://www.w3.org/2000/svg";
    svg.replaceChildren();
    document.getElementById("timeline-range").textContent = points.length
      ? `${new Date(points[0].at).toLocaleString()} → ${L.now}` : "";
    if (!points.length) return;
    const W = 600, H = 160, pad = 4;
    const maxM = Math.max(1, ...points.map((p) => p.messages));
    const maxD = Math.max(1, ...points.map((p) => p.discoveries));
    const step = (W - 2 * pad) / points.length;
    points.forEach((p, i) => {
      const h = (H - 2 * pad) * p.messages / maxM;
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", pad + i * step + 1);
      rect.setAttribute("y", H - pad - h);
      rect.setAttribute("width", Math.max(step - 2, 1));
      rect.setAttribute("height", h);
      rect.setAttribute("class", "chart-bar");
      const title = document.createElementNS(ns, "title");
      title.textContent = `${when(p.at)}: ${p.messages} ${L.messages}, ${p.discoveries} ${L.discoveries}`;
      rect.append(title);
      svg.append(rect);
    });
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.map((p, i) =>
      `${pad + (i + 0.5) * step},${H - pad - (H - 2 * pad) * p.discoveries / maxD}`).join(" "));
    line.setAttribute("class", "chart-line");
    svg.append(line);
  }

  function drawStuck(clues) {
    // Keep what the organizer opened or closed across refreshes; at first the three clues with
    // the most near misses are open.
    const shown = document.querySelectorAll("#stuck details[data-clue]");
    const open = shown.length
      ? new Set([...shown].filter((d) => d.open).map((d) => Number(d.dataset.clue)))
      : new Set(clues.slice(0, 3).filter((c) => c.groups && c.groups.length).map((c) => c.clue));
    fill("stuck", clues.map((c) => el("details", { class: "stuck", "data-clue": c.clue, open: open.has(c.clue) ? "" : null },
      el("summary", {}, el("strong", {}, `#${c.position} · ${c.avatar}`),
        ` — ${c.near_misses} ${L.near_misses}, ${c.players} ${L.players}`),
      c.groups ? el("ul", { class: "rows" }, c.groups.map((g) => el("li", {},
        el("q", {}, g.text), el("span", { class: "muted" }, ` ×${g.count} · ${g.best.toFixed(2)}`),
        superuser ? el("button", {
          type: "button", class: "small", "data-near-miss": g.near_miss,
          onclick: (e) => addPhrasing(e.currentTarget, root.dataset.examples, g.near_miss),
        }, L.add_example) : null,
        superuser ? el("button", {
          type: "button", class: "small", "data-near-miss": g.near_miss,
          onclick: (e) => addPhrasing(e.currentTarget, root.dataset.counterexamples, g.near_miss),
        }, L.add_counterexample) : null))) : null)));
  }

  function drawAttacks(a) {
    pairs("attack-counts", Object.entries(a.counts).map(([k, v]) => [L.incidents[k] || k, v, v ? "warn" : null]));
    fill("offenders", a.offenders.length ? a.offenders.map((o) => el("li", {},
      el("strong", {}, o.name), ` — ${o.incidents} ${L.incidents_word} `,
      o.suspended ? el("span", { class: "pill", "data-status": "paused" }, L.suspended)
        : el("button", { type: "button", class: "small danger", "data-player": o.player,
          onclick: (e) => suspend(e.currentTarget, o.player, o.name) }, L.suspend))) : [el("li", { class: "muted" }, L.none)]);
    fill("addresses", a.addresses.length ? a.addresses.map((x) => el("li", {},
      el("code", {}, x.address), ` — ${x.incidents} ${L.incidents_word}, ${x.players} ${L.players}`)) : [el("li", { class: "muted" }, L.none)]);
    fill("incidents", !a.recent.length ? [el("li", { class: "muted" }, L.none)] : a.recent.map((i) => el("li", {},
      el("span", { class: "pill", "data-kind": i.kind }, L.incidents[i.kind] || i.kind), " ",
      i.player || i.address || "?", i.detail ? ` (${i.detail})` : "",
      el("span", { class: "muted" }, ` ${when(i.at)}`))));
  }

  function drawService(s) {
    const reach = (v) => (v === null ? L.not_used : v ? L.ok : L.down);
    pairs("service", [
      [L.waiting, s.waiting],
      [`${L.ttft} p50 / p95 (${s.window_minutes} min)`, `${ms(s.ttft_ms.p50)} / ${ms(s.ttft_ms.p95)} · n=${s.ttft_ms.n}`],
      [`${L.failures} (${s.window_minutes} min)`, s.failures, s.failures ? "warn" : null],
      [L.database, reach(s.database), s.database ? null : "warn"],
      ["Redis", reach(s.redis), s.redis === false ? "warn" : null],
    ]);
    fill("workers", s.workers.length ? s.workers.map((w) => el("li", {},
      el("span", { class: "dot", "data-alive": w.alive ? "1" : "0", title: w.alive ? L.alive : L.gone }),
      el("code", {}, w.name), ` ${w.model} · ${L.seen} ${when(w.seen_at)}`)) : [el("li", { class: "muted" }, L.no_workers)]);
  }

  function drawAvatars(rows) {
    document.querySelector("#ratings tbody").replaceChildren(...rows.map((a) => el("tr", {},
      el("th", { scope: "row" }, a.name), el("td", {}, a.up), el("td", {}, a.down),
      el("td", {}, a.up_rate === null ? "—" : `${Math.round(100 * a.up_rate)} %`),
      el("td", {}, a.by_model.map((m) => `${m.model}: ${m.up}/${m.down}`).join(" · ") || "—"))));
  }

  // Polling and controls --------------------------------------------------------------------

  async function refresh() {
    clearTimeout(timer);
    try {
      const response = await fetch(root.dataset.figures, { credentials: "same-origin" });
      if (!response.ok) throw new Error(`${response.status}`);
      const f = await response.json();
      drawHeader(f.hunt, f.generated_at);
      drawProgress(f.progress);
      drawStuck(f.stuck);
      drawAttacks(f.attacks);
      drawService(f.service);
      drawAvatars(f.avatars);
      root.dataset.loaded = "1";
    } catch (err) {
      document.getElementById("updated").textContent = `${L.offline} (${err.message})`;
    }
    timer = setTimeout(refresh, pollMs);
  }

  async function control(button, url, data) {
    button.disabled = true;
    try {
      await post(url, data);
      await refresh();
    } catch (err) {
      announce(err.message);
      alert(err.message);
    } finally {
      button.disabled = false;
    }
  }

  async function addPhrasing(button, url, nearMiss) {
    await control(button, url, { near_miss: nearMiss });
    button.textContent = L.added;
    button.disabled = true;
  }

  function suspend(button, player, name) {
    if (!confirm(L.confirm_suspend.replace("%s", name))) return;
    control(button, root.dataset.suspend.replace("/0/", `/${player}/`), {});
  }

  document.getElementById("pause-button").addEventListener("click", (e) => {
    const paused = e.currentTarget.dataset.paused === "1";
    if (!paused && !confirm(L.confirm_pause)) return;
    control(e.currentTarget, root.dataset.pause, { paused: paused ? "0" : "1" });
  });
  document.getElementById("registration-button").addEventListener("click", (e) => {
    control(e.currentTarget, root.dataset.registration, { open: e.currentTarget.dataset.open === "1" ? "0" : "1" });
  });
  document.getElementById("announce-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = document.getElementById("announce-text");
    const status = document.getElementById("announce-status");
    try {
      const sent = await post(root.dataset.announce, { text: input.value });
      status.textContent = `${L.sent} ${when(sent.at)}: “${sent.text}”`;
      input.value = "";
    } catch (err) {
      status.textContent = err.message;
    }
  });
  refresh();
})();
