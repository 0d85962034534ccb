// The floor view stays live without reload: a server-sent "change" notice (or the
// periodic timer) makes the page fetch the tiles again and swap them in.
(function () {
  "use strict";
  const box = document.getElementById("floor-live");
  if (!box) { return; }
  let busy = false;
  let again = false;

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const resp = await fetch("/floor/tiles", {
        credentials: "same-origin", headers: { "Accept": "text/html" }, cache: "no-store",
      });
      if (resp.redirected || resp.status === 401 || resp.status === 403) {
        window.location.reload();  // signed out or disabled: show the sign-in page
        return;
      }
      if (resp.ok) {
        box.innerHTML = await resp.text();
        box.dataset.refreshed = String(Date.now());
      }
    } catch (err) {
      // The console is restarting: the timer and the stream's reconnect try again.
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }

  const stream = new EventSource("/floor/stream");
  stream.addEventListener("change", refresh);
  stream.addEventListener("open", () => { document.body.dataset.live = "yes"; });
  window.setInterval(refresh, 5000);
})();
