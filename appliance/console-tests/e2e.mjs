// End-to-end test of the web console in headless Chromium (Debian's /usr/bin/chromium)
// driven by playwright-core. Started by appliance/tests/console_browser.rs against a real
// `appliance serve` (`cargo test -p appliance --test console_browser`). The harness plays
// the server's agent: this script prints `@agent register|wipe` and reads `@ok <value>` or
// `@err <message>` back on stdin; the harness answers with the synthetic agent speaking the
// agent gRPC API (CreateServer with a hardware inventory, heartbeats, NextAction,
// MarkServerAsWiped), exactly as a PXE-booted agent does.
//
// Steps: log in (a wrong secret first), see fixtures applied through the admin API raise
// the overview counts without a reload, see a server registered by the agent appear in
// the servers table without a reload or navigation, accept it (confirmed in a dialog,
// reflected live and in `appliance ctl`), watch the agent wipe it to available, cordon it,
// wipe it on demand (confirmed; accepted live, then available again after the agent's
// wipe), see disabled power actions, edit a ServerClass with a bad field and see the error
// at its line and field, log out and be refused afterwards, log in again with a `next`
// naming another host and land on the box's own front page. Screenshots of every
// main page at laptop and phone widths go to SHOTS_DIR; first-load page weights to
// SHOTS_DIR/page-weights.json. Exits non-zero on the first failed check.

