// The console's SideroLink panels in headless Chromium (Debian's /usr/bin/chromium) driven by
// playwright-core. Started by appliance/tests/console_siderolink.rs against a real
// `appliance serve` whose allocated server NODE has a real WireGuard node (wireguard-go in a
// network namespace) provisioned through the box's Provision API. The harness plays the
// Talos node: this script prints `@node line K` (one Talos JSON log line, "[talos] console
// line K", sent over TCP through the tunnel to [<prefix>::1]:4001) or `@node events` (Talos's
// install events published over gRPC through the tunnel to [<prefix>::1]:4002) and reads
// `@ok <value>` or `@err <message>` back on stdin.
//
// Checks, on the server's page (/servers/NODE), each against what the page renders:
// the "Logs (SideroLink)" panel shows the lines the node sent before the page opened, in
// order, with their Talos time and level, and a line sent while the page is open appears
// without a reload; the "Boot timeline" panel shows the SideroLink-up step, and after the
// node's install events the "Install done" step (outcome ok), the Server's PXEBooted=True
// condition and its `installed` state appear, again without a reload. Screenshot to
// SHOTS_DIR/server-siderolink-laptop.png. Exits non-zero on the first failed check, so a
// missing panel (or one that shows nothing) fails.

import { join } from "node:path";

import { BASE, SHOTS, TOKEN, asker, at, check, fail, finish, launch } from "./harness.mjs";

const NODE = process.env.NODE_NAME;
const BEFORE = Number(process.env.LINES_BEFORE);
const node = asker("node");

const browser = await launch();

try {
  const context = await browser.newContext({ viewport: { width: 1366, height: 860 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => { console.error("page error:", e.message); process.exitCode = 1; });

  at.step = "login";
  await page.goto(BASE + `/servers/${NODE}`);
  await page.getByLabel("Admin token or console password").fill(TOKEN);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForURL(BASE + `/servers/${NODE}`);
  await page.locator("#server-state").waitFor();
  await page.evaluate(() => { window.__noReload = "siderolink"; });
  const still = async () => page.evaluate(() => window.__noReload === "siderolink");

  at.step = "log tail";
  const heading = page.locator("#h-logs");
  await heading.waitFor({ timeout: 10000 });
  check((await heading.textContent()).includes("Logs (SideroLink)"), "the server page has the SideroLink logs panel");
  const rows = page.locator("#server-logs .log-line");
  await page.waitForFunction((n) => document.querySelectorAll("#server-logs .log-line").length >= n, BEFORE, { timeout: 15000 });
  const shown = await rows.allTextContents();
  const want = [...Array(BEFORE).keys()].map((k) => `[talos] console line ${k}`);
  check(shown.length === BEFORE && shown.every((t, k) => t.endsWith(want[k])), `the ${BEFORE} lines the node sent through the tunnel are shown, in order (${JSON.stringify(shown)})`);
  check(shown[0].startsWith("2026-12-06T07:00:00.5Z info"), "with the line's Talos time and level");
  check(await page.locator("#server-logs .log-line.lvl-info").count() === BEFORE, "styled by their Talos level");
  await page.waitForFunction(() => document.querySelector("#logs-status").textContent === "live");
  check(true, "the tail says it is live");
  await node(`line ${BEFORE}`);
  await page.locator("#server-logs .log-line", { hasText: `[talos] console line ${BEFORE}` }).waitFor({ timeout: 15000 });
  check(await rows.count() === BEFORE + 1 && await still(), "a line sent through the tunnel while the page is open appears live, without a reload");

  at.step = "boot timeline";
  const boot = page.locator("#h-boot");
  await boot.waitFor();
  check((await boot.textContent()) === "Boot timeline", "the server page has the boot timeline panel");
  const up = page.locator('#boot-timeline tr[data-step="siderolink-up"]');
  await up.first().waitFor({ timeout: 10000 });
  check((await up.first().textContent()).includes("SideroLink up"), "the timeline shows SideroLink up (the node's handshake)");
  check(await page.locator('#boot-timeline tr[data-step="installed"]').count() === 0, "no install step before Talos reports it");
  await node("events");
  const installed = page.locator('#boot-timeline tr[data-step="installed"][data-outcome="ok"]');
  await installed.waitFor({ timeout: 15000 });
  check((await installed.textContent()).includes("Install done") && (await installed.textContent()).includes("Talos reported the installation done"), "after the node's install events the timeline shows Install done (ok)");
  await page.waitForFunction(() => document.querySelector("#server-state .badge").textContent === "installed", null, { timeout: 10000 });
  check(true, "the server's state is shown as installed");
  const cond = page.locator("tr", { hasText: "PXEBooted" });
  await cond.first().waitFor({ timeout: 10000 });
  check((await cond.first().textContent()).includes("True"), "the PXEBooted=True condition is shown");
  check(await still(), "all of it live, without a reload");
  await page.waitForTimeout(150);
  await page.screenshot({ path: join(SHOTS, "server-siderolink-laptop.png"), fullPage: true });
  console.log("console siderolink: all checks passed");
} catch (e) {
  fail(e);
} finally {
  await finish(browser);
}
