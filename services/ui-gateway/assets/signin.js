// Token sign-in: `vigil up` prints a link with the token in the fragment
// (never sent to a server, so never in a log); fill it in and submit.
(function () {
  const m = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (!m) return;
  const field = document.getElementById("token");
  const form = document.getElementById("token-form");
  history.replaceState(null, "", window.location.pathname + window.location.search);
  if (field && form) {
    field.value = decodeURIComponent(m[1]);
    form.submit();
  }
})();
