// Posts the Zendesk sign-in form as soon as the page loads (the page has a
// <noscript> button for browsers without JavaScript). A page restored from the
// back/forward cache is reloaded instead, so Zendesk always gets a fresh token.
(function () {
  "use strict";
  var form = document.getElementById("zendesk-jwt");
  if (form) {
    form.submit();
  }
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) {
      window.location.reload();
    }
  });
})();
