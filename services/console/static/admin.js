// The page answering a system's registration shows its secret once. Its address becomes the
// system's own page (history.replaceState: no request, no redirect, the secret in no URL), so that
// reloading it, or coming back to it, asks for that page — never the registration again.
"use strict";
for (const answer of document.querySelectorAll("[data-then-address]")) {
  const address = answer.dataset.thenAddress;
  if (address.startsWith("/console/")) {
    history.replaceState(null, "", address);
  }
}
