// Drives voxloop's browser page in headless Chromium (Debian's, through playwright-core) for
// tests/page.rs, and prints one JSON report of what the page showed.
//
//   node tests/page/drive.mjs talk URL OUT_DIR QUESTION.wav
//   node tests/page/drive.mjs ptt URL OUT_DIR QUESTION.wav
//   node tests/page/drive.mjs offline URL OUT_DIR
//
// `talk`: the microphone is Chromium's fake capture device playing QUESTION.wav once; the page
// connects hands-free, the server's VAD hears the question, the answer plays, the tool timeline
// shows the call. `ptt`: push to talk, held while the question plays, and the calls (which wait
// for approval) answered in the page: the first approved, the others denied. `offline` (a service without a model): the page says what is missing, and an
// audio search finds and plays a clip. Each writes OUT_DIR/page.png.
//
// playwright-core comes from NODE_PATH (scripts/playwright.sh); the browser from $CHROMIUM
// (default /usr/bin/chromium).

import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(path.join(process.env.NODE_PATH || '.', 'noop.js'));
const { chromium } = require('playwright-core');

const [command, url, outDir, wav] = process.argv.slice(2);
const TIMEOUT = 120_000;

// The flags the probe of these machines found needed on a closed network, and fake media.
const args = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
];
if (wav) args.push(`--use-file-for-fake-audio-capture=${wav}%noloop`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args,
  timeout: 60_000,
});
const report = { console: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 820 } });
  page.on('console', (m) => report.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => report.console.push(`pageerror: ${e.message}`));
  if (command === 'talk') await talk(page);
  else if (command === 'ptt') await pushToTalk(page);
  else if (command === 'offline') await offline(page);
  else throw new Error(`unknown command ${command}`);
  await page.screenshot({ path: path.join(outDir, 'page.png'), fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));

async function dataset(page) {
  return page.evaluate(() => ({ ...document.body.dataset }));
}

async function texts(page, selector) {
  return page.$$eval(selector, (els) => els.map((e) => e.textContent));
}

async function talk(page) {
  await page.goto(`${url}/?tool_choice=get_date_time&max_output_tokens=48`);
  await page.waitForSelector('body[data-ready="1"]', { timeout: TIMEOUT });
  report.voices = await texts(page, '#voice option');
  await page.click('#connect');
  await page.waitForFunction(() => Number(document.body.dataset.responses || 0) >= 1, null, {
    timeout: TIMEOUT,
  });
  // Let the last scheduled audio play out so the screenshot shows the page at rest.
  await page.waitForTimeout(500);
  report.dataset = await dataset(page);
  report.status = await page.textContent('#status');
  report.transcript = await page.$$eval('#transcript li', (els) =>
    els.map((e) => ({ role: e.className, text: e.textContent })),
  );
  report.timeline = await timeline(page);
  report.log = await texts(page, '#log li');
}

async function timeline(page) {
  return page.$$eval('#timeline li', (els) =>
    els.map((e) => ({
      state: e.className,
      name: e.querySelector('.name').textContent,
      meta: e.querySelector('.meta').textContent,
      args: e.querySelector('.args').textContent,
      result: e.querySelector('.result').textContent,
    })),
  );
}

async function pushToTalk(page) {
  await page.goto(`${url}/?mode=ptt&tool_choice=get_date_time&max_output_tokens=48`);
  await page.waitForSelector('body[data-ready="1"]', { timeout: TIMEOUT });
  await page.click('#connect');
  await page.waitForSelector('#talk:not([disabled])', { timeout: TIMEOUT });
  // Hold the button while the fake microphone plays the question (it starts when the page
  // opens the microphone), then release: the page commits and asks for the answer.
  await page.hover('#talk');
  await page.mouse.down();
  await page.waitForTimeout(Number(process.env.HOLD_MS || 4500));
  await page.mouse.up();
  report.decisions = [];
  for (;;) {
    const next = await page.waitForFunction(
      () =>
        Number(document.body.dataset.responses || 0) >= 1 ||
        document.querySelector('#timeline .decision button'),
      null,
      { timeout: TIMEOUT },
    );
    const done = await next.evaluate((v) => v === true);
    if (done) break;
    const approve = report.decisions.length === 0;
    report.decisions.push(approve);
    await page.click(`#timeline .decision button:text("${approve ? 'Approve' : 'Deny'}")`);
  }
  report.dataset = await dataset(page);
  report.timeline = await timeline(page);
  report.log = await texts(page, '#log li');
}

async function offline(page) {
  await page.goto(url);
  await page.waitForSelector('body[data-ready="1"]', { timeout: TIMEOUT });
  report.notice = await page.textContent('#notice');
  report.connectDisabled = await page.isDisabled('#connect');
  report.status = await page.textContent('#status');
  await page.fill('#search-q', 'rain on a tin roof');
  await page.click('#search-form button');
  await page.waitForSelector('body[data-search-hits]', { timeout: TIMEOUT });
  report.hits = await texts(page, '#search-results li');
  // The first hit plays to its end in the page's <audio> element.
  report.played = await page.evaluate(
    () =>
      new Promise((resolve) => {
        const audio = document.querySelector('#search-results audio');
        audio.onended = () => resolve({ ended: true, duration: audio.duration });
        audio.onerror = () => resolve({ ended: false, error: String(audio.error && audio.error.message) });
        audio.play().catch((e) => resolve({ ended: false, error: String(e) }));
      }),
  );
}
