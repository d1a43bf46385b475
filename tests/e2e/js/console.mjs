// Drives the web console in headless Chromium (playwright-core, Debian's /usr/bin/chromium) and
// prints one JSON line of what a person would see; tests/e2e/test_console.py asserts on it.
// Usage: node console.mjs ADMIN_URL TOKEN SHOTS_DIR BUCKET_KEY TOPIC_KEY
import { chromium } from "playwright-core";

const [admin, token, shots, bucketKey, topicKey] = process.argv.slice(2);
const seen = { consoleErrors: [], phases: {} };
let phase = "start";
const step = (name) => { phase = name; };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("console", (msg) => { if (msg.type() === "error") seen.consoleErrors.push({ phase, text: msg.text() }); });
  page.on("pageerror", (error) => seen.consoleErrors.push({ phase, text: `page error: ${error.message}` }));
  const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });

  step("wrong-token");
  await page.goto(`${admin}/console`);
  await page.fill("#token", "not-the-token");
  await page.click("#login-form button");
  await page.waitForFunction(() => document.querySelector("#login-error").textContent.includes("refused"));
  seen.phases.wrongToken = { error: await page.textContent("#login-error"), navHidden: await page.isHidden("#nav") };
  await shot("login-refused");

  step("login");
  await page.fill("#token", token);
  await page.click("#login-form button");
  await page.waitForSelector("#members tbody tr[data-node]");
  await page.waitForFunction(() => document.querySelectorAll("#members tbody tr[data-state=alive]").length === 3);
  seen.phases.members = await page.$$eval("#members tbody tr", (rows) => rows.map((r) => ({ id: r.dataset.node, state: r.dataset.state })));

  step("owner");
  await page.fill("#owner-key", bucketKey);
  await page.click("#owner-form button");
  await page.waitForFunction(() => document.querySelector("#owner-result").dataset.owner);
  seen.phases.owner = { shown: await page.textContent("#owner-result"), owner: await page.getAttribute("#owner-result", "data-owner"), marked: await page.isVisible("#ring-mark") };
  await shot("cluster");

  step("actors");
  await page.click("#nav-actors");
  const bucketRow = `#actor-table tbody tr[data-key="${bucketKey}"]`;
  await page.waitForSelector(bucketRow);
  seen.phases.bucket = { nodes: await page.$$eval(bucketRow, (rows) => rows.map((r) => r.dataset.node)) };
  const handled = () => page.$eval(`#actor-table tbody tr[data-key="${topicKey}"] td[data-field=handled]`, (td) => Number(td.textContent));
  await page.waitForSelector(`#actor-table tbody tr[data-key="${topicKey}"]`);
  const first = await handled();
  await page.waitForFunction(([key, before]) => {
    const td = document.querySelector(`#actor-table tbody tr[data-key="${key}"] td[data-field=handled]`);
    return td && Number(td.textContent) > before + 5;
  }, [topicKey, first], { timeout: 15000 });
  seen.phases.live = { first, later: await handled(), reloads: 0 };
  await shot("actors");

  step("filter");
  await page.selectOption("#filter-kind", "topic");
  seen.phases.filter = { kinds: await page.$$eval("#actor-table tbody tr", (rows) => [...new Set(rows.map((r) => r.children[1].textContent))]) };
  await page.selectOption("#filter-kind", "");
  await page.click("#actor-table thead th:nth-child(7) button"); // Handled, ascending
  await page.click("#actor-table thead th:nth-child(7) button"); // then descending
  seen.phases.sorted = await page.$$eval("#actor-table tbody tr td[data-field=handled]", (tds) => tds.map((td) => Number(td.textContent)));
  seen.phases.sortLabel = await page.getAttribute("#actor-table thead th:nth-child(7)", "aria-sort");

  step("keyboard");
  await page.goto(`${admin}/console/#/overview`);
  await page.waitForSelector("#members tbody tr[data-node]");
  await page.focus("#nav-overview");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#actors:not([hidden])");
  seen.phases.keyboard = { page: await page.evaluate(() => location.hash) };

  step("phone");
  await page.setViewportSize({ width: 390, height: 844 });
  seen.phases.phone = { overflow: await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth) };
  await shot("actors-phone");
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
