// icc dashboard: live updates without a reload. Polls /healthz about every second (0.8 s); when the store's change
// stamp differs from the one the page was rendered at (<main data-stamp>), fetches this page again and swaps in
// its <main> (the server renders and escapes everything; a page parsed by DOMParser runs no script). Keyboard focus is kept on the element with the same id.
(function () {
  "use strict";
  var stamp = null;
  var busy = false;
  var live = document.getElementById("live");

  function refresh() {
    return fetch(location.href, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (!r.ok) { return; }
      return r.text().then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("main");
        var current = document.getElementById("main");
        if (!fresh || !current) { return; }
        var focused = document.activeElement && current.contains(document.activeElement) ? document.activeElement.id : null;
        if (document.activeElement && current.contains(document.activeElement) && !focused &&
            document.activeElement.tagName !== "A" && document.activeElement.tagName !== "BUTTON") {
          return; // typing into a field without an id: leave the page alone
        }
        current.replaceWith(document.adoptNode(fresh));
        if (focused) {
          var again = document.getElementById(focused);
          if (again) { again.focus(); }
        }
      });
    });
  }

  function poll() {
    if (busy || document.hidden) { setTimeout(poll, 800); return; }
    busy = true;
    fetch("/healthz", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (live) { live.classList.toggle("stale", !data); }
        var main = document.getElementById("main");
        var shown = main && main.dataset.stamp;
        if (!data || !data.stamp || !shown) { return; }
        if (data.stamp !== shown && data.stamp !== stamp) { stamp = data.stamp; return refresh(); }
      })
      .catch(function () { if (live) { live.classList.add("stale"); } })
      .then(function () { busy = false; setTimeout(poll, 800); });
  }

  setTimeout(poll, 800);
}());
