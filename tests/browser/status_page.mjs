// status_page.mjs URL SCREENSHOT [WSURL TOKEN] - drives Debian's chromium
// (headless, through playwright-core; no browser download) against hubd's
// status page. With WSURL and TOKEN, the page also opens a device session
// the documented browser way, new WebSocket(WSURL, ["hub.v1",
// "bearer." + TOKEN]), pings and prints "ws PROTOCOL pong".
// Run by tests/integration/test_status_page.py, which controls the devices
// and talks to this script over stdin/stdout, one line each:
//   we print "online b-dev-1"  once the page shows device b-dev-1 online
//   (no device has groups yet: the list must have no groups column);
//   then wait for "closed" on stdin (the test put b-dev-2 in groups
//   "boilers" and "ops-team", kettle-7 in "boilers", and closed its
//   session); we print "offline b-dev-1" once the page shows it offline,
//   check the groups column, search for "boiler", check the list, click a
//   device for its groups and events, save the screenshot and print
//   "done". Any failure: a message and exit 1.
import { chromium } from "playwright-core";
import readline from "node:readline";

const [url, shot, wsUrl, wsToken] = process.argv.slice(2);
const DEV = "b-dev-1";
const T = 30000; // per step; the page polls every 2 s

const lines = readline.createInterface({ input: process.stdin });
const waiting = [];
lines.on("line", (l) => { const w = waiting.shift(); if (w) w(l.trim()); });
const nextLine = () => new Promise((res) => waiting.push(res));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // the hub's wss listener has the test's self-signed certificate
  args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
         "--ignore-certificate-errors",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
let code = 1;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  const resp = await page.goto(url, { waitUntil: "load" });
  if (resp.status() !== 200) throw new Error("GET / answered " + resp.status());
  const row = (id) => page.locator(`#devices tbody tr[data-id="${id}"]`);
  const col = (id, name) => row(id).locator(`td[data-col="${name}"]`);

  await col(DEV, "online").filter({ hasText: /^online$/ }).waitFor({ timeout: T });
  await page.locator("#ready", { hasText: /^ready$/ }).waitFor({ timeout: T });
  const conns = Number((await page.locator("#connections").textContent()).replace(/\D/g, ""));
  if (!(conns >= 1)) throw new Error("connections card shows " + conns);
  // no device has groups: no groups column
  if (await page.locator("#groups-col").isVisible() ||
      await page.locator('#devices td[data-col="groups"]').count())
    throw new Error("a groups column while no device has groups");
  console.log("online " + DEV);
  if ((await nextLine()) !== "closed") throw new Error("unexpected line from the test");
  await col(DEV, "online").filter({ hasText: /^offline$/ }).waitFor({ timeout: T });
  console.log("offline " + DEV);

  // groups: a column once a device has some, "–" for one without
  await col("b-dev-2", "groups").filter({ hasText: /^boilers, ops-team$/ }).waitFor({ timeout: T });
  await page.locator("#groups-col").waitFor({ state: "visible", timeout: T });
  for (const [id, want] of [["kettle-7", "boilers"], [DEV, "–"]]) {
    const got = await col(id, "groups").textContent();
    if (got !== want) throw new Error(`groups of ${id}: "${got}", want "${want}"`);
  }

  // the newest presence events list the transition
  await page.locator("#events tbody tr", { hasText: DEV }).filter({ hasText: "offline" })
    .first().waitFor({ timeout: T });

  // search: only the devices whose id or name holds "boiler"
  await page.fill("#search", "boiler");
  await page.waitForFunction(() => {
    const ids = [...document.querySelectorAll("#devices tbody tr[data-id]")].map((r) => r.dataset.id);
    return ids.length === 2 && ids.includes("b-dev-2") && ids.includes("kettle-7");
  }, null, { timeout: T });

  // a device's events on click
  await row("b-dev-2").click();
  await page.locator("#events-title", { hasText: "events of b-dev-2" }).waitFor({ timeout: T });
  const tags = await page.locator("#device-groups .tag").allTextContents();
  if (tags.join(" ") !== "boilers ops-team") throw new Error("device groups: " + tags.join(" "));
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll("#events tbody tr")];
    return rows.length > 0 && rows.every((r) => r.children[1].textContent === "b-dev-2");
  }, null, { timeout: T });

  // back to the whole fleet for the picture
  await page.fill("#search", "");
  await page.click("#events-all");
  await page.waitForFunction(() => document.querySelectorAll("#devices tbody tr[data-id]").length >= 4,
                             null, { timeout: T });
  await page.waitForTimeout(2500); // one more poll: rates and chart drawn
  await page.screenshot({ path: shot, fullPage: true });
  if (wsUrl) {
    // a page of the hub's own origin (its 404 for "/"): the status page's
    // CSP allows no other connect-src, and chromium's local network checks
    // refuse loopback from a page that is not itself on loopback
    const wsPage = await browser.newPage();
    await wsPage.goto(wsUrl.replace(/^wss:/, "https:").replace(/\/v1\/.*/, "/"));
    const got = await wsPage.evaluate(([u, t]) => new Promise((resolve) => {
      const ws = new WebSocket(u, ["hub.v1", "bearer." + t]);
      ws.onopen = () => ws.send(JSON.stringify({ op: "ping" }));
      ws.onmessage = (ev) => {
        const m = JSON.parse(ev.data);
        if (m.op === "pong") { ws.close(); resolve(ws.protocol + " pong"); }
      };
      ws.onclose = (ev) => resolve("closed " + ev.code);
      setTimeout(() => resolve("no pong within 20 s, state " + ws.readyState), 20000);
    }), [wsUrl, wsToken]);
    console.log("ws " + got);
  }
  if (errors.length) throw new Error("page errors: " + errors.join("; "));
  console.log("done");
  code = 0;
} catch (e) {
  console.error("status_page: " + (e && e.stack ? e.stack : e));
} finally {
  await browser.close();
  lines.close();
}
process.exit(code);
