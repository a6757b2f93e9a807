// Login page: POST the secret as JSON, then go where the user was headed.
"use strict";
const form = document.getElementById("login-form");
const input = document.getElementById("secret");
const err = document.getElementById("login-error");
const submit = document.getElementById("login-submit");
function safeNext() {
  const n = new URLSearchParams(location.search).get("next") || "/";
  return n.startsWith("/") && !n.startsWith("//") ? n : "/";
}
form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  err.hidden = true;
  input.removeAttribute("aria-invalid");
  if (!input.value.trim()) {
    err.textContent = "Enter the admin token or the console password.";
    err.hidden = false;
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return;
  }
  submit.disabled = true;
  submit.textContent = "Logging in…";
  try {
    const r = await fetch("/api/v1/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ secret: input.value }),
      credentials: "same-origin",
    });
    if (r.ok) { location.assign(safeNext()); return; }
    const body = await r.json().catch(() => ({}));
    err.textContent = body.error || `Login failed (${r.status})`;
  } catch (e) {
    err.textContent = "Cannot reach the appliance: " + e.message;
  }
  err.hidden = false;
  input.setAttribute("aria-invalid", "true");
  input.select();
  submit.disabled = false;
  submit.textContent = "Log in";
});
