// The chat page: one WebSocket to /ws/chat/<avatar>/ speaking the protocol of docs/protocol.md.
// Plain JavaScript, no build step. Texts come translated from the page (#chat-strings).
(function () {
  "use strict";

  const root = document.getElementById("chat");
  if (!root) return;
  const strings = JSON.parse(document.getElementById("chat-strings").textContent);
  const thread = document.getElementById("thread");
  const statusEl = document.getElementById("chat-status");
  const announcer = document.getElementById("announcer");
  const noticeEl = document.getElementById("hunt-notice");
  const announcementEl = document.getElementById("hunt-announcement");
  const discoveriesEl = document.getElementById("discoveries");
  const form = document.getElementById("composer");
  const input = document.getElementById("chat-input");
  const sendButton = document.getElementById("chat-send");
  const countEl = document.getElementById("chat-count");
  const maxChars = parseInt(root.dataset.maxChars, 10) || 500;
  let avatarName = root.dataset.avatarName;

  const PING_EVERY_MS = 25000;
  const PONG_WITHIN_MS = 10000;
  const MAX_BACKOFF_S = 30;
  // Close codes after which reconnecting cannot help (see docs/protocol.md).
  const FINAL_CLOSES = { 4401: "signed_out", 4403: "not_open", 4404: "unknown_avatar" };

  let socket = null;
  let attempt = 0;
  let reconnectTimer = null;
  let pingTimer = null;
  let pongTimer = null;
  let stopped = false;

  const byId = new Map(); // stored message id -> <li>
  const byClient = new Map(); // client_id -> {li, text, messageId}
  let outbox = null; // the one say not yet acknowledged: {clientId, text}
  let pendingReply = null; // id of the player message whose reply is being written
  const streams = new Map(); // reply_to -> <li> of the reply being streamed
  const found = new Set(); // word positions shown as cards
  const settled = new Set(); // player message ids whose turn ended

  function t(key, params) {
    let text = strings[key] || key;
    for (const [name, value] of Object.entries(params || {})) {
      text = text.split("%(" + name + ")s").join(String(value));
    }
    return text;
  }

  function announce(text) {
    // Clearing first makes a repeated text be read again.
    announcer.textContent = "";
    window.setTimeout(function () { announcer.textContent = text; }, 50);
  }

  function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusEl.textContent = text;
  }

  function newClientId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 12);
  }

  function nearBottom() {
    return thread.scrollHeight - thread.scrollTop - thread.clientHeight < 80;
  }

  function keepScrolled(wasNearBottom) {
    if (wasNearBottom) thread.scrollTop = thread.scrollHeight;
  }

  // Messages --------------------------------------------------------------------------------

  function messageElement(role, text) {
    const li = document.createElement("li");
    li.className = "msg msg-" + role;
    const who = document.createElement("span");
    who.className = "msg-who";
    who.textContent = role === "player" ? t("you") : avatarName;
    const body = document.createElement("p");
    body.className = "msg-text";
    body.textContent = text; // never innerHTML: texts come from players and the model
    const meta = document.createElement("p");
    meta.className = "msg-meta";
    li.append(who, body, meta);
    return li;
  }

  function firstUnsent() {
    return thread.querySelector(".msg-unsent");
  }

  // Stored messages keep their order: a message the server knows goes before local drafts.
  function place(li) {
    const wasNearBottom = nearBottom();
    const before = firstUnsent();
    if (before && before !== li) thread.insertBefore(li, before);
    else thread.appendChild(li);
    keepScrolled(wasNearBottom);
  }

  function setMeta(li, text, action) {
    const meta = li.querySelector(".msg-meta");
    meta.textContent = text || "";
    if (action) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "link";
      button.textContent = action.label;
      button.addEventListener("click", action.run);
      meta.append(" ", button);
    }
  }

  // A thumb drawn in SVG: emoji fonts are missing on many systems.
  const THUMB_PATH =
    "M2 21h4V9H2v12zm20-11a2 2 0 0 0-2-2h-6.3l1-4.6v-.3c0-.4-.2-.8-.4-1.1L13.2 1 6.6 7.6" +
    "C6.2 8 6 8.5 6 9v10a2 2 0 0 0 2 2h9c.8 0 1.5-.5 1.8-1.2l3-7.1c.1-.2.2-.5.2-.7v-2z";

  function thumbIcon() {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", THUMB_PATH);
    svg.appendChild(path);
    return svg;
  }

  function addFeedback(li, messageId) {
    if (li.querySelector(".feedback")) return;
    const bar = document.createElement("div");
    bar.className = "feedback";
    for (const [value, key, name] of [[1, "rate_up", "thumb-up"], [-1, "rate_down", "thumb-down"]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "thumb " + name;
      button.dataset.value = String(value);
      button.setAttribute("aria-pressed", "false");
      button.setAttribute("aria-label", t(key));
      button.title = t(key);
      button.appendChild(thumbIcon());
      button.addEventListener("click", function () {
        bar.dataset.wanted = String(value);
        sendFrame({ type: "rate", message_id: messageId, value: value });
      });
      bar.appendChild(button);
    }
    li.appendChild(bar);
  }

  function markRated(messageId) {
    const li = byId.get(messageId);
    const bar = li && li.querySelector(".feedback");
    if (!bar) return;
    for (const button of bar.querySelectorAll(".thumb")) {
      button.setAttribute("aria-pressed", String(button.dataset.value === bar.dataset.wanted));
    }
    announce(t("rated"));
  }

  function showPlayerMessage(item) {
    let li = byId.get(item.id);
    const local = item.client_id && byClient.get(item.client_id);
    if (!li && local) {
      li = local.li;
      li.classList.remove("msg-unsent");
      byId.set(item.id, li);
      if (outbox && outbox.clientId === item.client_id) outbox = null;
    }
    if (!li) {
      li = messageElement("player", item.text);
      byId.set(item.id, li);
      place(li);
    }
    li.dataset.id = String(item.id);
    if (item.status === "failed") markFailed(item.id);
    else if (item.status === "done") setMeta(li, "");
    else setMeta(li, t("sent"));
  }

  function showAvatarMessage(item) {
    if (byId.has(item.id)) return;
    const streaming = item.reply_to != null && streams.get(item.reply_to);
    let li = streaming;
    if (li) {
      streams.delete(item.reply_to);
      li.classList.remove("msg-streaming");
      li.removeAttribute("aria-busy");
      li.querySelector(".msg-text").textContent = item.text;
      setMeta(li, "");
    } else {
      li = messageElement("avatar", item.text);
      place(li);
    }
    li.dataset.id = String(item.id);
    byId.set(item.id, li);
    addFeedback(li, item.id);
  }

  function streamElement(replyTo) {
    let li = streams.get(replyTo);
    if (!li) {
      li = messageElement("avatar", "");
      li.classList.add("msg-streaming");
      li.setAttribute("aria-busy", "true");
      setMeta(li, t("typing", { name: avatarName }));
      streams.set(replyTo, li);
      place(li);
    }
    return li;
  }

  function endTurn(replyTo) {
    settled.add(replyTo);
    if (pendingReply === replyTo) pendingReply = null;
    updateComposer();
  }

  function markFailed(messageId) {
    const li = byId.get(messageId);
    const stream = streams.get(messageId);
    if (stream) {
      stream.remove();
      streams.delete(messageId);
    }
    if (!li) return;
    li.classList.add("msg-failed");
    const text = li.querySelector(".msg-text").textContent;
    setMeta(li, t("generation_failed", { name: avatarName }), {
      label: t("ask_again"),
      run: function () { say(text); },
    });
  }

  function showDiscovery(position, word, first, quiet) {
    if (found.has(position)) return;
    found.add(position);
    discoveriesEl.hidden = false;
    const card = document.createElement("article");
    card.className = "discovery-card" + (quiet ? "" : " discovery-new");
    card.dataset.position = String(position);
    const label = document.createElement("p");
    label.className = "discovery-label";
    label.textContent = t("word_number", { position: position });
    const wordEl = document.createElement("p");
    wordEl.className = "discovery-word";
    wordEl.textContent = word;
    card.append(label, wordEl);
    if (first) {
      const badge = document.createElement("p");
      badge.className = "badge discovery-first";
      badge.textContent = t("first");
      card.appendChild(badge);
    }
    discoveriesEl.appendChild(card);
    if (!quiet) {
      announce(t("discovery", { position: position, word: word }) + (first ? " " + t("first") : ""));
    }
  }

  // Sending ---------------------------------------------------------------------------------

  function busy() {
    return outbox !== null || pendingReply !== null;
  }

  function updateComposer() {
    const length = input.value.trim().length;
    countEl.textContent = length + " / " + maxChars;
    countEl.setAttribute("aria-label", t("count", { count: length, max: maxChars }));
    sendButton.disabled = busy() || length === 0 || length > maxChars;
    sendButton.title = busy() ? t("wait_reply") : "";
  }

  function sendFrame(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function transmit() {
    if (outbox) sendFrame({ type: "say", text: outbox.text, client_id: outbox.clientId });
  }

  function say(text) {
    text = text.trim();
    if (!text || busy()) return;
    const clientId = newClientId();
    const li = messageElement("player", text);
    li.classList.add("msg-unsent");
    setMeta(li, t("sending"));
    thread.appendChild(li);
    thread.scrollTop = thread.scrollHeight;
    byClient.set(clientId, { li: li, text: text });
    outbox = { clientId: clientId, text: text };
    updateComposer();
    // Offline, the say waits in the outbox and goes out again after the next hello.
    transmit();
  }

  function refused(frame) {
    const local = frame.client_id && byClient.get(frame.client_id);
    let reason = t(frame.code, { seconds: frame.retry_after, max: maxChars, name: avatarName });
    if (frame.code === "busy") reason = t("busy", { name: avatarName });
    if (local && outbox && outbox.clientId === frame.client_id) {
      outbox = null;
      const retry = {
        label: t("retry"),
        run: function () {
          local.li.remove();
          byClient.delete(frame.client_id);
          say(local.text);
        },
      };
      setMeta(local.li, t("not_sent", { reason: reason }), retry);
      local.li.classList.add("msg-refused");
      if (frame.code === "rate_limited") {
        sendButton.disabled = true;
        window.setTimeout(updateComposer, (frame.retry_after || 1) * 1000);
      }
    }
    announce(reason);
    updateComposer();
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (sendButton.disabled) return;
    say(input.value);
    input.value = "";
    updateComposer();
    input.focus();
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  input.addEventListener("input", updateComposer);

  // Frames from the server ------------------------------------------------------------------

  const handlers = {
    hello: function (frame) {
      attempt = 0;
      avatarName = frame.avatar.name;
      setStatus("open", t("connected"));
      for (const item of frame.history) {
        if (item.role === "player") showPlayerMessage(item);
        else showAvatarMessage(item);
        if (item.role === "avatar" && item.reply_to != null) endTurn(item.reply_to);
        if (item.role === "player" && item.status === "failed") endTurn(item.id);
      }
      for (const d of frame.discoveries) showDiscovery(d.position, d.word, false, true);
      pendingReply = frame.pending;
      if (pendingReply !== null) streamElement(pendingReply);
      if (frame.hunt && frame.hunt.paused) {
        noticeEl.textContent = t("hunt_paused_now");
        noticeEl.hidden = false;
      } else if (frame.hunt && frame.hunt.status !== "live") {
        noticeEl.textContent = t("hunt_not_live");
        noticeEl.hidden = false;
      }
      // A say whose ack was lost goes out again with its client_id: the server answers the
      // original ack if it stored it, and stores it once otherwise.
      transmit();
      updateComposer();
    },
    ack: function (frame) {
      const local = frame.client_id && byClient.get(frame.client_id);
      if (local) {
        local.messageId = frame.message_id;
        local.li.classList.remove("msg-unsent");
        local.li.dataset.id = String(frame.message_id);
        byId.set(frame.message_id, local.li);
        setMeta(local.li, t("sent"));
      }
      if (outbox && outbox.clientId === frame.client_id) outbox = null;
      if (!settled.has(frame.message_id)) {
        pendingReply = frame.message_id;
        streamElement(frame.message_id);
      }
      updateComposer();
    },
    token: function (frame) {
      if (settled.has(frame.reply_to)) return;
      const li = streamElement(frame.reply_to);
      const wasNearBottom = nearBottom();
      li.querySelector(".msg-text").textContent += frame.text;
      keepScrolled(wasNearBottom);
    },
    reply: function (frame) {
      showAvatarMessage({ id: frame.message_id, text: frame.text, reply_to: frame.reply_to });
      const player = byId.get(frame.reply_to);
      if (player) setMeta(player, "");
      endTurn(frame.reply_to);
      announce(t("says", { name: avatarName, text: frame.text }));
    },
    discovery: function (frame) {
      showDiscovery(frame.position, frame.word, frame.first, false);
    },
    rated: function (frame) {
      markRated(frame.message_id);
    },
    error: function (frame) {
      if (frame.code === "generation_failed") {
        markFailed(frame.reply_to);
        endTurn(frame.reply_to);
        announce(t("generation_failed", { name: avatarName }));
      } else if (frame.code === "hunt_not_live" && frame.client_id) {
        // A say refused while the organizers pause the hunt: nothing was stored.
        noticeEl.textContent = t("hunt_paused");
        noticeEl.hidden = false;
        refused({ code: "hunt_paused", client_id: frame.client_id });
      } else if (frame.code === "hunt_not_live") {
        noticeEl.textContent = t("hunt_not_live");
        noticeEl.hidden = false;
      } else {
        refused(frame);
      }
    },
    announcement: function (frame) {
      announcementEl.textContent = frame.text;
      announcementEl.hidden = false;
      announce(t("announcement", { text: frame.text }));
    },
    queued: function () {},
    pong: function () {
      window.clearTimeout(pongTimer);
    },
  };

  // Connection ------------------------------------------------------------------------------

  function connect() {
    window.clearTimeout(reconnectTimer);
    if (stopped || (socket && socket.readyState <= WebSocket.OPEN)) return;
    setStatus("connecting", t("connecting"));
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + root.dataset.wsPath);
    socket.addEventListener("message", function (event) {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      const handler = handlers[frame.type];
      if (handler) handler(frame);
    });
    socket.addEventListener("open", function () {
      pingTimer = window.setInterval(function () {
        if (sendFrame({ type: "ping" })) {
          window.clearTimeout(pongTimer);
          // No pong in time: the connection is dead even if the browser has not noticed.
          pongTimer = window.setTimeout(function () { socket.close(); }, PONG_WITHIN_MS);
        }
      }, PING_EVERY_MS);
    });
    socket.addEventListener("close", onClose);
  }

  function onClose(event) {
    window.clearInterval(pingTimer);
    window.clearTimeout(pongTimer);
    // The streamed part of a reply in flight is dropped: the rest, or at least the final
    // reply, arrives on the next connection, and the final reply carries the whole text.
    for (const li of streams.values()) li.querySelector(".msg-text").textContent = "";
    const final = FINAL_CLOSES[event.code];
    if (final) {
      stopped = true;
      setStatus("closed", t(final));
      sendButton.disabled = true;
      if (event.code === 4401) {
        const link = document.createElement("a");
        link.href = root.dataset.loginUrl;
        link.textContent = t("sign_in");
        statusEl.append(" ", link);
      }
      announce(t(final));
      return;
    }
    // Exponential backoff with jitter, so a restarted server is not hit by every client at once.
    const delay = Math.min(MAX_BACKOFF_S, Math.pow(2, attempt)) * (0.5 + Math.random() / 2);
    attempt += 1;
    const key = event.code === 4429 ? "flood" : "reconnecting";
    setStatus("reconnecting", t(key, { seconds: Math.ceil(delay) }));
    reconnectTimer = window.setTimeout(connect, delay * 1000);
  }

  // A phone waking up or getting its network back should not wait for the backoff.
  window.addEventListener("online", connect);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") connect();
  });

  updateComposer();
  connect();
})();
