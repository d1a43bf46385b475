// Drives the console's overview (live charts of every node) and every page at a phone's width in
// headless Chromium, then watches a deleted bucket's actor leave the actors page; prints one JSON
// line of what a person would see, which tests/e2e/test_console_overview.py asserts on.
// Usage: node overview.mjs ADMIN_URL TOKEN SHOTS_DIR NODES BUCKET_KEY
// With BUCKET_KEY's row on the actors page it prints {"ask": "delete-bucket"}: the test deletes it.
import { openConsole, signIn } from "./browser.mjs";

const [admin, token, shots, nodes, bucketKey] = process.argv.slice(2);
const PAGES = ["overview", "actors", "buckets", "topics", "routes", "modules", "audit"];
const TRAFFIC = ["messages-in", "messages-out", "s3-requests", "errors"];
const { browser, page, seen, step, shot } = await openConsole(shots);
try {
  step("login");
  await page.goto(`${admin}/console`);
  await signIn(page, token);
  await page.waitForSelector("#overview:not([hidden])");
  seen.phases.landing = { hash: await page.evaluate(() => location.hash), title: await page.title() };

  step("charts");
  // Every chart has a line of several points per node, and the traffic charts have risen above 0.
  await page.waitForFunction(([n, traffic]) => {
    const figures = [...document.querySelectorAll("#charts figure")];
    const drawn = figures.length > 0 && figures.every((f) => {
      const paths = [...f.querySelectorAll("svg path.series")];
      return paths.length === n && paths.every((p) => Number(p.dataset.points) >= 2);
    });
    return drawn && traffic.every((id) => Number(document.querySelector(`#charts figure[data-chart=${id}]`).dataset.peak) > 0);
  }, [Number(nodes), TRAFFIC], { timeout: 60000 });
  const points = () => page.$eval("#charts figure path.series", (p) => Number(p.dataset.points));
  const before = await points();
  seen.phases.charts = await page.$$eval("#charts figure", (figures) => figures.map((f) => ({
    id: f.dataset.chart, peak: Number(f.dataset.peak), caption: f.querySelector("figcaption").textContent,
    svgs: f.querySelectorAll("svg").length, unit: f.querySelector("svg text.unit")?.textContent,
    ticks: [...f.querySelectorAll("svg text.tick")].map((t) => t.textContent),
    paths: [...f.querySelectorAll("svg path.series")].map((p) => ({ node: p.dataset.node, points: Number(p.dataset.points),
      d: p.getAttribute("d"), stroke: p.getAttribute("stroke") })),
    legend: [...f.querySelectorAll(".legend li")].map((li) => li.textContent) })));
  seen.phases.nodesTable = await page.$$eval("#members tbody tr", (rows) => rows.map((r) => ({ node: r.dataset.node,
    memory: r.querySelector("[data-field=memory]").textContent, disk: r.querySelector("[data-field=disk]").textContent })));
  await shot("overview");
  // The page refreshes on its own: a new sample is drawn without a reload.
  await page.waitForFunction((n) => Number(document.querySelector("#charts figure path.series").dataset.points) > n, before,
    { timeout: 20000 });
  seen.phases.refresh = { before, after: await points() };

  step("phone");
  await page.setViewportSize({ width: 390, height: 844 });
  seen.phases.phone = {};
  for (const name of PAGES) {
    await page.click(`#nav-${name}`); // the navigation is usable at this width
    await page.waitForSelector(`#${name}:not([hidden])`);
    await page.waitForTimeout(1500); // its rows and charts are in
    seen.phases.phone[name] = await page.evaluate(() => ({
      scrollWidth: document.scrollingElement.scrollWidth, innerWidth: window.innerWidth,
      navOutside: [...document.querySelectorAll("nav a")].filter((a) => a.getBoundingClientRect().right > window.innerWidth).length,
      chartsOutside: [...document.querySelectorAll("#charts svg")].filter((s) => s.getBoundingClientRect().right > window.innerWidth).length,
    }));
    if (name === "overview" || name === "actors") await shot(`${name}-phone`);
  }

  step("deleted");
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.click("#nav-actors");
  const row = `#actor-table tbody tr[data-key="${bucketKey}"]`;
  await page.waitForSelector(row);
  console.log(JSON.stringify({ ask: "delete-bucket" }));
  const asked = Date.now();
  await page.waitForSelector(row, { state: "detached", timeout: 20000 });
  seen.phases.deleted = { goneAfterMs: Date.now() - asked, count: await page.textContent("#actor-count") };
  await shot("actors-after-delete");
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
