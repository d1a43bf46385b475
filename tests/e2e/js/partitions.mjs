// The cluster page's partitions in headless Chromium (playwright-core): leaders per node and the
// under-replicated partitions, with every node up and after one is killed. Prints one JSON line of
// what a person sees; tests/e2e/test_console.py asserts on it.
// Usage: node partitions.mjs ADMIN_URL TOKEN SHOTS_DIR VICTIM
// Once it has read the page with every node up it prints {"kill": true} and waits for the test to
// kill VICTIM's node.
import { openConsole, signIn } from "./browser.mjs";

const [admin, token, shots, victim] = process.argv.slice(2);
const { browser, page, seen, step, shot } = await openConsole(shots);
const shown = async () => ({
  leaders: await page.$$eval("#leaders tbody tr", (rows) =>
    Object.fromEntries(rows.map((r) => [r.dataset.node, Number(r.cells[1].textContent)]))),
  under: await page.$$eval("#under-replicated tbody tr", (rows) => rows.map((r) => ({
    partition: Number(r.dataset.partition), leader: r.cells[2].textContent, why: r.cells[3].textContent }))),
  emptyShown: await page.isVisible("#under-replicated-empty"),
  state: await page.textContent("#partitions-state"),
});
try {
  step("all-up");
  await page.goto(`${admin}/console/#/overview`);
  await signIn(page, token);
  await page.waitForFunction(() => document.querySelectorAll("#leaders tbody tr").length === 3);
  seen.phases.allUp = await shown();
  await shot("partitions");

  step("node-down");
  console.log(JSON.stringify({ kill: true }));
  // Until the page, refreshing on its own, shows the node down, leading nothing, and every
  // partition it counts under-replicated.
  await page.waitForFunction((id) => {
    const member = document.querySelector(`#members tbody tr[data-node="${id}"]`);
    const led = document.querySelector(`#leaders tbody tr[data-node="${id}"] td[data-field=led]`);
    const state = document.querySelector("#partitions-state").dataset;
    return member?.dataset.state === "down" && led?.textContent === "0" && state.count !== undefined && state.under === state.count;
  }, victim, { timeout: 30000 }).catch(() => {}); // the test says what the page showed instead
  seen.phases.nodeDown = await shown();
  await shot("partitions-under-replicated");
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
