// A file over the upload limit is refused here, on its field, before it is sent: sent, the gateway
// would refuse its body with its own 413 (problem+json), not with the console's page.
"use strict";
for (const input of document.querySelectorAll("input[type=file][data-max-bytes]")) {
  input.addEventListener("change", () => {
    const large = [...input.files].some((file) => file.size > Number(input.dataset.maxBytes));
    input.setCustomValidity(large ? input.dataset.tooLarge : "");
    if (large) {
      input.reportValidity();
    }
  });
}