import { execFileSync } from "node:child_process";
import { writeFileSync, readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

import { BASE, DATA_DIR, SHOTS, TOKEN, asker, at, check, fail, finish, launch } from "./harness.mjs";

const BIN = process.env.APPLIANCE_BIN;
const HERE = dirname(fileURLToPath(import.meta.url));

const LAPTOP = { width: 1366, height: 860 };
const PHONE = { width: 390, height: 844 };
let NEW_SERVER = ""; // the UUID the agent registers

// The agent, played by the Rust harness over stdin/stdout (see the header).
const agent = asker("agent");
function ctl(...args) {
  return execFileSync(BIN, ["ctl", "--endpoint", BASE, "--data-dir", DATA_DIR, ...args], { encoding: "utf8" });
}
function apply(yaml) {
  return execFileSync(BIN, ["ctl", "--endpoint", BASE, "--data-dir", DATA_DIR, "apply", "-f", "-"], { input: yaml, encoding: "utf8" });
}

const browser = await launch();

async function shot(page, name) {
  await page.waitForTimeout(150);
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

try {
  const context = await browser.newContext({ viewport: LAPTOP });
  const page = await context.newPage();
  page.on("pageerror", (e) => { console.error("page error:", e.message); process.exitCode = 1; });
  page.on("console", (m) => { if (m.type() === "error" && !/401|Failed to load resource/.test(m.text())) console.error("console error:", m.text()); });

  at.step = "login";
  await page.goto(BASE + "/servers");
  check(new URL(page.url()).pathname === "/login", "an unauthenticated page visit redirects to /login");
  await shot(page, "login-laptop");
  await page.getByLabel("Admin token or console password").fill("definitely-wrong-secret");
  await page.getByRole("button", { name: "Log in" }).click();
  await page.locator("#login-error").waitFor({ state: "visible" });
  check((await page.locator("#login-error").textContent()).includes("wrong token or password"), "a wrong secret shows an error");
  await page.getByLabel("Admin token or console password").fill(TOKEN);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForURL(BASE + "/servers");
  check(true, "login with the admin token lands on the page asked for");
  const cookies = await context.cookies();
  const sc = cookies.find((c) => c.name === "appliance_session");
  check(sc && sc.httpOnly && sc.sameSite === "Strict", "session cookie is HttpOnly and SameSite=Strict");
  await page.locator("#live.on").waitFor();
  check(true, "the live stream connected");

  at.step = "overview live";
  await page.getByRole("link", { name: "Overview" }).click();
  await page.locator("#state-counts").waitFor();
  await page.evaluate(() => { window.__noReload = "still here"; });
  const before = Number(await page.locator('[data-count="total"]').textContent());
  apply(readFileSync(join(HERE, "fixtures.yaml"), "utf8"));
  await page.waitForFunction((n) => Number(document.querySelector('[data-count="total"]').textContent) >= n + 5, before);
  check(await page.evaluate(() => window.__noReload === "still here"), "overview counts updated live, without a reload");
  await page.locator("#events li").first().waitFor();
  check(await page.locator("#events li").count() > 0, "recent events listed");
  await shot(page, "overview-laptop");

  at.step = "server appears";
  await page.getByRole("link", { name: "Servers", exact: true }).click();
  await page.locator("#servers-table").waitFor();
  await page.evaluate(() => { window.__noReload = "servers"; });
  let navigations = 0;
  const countNav = (f) => { if (f === page.mainFrame()) navigations += 1; };
  page.on("framenavigated", countNav);
  const pathBefore = page.url();
  // The synthetic agent registers the server over the agent gRPC API, as after a PXE boot.
  NEW_SERVER = await agent("register");
  check(/^[0-9a-f-]{36}$/.test(NEW_SERVER), `the agent registered ${NEW_SERVER}`);
  const row = page.locator(`tr[data-server="${NEW_SERVER}"]`);
  await row.waitFor();
  page.off("framenavigated", countNav);
  check(navigations === 0 && page.url() === pathBefore, "no navigation happened while the server appeared");
  check(await page.evaluate(() => window.__noReload === "servers"), "the agent's server appeared in the table without a reload");
  check((await row.locator(".badge").first().textContent()) === "discovered", "it is shown as discovered");
  check((await row.textContent()).includes("2 × 32c"), "with the CPU inventory the agent reported (2 sockets, 32 cores)");
  await shot(page, "servers-laptop");

  at.step = "filter and sort";
  await page.getByLabel("State").selectOption("discovered");
  await page.waitForFunction(() => [...document.querySelectorAll("#servers-table tbody tr")].every((r) => r.querySelector(".badge").textContent === "discovered"));
  check(new URL(page.url()).searchParams.get("state") === "discovered", "state filter is in the URL and applied server-side");
  await page.getByRole("button", { name: "Clear" }).click();
  await page.getByRole("button", { name: /Memory/ }).click();
  await page.waitForFunction(() => new URL(location.href).searchParams.get("sort") === "memory");
  check(true, "sorting by memory");

  at.step = "accept";
  await page.getByRole("link", { name: "e2e-node" }).click();
  await page.locator("#server-state").waitFor();
  await page.evaluate(() => { window.__noReload = "detail"; });
  const badgeIs = (want) => page.waitForFunction((w) => document.querySelector("#server-state .badge").textContent === w, want);
  const stored = () => JSON.parse(ctl("get", "server", NEW_SERVER, "-o", "json"));
  check(await page.locator('[data-action="power-on"]').isDisabled(), "power on is disabled for a server without a BMC");
  check((await page.locator('[data-action="power-on"]').getAttribute("title")).includes("no BMC"), "…with a tooltip saying why");
  check(await page.locator('[data-action="wipe"]').isDisabled(), "wipe is disabled for a discovered server");
  check((await page.locator('[data-action="wipe"]').getAttribute("title")).includes("never wipes a server that was not accepted"), "…with the state machine's reason");
  await page.locator('[data-action="accept"]').click();
  await page.locator("dialog#confirm[open]").waitFor();
  await page.getByRole("button", { name: "Accept" }).last().click();
  await page.waitForFunction(() => document.querySelector("#server-state .badge").textContent !== "discovered");
  check(stored().spec.accepted === true, "accept reached the store (ctl get shows accepted: true)");
  check(await page.evaluate(() => window.__noReload === "detail"), "accepted state shown live, without a reload");

  at.step = "agent wipes after accept";
  check((await agent("wipe")) === "wiping", "the agent's NextAction said WIPE; it wiped and reported it");
  await badgeIs("available");
  check(stored().status.state === "available" && stored().status.isClean === true, "available and clean in the store");
  check(await page.evaluate(() => window.__noReload === "detail"), "available shown live, without a reload");

  at.step = "cordon";
  await page.locator('[data-action="cordon"]').click();
  await page.locator("dialog#confirm[open]").waitFor();
  await page.locator("#confirm-ok").click();
  await page.locator("#server-state .b-cordoned").waitFor();
  check(stored().spec.cordoned === true, "cordon reached the store");
  check(await page.locator('[data-action="uncordon"]').isVisible(), "uncordon offered once cordoned");

  at.step = "wipe on demand";
  const wipe = page.locator('[data-action="wipe"]');
  await page.waitForFunction(() => !document.querySelector('[data-action="wipe"]').disabled);
  check(true, "wipe is offered for an available server");
  await wipe.click();
  await page.locator("dialog#confirm[open]").waitFor();
  check((await page.locator("#confirm-text").textContent()).includes("Data on them is destroyed"), "the wipe asks for confirmation and says what it does");
  await shot(page, "server-wipe-confirm-laptop");
  await page.locator("#confirm-ok").click();
  await badgeIs("accepted");
  check(stored().status.state === "accepted" && stored().status.isClean === false, "the store has it dirty again (accepted, not clean)");
  check(stored().spec.cordoned === true, "…still cordoned");
  await page.locator("#lifecycle li", { hasText: "wipe-requested" }).first().waitFor();
  check(true, "the lifecycle history shows the wipe request");
  await page.waitForFunction(() => document.querySelector('[data-action="wipe"]').disabled);
  check((await wipe.getAttribute("title")).includes("already told to wipe"), "while dirty, wipe is disabled with the reason");
  check((await agent("wipe")) === "wiping", "the agent's NextAction said WIPE again; it wiped");
  await badgeIs("available");
  check(stored().status.isClean === true, "clean again in the store");
  check(await page.evaluate(() => window.__noReload === "detail"), "the whole wipe was shown live, without a reload");
  await shot(page, "server-detail-laptop");

  at.step = "csrf";
  // Forged mutations from the logged-in browser: no token, a wrong token, and (through the
  // context's request API, which sends the session cookie) the right token from another
  // origin. Each is refused and the server stays cordoned.
  const uncordon = `/api/v1/servers/${NEW_SERVER}/actions/uncordon`;
  const post = (headers) => page.evaluate(async ([u, h]) => (await fetch(u, { method: "POST", headers: h })).status, [uncordon, headers]);
  check((await post({})) === 403, "a mutation without the CSRF token is refused (403)");
  check((await post({ "x-csrf-token": "forged-token" })) === 403, "a mutation with a wrong CSRF token is refused (403)");
  const csrf = (await (await page.request.get(BASE + "/api/v1/session")).json()).csrf;
  const cross = await page.request.post(BASE + uncordon, { headers: { "x-csrf-token": csrf, origin: "http://evil.example" } });
  check(cross.status() === 403 && /cross-origin/.test(await cross.text()), "a cross-origin mutation is refused even with the token (403)");
  check(stored().spec.cordoned === true, "none of them changed anything: still cordoned");

  at.step = "class edit with a bad field";
  await page.getByRole("link", { name: "Classes", exact: true }).click();
  await page.getByRole("link", { name: "control-plane" }).click();
  const ta = page.locator("textarea#yaml");
  await ta.waitFor();
  const good = await ta.inputValue();
  const lines = good.split("\n");
  const specLine = lines.indexOf("spec:");
  check(specLine >= 0, "the class YAML has a spec");
  lines.splice(specLine + 1, 0, "  cpus: 4");
  await ta.fill(lines.join("\n"));
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("#yaml-error").waitFor({ state: "visible" });
  const errText = await page.locator("#yaml-error").textContent();
  check(errText.includes("spec.cpus") && errText.includes("unknown field"), `the error names the field: ${errText.trim()}`);
  check(await page.locator(`.gutter span.err[data-line="${specLine + 2}"]`).count() === 1, `the error is marked at line ${specLine + 2} where the field is`);
  check((await ta.getAttribute("aria-invalid")) === "true", "the editor is marked invalid for assistive tech");
  check(!/cpus/.test(ctl("get", "serverclass", "control-plane", "-o", "yaml")), "nothing was written");
  await shot(page, "class-edit-error-laptop");
  // Fix it and save for real.
  await ta.fill(good.replace("tier: control", "tier: control-plane"));
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator(".toast").filter({ hasText: "configured" }).waitFor();
  check(/tier: control-plane/.test(ctl("get", "serverclass", "control-plane", "-o", "yaml")), "a valid edit is saved");
  await page.getByRole("link", { name: "Classes", exact: true }).click();
  await page.locator("table").waitFor();
  await shot(page, "classes-laptop");

  at.step = "environment";
  await page.getByRole("link", { name: "Environments" }).click();
  await page.getByRole("link", { name: "default" }).click();
  await page.locator("textarea#yaml").waitFor();
  check((await page.locator("#assets .badge").first().textContent()).includes("ready"), "environment asset status shown");
  await shot(page, "environment-laptop");

  at.step = "settings";
  await page.getByRole("link", { name: "Settings" }).click();
  await page.locator("#dhcp-mode").waitFor();
  check((await page.locator("#dhcp-mode").getAttribute("data-mode")) === "off", "settings show the DHCP mode the box runs with");
  check((await page.locator("#pools").textContent()).includes("10.10.0.100 – 10.10.0.199"), "settings show the configured address pool");
  await shot(page, "settings-laptop");

  at.step = "phone";
  const phone = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 2, isMobile: true, hasTouch: true, storageState: await context.storageState() });
  const pp = await phone.newPage();
  for (const [path, name, wait] of [["/", "overview", "#state-counts"], ["/servers", "servers", "#servers-table"], [`/servers/${NEW_SERVER}`, "server-detail", "#server-state"],
    ["/classes", "classes", "table"], ["/environments/default", "environment", "textarea"], ["/settings", "settings", "#dhcp-mode"]]) {
    await pp.goto(BASE + path);
    await pp.locator(wait).first().waitFor();
    const overflow = await pp.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, `${name} fits the phone width (overflow ${overflow}px)`);
    await shot(pp, `${name}-phone`);
  }
  const loginPhone = await (await browser.newContext({ viewport: PHONE, deviceScaleFactor: 2, isMobile: true })).newPage();
  await loginPhone.goto(BASE + "/login");
  await shot(loginPhone, "login-phone");

  at.step = "page weights";
  const weights = {};
  for (const [path, name, wait] of [["/login", "login", "#secret"], ["/", "overview", "#state-counts"], ["/servers", "servers", "#servers-table"],
    [`/servers/${NEW_SERVER}`, "server-detail", "#server-state"], ["/classes", "classes", "table"], ["/environments/default", "environment", "textarea"], ["/settings", "settings", "#dhcp-mode"]]) {
    const ctx = await browser.newContext({ viewport: LAPTOP, storageState: path === "/login" ? undefined : await context.storageState() });
    const p = await ctx.newPage();
    const cdp = await ctx.newCDPSession(p);
    await cdp.send("Network.enable");
    let bytes = 0, requests = 0;
    const encodings = {};
    cdp.on("Network.loadingFinished", (e) => { bytes += e.encodedDataLength; requests += 1; });
    cdp.on("Network.responseReceived", (e) => {
      const file = new URL(e.response.url).pathname.split("/").pop();
      const h = Object.fromEntries(Object.entries(e.response.headers).map(([k, v]) => [k.toLowerCase(), v]));
      encodings[file] = h["content-encoding"] || "identity";
    });
    await p.goto(BASE + path);
    await p.locator(wait).first().waitFor();
    await p.waitForTimeout(300);
    weights[name] = { kib: Math.round((bytes / 1024) * 10) / 10, requests };
    const script = path === "/login" ? "login.js" : "app.js";
    check(encodings[script] === "gzip", `${name}: ${script} arrived gzip-compressed`);
    await ctx.close();
  }
  writeFileSync(join(SHOTS, "page-weights.json"), JSON.stringify(weights, null, 2));
  console.log("page weights (KiB transferred on first load, assets gzip-compressed):", JSON.stringify(weights));

  at.step = "logout";
  await page.getByRole("button", { name: "Log out" }).click();
  await page.waitForURL(BASE + "/login");
  const after = await page.request.get(BASE + "/api/v1/overview");
  check(after.status() === 401, "after logout the API answers 401");
  await page.goto(BASE + "/servers");
  check(new URL(page.url()).pathname === "/login", "after logout pages redirect to /login");

  at.step = "login redirect";
  // A `next` that the browser would resolve to another host (`/\host` is `//host` to a
  // browser; here a closed loopback port, so nothing leaves the machine) must land on the
  // box's own front page instead.
  const origin = new URL(BASE).origin;
  await page.goto(BASE + "/login?next=" + encodeURIComponent("/\\127.0.0.9:9/x"));
  await page.getByLabel("Admin token or console password").fill(TOKEN);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForURL((u) => u.origin !== origin || u.pathname !== "/login");
  check(page.url() === BASE + "/", `login with next=/\\127.0.0.9:9/x (another origin) lands on the box's / (at ${page.url()})`);
  console.log("console e2e: all checks passed");
} catch (e) {
  fail(e);
} finally {
  await finish(browser);
}
