// Login page: POST the secret as JSON, then go where the user was headed. The box decides
// whether `next` stays on it (console::redirect) and answers the path to go to.
"use strict";
const form = document.getElementById("login-form");
const input = document.getElementById("secret");
const err = document.getElementById("login-error");
const submit = document.getElementById("login-submit");
const next = new URLSearchParams(location.search).get("next") || "/";
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
      body: JSON.stringify({ secret: input.value, next }),
      credentials: "same-origin",
    });
    if (r.ok) {
      const body = await r.json().catch(() => ({}));
      location.assign(typeof body.next === "string" ? body.next : "/");
      return;
    }
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
