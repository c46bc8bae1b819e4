// pgplane console: live state badges over server-sent events, the delete
// confirmation, and copy buttons. Every page works without this script.
"use strict";

(function () {
  const list = document.getElementById("instance-list");
  const instance = document.getElementById("instance");

  function setBadge(badge, state) {
    if (!badge || badge.textContent === state) return;
    badge.textContent = state;
    badge.className = "badge st-" + state;
  }

  function showNote() {
    const note = document.getElementById("live-note");
    if (note) note.hidden = false;
  }

  function onChange(change) {
    if (list) {
      const row = list.querySelector('tr[data-id="' + change.id + '"]');
      if (row) {
        setBadge(row.querySelector('[data-role="state"]'), change.state);
        row.classList.toggle("deleted", change.state === "Deleted");
      } else if (change.state !== "Deleted") {
        showNote();
      }
    }
    if (instance && instance.dataset.id === change.id) {
      const badge = instance.querySelector('h1 [data-role="state"]');
      if (badge && badge.textContent !== change.state) {
        setBadge(badge, change.state);
        showNote();
      }
    }
  }

  function listen(since) {
    if (!window.EventSource) return;
    const url = "/api/v1/events" + (since ? "?since=" + encodeURIComponent(since) : "");
    const source = new EventSource(url);
    document.body.dataset.live = "connecting";
    source.addEventListener("hello", function () {
      document.body.dataset.live = "open";
    });
    source.addEventListener("instance", function (e) {
      try {
        onChange(JSON.parse(e.data));
      } catch (err) {
        /* a malformed event changes nothing */
      }
    });
    source.addEventListener("resync", showNote);
    source.onerror = function () {
      document.body.dataset.live = "reconnecting";
    };
  }

  const live = list || instance;
  if (live) listen(live.dataset.since);

  // Delete: the button is enabled once the name is typed (the server checks too).
  const confirm = document.getElementById("confirm");
  const del = document.getElementById("action-delete");
  if (confirm && del) {
    const update = function () {
      del.disabled = confirm.value.trim() !== confirm.dataset.expect;
    };
    confirm.addEventListener("input", update);
    update();
  }

  // Copy buttons appear only where the clipboard can be written.
  document.querySelectorAll("button.copy").forEach(function (button) {
    if (!navigator.clipboard) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      const target = document.getElementById(button.dataset.copy);
      if (!target) return;
      navigator.clipboard.writeText(target.textContent).then(function () {
        button.textContent = "Copied";
      });
    });
  });
})();
