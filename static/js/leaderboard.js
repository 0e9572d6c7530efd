// Live leaderboard: keeps the table in step with /ws/hunts/<slug>/leaderboard/ (contract §3.2).
// No build step, no dependencies. The server-rendered table works without this script.
(function () {
  "use strict";
  var root = document.getElementById("leaderboard");
  if (!root) return;
  var strings = JSON.parse(document.getElementById("lb-strings").textContent);
  var tbody = document.getElementById("lb-rows");
  var status = document.getElementById("lb-status");
  var updated = document.getElementById("lb-updated");
  var winner = document.getElementById("winner");
  var delay = 1000;

  function when(iso) {
    if (!iso) return "";
    var d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString(document.documentElement.lang || undefined);
  }

  function cell(text) {
    var td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function timeCell(iso) {
    var td = document.createElement("td");
    var t = document.createElement("time");
    t.dateTime = iso || "";
    t.textContent = when(iso);
    td.appendChild(t);
    return td;
  }

  function render(board) {
    var rows = document.createDocumentFragment();
    board.rows.forEach(function (row) {
      var tr = document.createElement("tr");
      tr.appendChild(cell(row.rank));
      tr.appendChild(cell(row.player));
      tr.appendChild(cell(row.words_found));
      tr.appendChild(timeCell(row.last_found_at));
      rows.appendChild(tr);
    });
    if (!board.rows.length) {
      var tr = document.createElement("tr");
      tr.className = "empty";
      var td = cell(strings.empty);
      td.colSpan = 4;
      tr.appendChild(td);
      rows.appendChild(tr);
    }
    tbody.replaceChildren(rows);
    updated.dateTime = board.updated_at;
    updated.textContent = when(board.updated_at);
    if (board.winner) {
      winner.textContent = "🏆 " + strings.winner.replace("%(player)s", board.winner.player);
      winner.hidden = false;
    }
  }

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + root.dataset.wsPath);
    socket.onopen = function () {
      delay = 1000;
      setStatus("live", strings.live);
    };
    socket.onmessage = function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (frame.type === "leaderboard") render(frame);
    };
    socket.onclose = function (event) {
      if (event.code === 4404) return;  // unknown hunt: nothing to wait for
      setStatus("reconnecting", strings.reconnecting);
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }

  document.querySelectorAll("time[datetime]").forEach(function (t) {
    t.textContent = when(t.dateTime);
  });
  connect();
})();
