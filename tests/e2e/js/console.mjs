// Drives the web console in headless Chromium (playwright-core, Debian's /usr/bin/chromium) and
// prints one JSON line of what a person would see; tests/e2e/test_console.py asserts on it.
// Usage: node console.mjs ADMIN_URL TOKEN SHOTS_DIR BUCKET_KEY BUCKET_OWNER TOPIC_KEY IDLE_KEY IDLE_OWNER DLQ ROUTE
//        TRANSFORM MIDDLEWARE (the modules attached to TOPIC_KEY's topic and to ROUTE)
// Near the end it prints {"kill": true} and waits for the test to kill BUCKET_OWNER's node.
import { openConsole, signIn } from "./browser.mjs";

const [admin, token, shots, bucketKey, bucketOwner, topicKey, idleKey, idleOwner, dlq, route, transform, middleware] =
  process.argv.slice(2);
const { browser, page, seen, step, shot } = await openConsole(shots);
try {
  step("wrong-token");
  await page.goto(`${admin}/console`);
  await signIn(page, "not-the-token");
  await page.waitForFunction(() => document.querySelector("#login-error").textContent.includes("refused"));
  seen.phases.wrongToken = { error: await page.textContent("#login-error"), navHidden: await page.isHidden("#nav") };
  await shot("login-refused");

  step("login");
  await signIn(page, token);
  await page.waitForSelector("#members tbody tr[data-node]");
  await page.waitForFunction(() => document.querySelectorAll("#members tbody tr[data-state=alive]").length === 3);
  seen.phases.members = await page.$$eval("#members tbody tr", (rows) => rows.map((r) => ({
    id: r.dataset.node, state: r.dataset.state, uptime: r.cells[3].textContent })));

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

  step("detail");
  await page.goto(`${admin}/console/#/actor/${encodeURIComponent(bucketOwner)}/${encodeURIComponent(bucketKey)}`);
  await page.waitForSelector("#actor-fields dd[data-field=kind]");
  seen.phases.detail = { title: await page.textContent("#actor-title"), kind: await page.textContent("#actor-fields dd[data-field=kind]"),
    gone: await page.isVisible("#actor-gone") };
  await shot("actor");

  step("restart");
  const restarts = () => page.$eval("#actor-fields dd[data-field=restarts]", (dd) => Number(dd.textContent));
  const restartsBefore = await restarts();
  let dialog = "";
  page.once("dialog", (d) => { dialog = d.message(); d.accept(); });
  await page.click("#restart");
  await page.waitForFunction(() => document.querySelector("#action-result").textContent.startsWith("Restarted"));
  await page.waitForFunction((n) => Number(document.querySelector("#actor-fields dd[data-field=restarts]")?.textContent) > n, restartsBefore);
  const restartsAfter = await restarts();
  await page.click("#nav-audit");
  const auditRow = `#audit-table tr[data-target="${bucketKey}"][data-action=restart]`;
  await page.waitForSelector(auditRow);
  seen.phases.restart = { dialog, before: restartsBefore, after: restartsAfter,
    outcome: await page.textContent(`${auditRow} td[data-field=outcome]`), node: await page.getAttribute(auditRow, "data-node"),
    actor: await page.textContent(`${auditRow} td[data-field=actor]`) };
  await shot("audit");

  step("passivate");
  await page.goto(`${admin}/console/#/actor/${encodeURIComponent(idleOwner)}/${encodeURIComponent(idleKey)}`);
  await page.waitForSelector("#actor-fields dd[data-field=kind]");
  page.once("dialog", (d) => d.accept());
  await page.click("#passivate");
  await page.waitForSelector("#actor-gone", { state: "visible" });
  await page.click("#nav-audit");
  await page.waitForSelector(`#audit-table tr[data-target="${idleKey}"][data-action=passivate]`);
  seen.phases.passivate = { outcome: await page.textContent(`#audit-table tr[data-target="${idleKey}"][data-action=passivate] td[data-field=outcome]`) };

  step("topics");
  await page.click("#nav-topics");
  const topicName = topicKey.replace(/^topic\//, "");
  const topicRow = `#topic-table tr[data-topic="${topicName}"]`;
  await page.waitForSelector(topicRow);
  const messages = () => page.$eval(`${topicRow} td[data-field=messages]`, (td) => Number(td.textContent));
  const before = await messages();
  await page.waitForFunction(([sel, n]) => Number(document.querySelector(`${sel} td[data-field=messages]`).textContent) > n, [topicRow, before]);
  await page.waitForFunction((sel) => Number(document.querySelector(`${sel} td[data-field=rate]`).textContent) > 0, topicRow);
  await page.waitForSelector("#group-table tr[data-group*=watchers]");
  seen.phases.topics = { before, after: await messages(), rate: Number(await page.textContent(`${topicRow} td[data-field=rate]`)),
    sparkline: await page.isVisible(`${topicRow} svg polyline`), group: await page.getAttribute("#group-table tr[data-group*=watchers]", "data-group") };
  await shot("topics");

  step("buckets");
  await page.click("#nav-buckets");
  const bucketName = bucketKey.replace(/^bucket\//, "");
  await page.waitForSelector(`#bucket-table tr[data-bucket="${bucketName}"]`);
  seen.phases.buckets = await page.$eval(`#bucket-table tr[data-bucket="${bucketName}"]`, (tr) => ({
    objects: Number(tr.querySelector("[data-field=objects]").textContent),
    bytes: Number(tr.querySelector("[data-field=bytes]").textContent),
    versioning: tr.children[3].textContent,
  }));
  await shot("buckets");
  await page.click("#nav-topics");

  step("requeue");
  const dlqButton = `#topic-table tr[data-topic="${dlq}"] button.requeue`;
  await page.waitForSelector(dlqButton);
  let requeueDialog = "";
  page.once("dialog", (d) => { requeueDialog = d.message(); d.accept(); });
  await page.click(dlqButton);
  await page.waitForFunction(() => document.querySelector("#topics-result").textContent.startsWith("Requeued"));
  seen.phases.requeue = { dialog: requeueDialog, result: await page.textContent("#topics-result") };

  step("routes");
  await page.click("#nav-routes");
  const routeRow = `#route-table tr[data-route="${route}"]`;
  await page.waitForSelector(routeRow);
  const routeRequests = () => page.$eval(`${routeRow} td[data-field=requests]`, (td) => Number(td.textContent));
  const requestsBefore = await routeRequests();
  await page.waitForFunction(([sel, n]) => Number(document.querySelector(`${sel} td[data-field=requests]`).textContent) > n, [routeRow, requestsBefore]);
  await page.waitForFunction((sel) => Number(document.querySelector(`${sel} td[data-field=rate]`).textContent) > 0, routeRow);
  const routeSeen = { before: requestsBefore, after: await routeRequests(), rate: Number(await page.textContent(`${routeRow} td[data-field=rate]`)),
    sparkline: await page.isVisible(`${routeRow} svg polyline`), circuit: await page.textContent(`${routeRow} td[data-field=circuit]`) };
  await shot("routes");
  let switchDialog = "";
  page.once("dialog", (d) => { switchDialog = d.message(); d.accept(); });
  await page.click(`${routeRow} button.switch`);
  await page.waitForSelector(`#route-table tr[data-route="${route}"][data-enabled=false]`);
  seen.phases.routes = { ...routeSeen, dialog: switchDialog, result: await page.textContent("#routes-result"),
    shown: await page.textContent(`${routeRow} td[data-field=enabled]`) };

  step("modules");
  await page.click("#nav-modules");
  const moduleRow = `#module-table tr[data-module="${transform}"]`;
  await page.waitForSelector(moduleRow);
  const calls = () => page.$eval(`${moduleRow} td[data-field=calls]`, (td) => Number(td.textContent));
  const callsBefore = await calls();
  await page.waitForFunction(([sel, n]) => Number(document.querySelector(`${sel} td[data-field=calls]`).textContent) > n, [moduleRow, callsBefore]);
  await page.waitForFunction((sel) => Number(document.querySelector(`${sel} td[data-field=rate]`).textContent) > 0, moduleRow);
  const attachedTo = (name) => page.$$eval(`#module-table tr[data-module="${name}"] a[data-attached]`, (links) => links.map((a) => a.dataset.attached));
  seen.phases.modules = { before: callsBefore, after: await calls(), rate: Number(await page.textContent(`${moduleRow} td[data-field=rate]`)),
    transformAt: await attachedTo(transform), middlewareAt: await attachedTo(middleware),
    failures: Number(await page.textContent(`${moduleRow} td[data-field=failures]`)) };
  await shot("modules");

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

  step("node-down");
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.goto(`${admin}/console/#/actor/${encodeURIComponent(bucketOwner)}/${encodeURIComponent(bucketKey)}`);
  await page.waitForSelector("#actor-fields dd[data-field=kind]");
  console.log(JSON.stringify({ kill: true }));
  await page.waitForSelector("#actor-gone", { state: "visible", timeout: 30000 });
  const goneText = await page.textContent("#actor-gone");
  await page.click("#nav-overview");
  await page.waitForFunction((id) => {
    const tr = document.querySelector(`#members tbody tr[data-node="${id}"]`);
    return tr && tr.dataset.state !== "alive";
  }, bucketOwner, { timeout: 30000 });
  seen.phases.nodeDown = { goneText, state: await page.getAttribute(`#members tbody tr[data-node="${bucketOwner}"]`, "data-state"),
    bodyText: (await page.textContent("main")).length };
  await shot("node-down");
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
