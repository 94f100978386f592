// test/test_web.js - drive web/index.html in headless Chromium (test/test_web.py runs it).
//
//   node test/test_web.js URL SCREENSHOT.png STEPS.json
//
// STEPS.json: [{model, image, resize ("0" pil, "1" torchvision), captions (null: the page's
// default)}, ...]. For each step: pick the files, click Run, wait, and print one JSON line
// {status, error, results: [{text, prob, logit}]} with what the page shows.
// The first step's page is saved as SCREENSHOT.png.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

async function main() {
  const [url, screenshot, stepsFile] = process.argv.slice(2);
  const steps = JSON.parse(fs.readFileSync(stepsFile, 'utf8'));
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'clip-web-profile-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await context.newPage();
    page.on('pageerror', (e) => console.log(JSON.stringify({ pageerror: String(e) })));
    page.on('console', (m) => { if (m.type() === 'error') console.log(JSON.stringify({ console: m.text() })); });
    await page.goto(url);
    await page.waitForSelector('#run:not([disabled])', { timeout: 60000 });
    for (let i = 0; i < steps.length; i++) {
      const s = steps[i];
      await page.setInputFiles('#model', s.model);
      await page.setInputFiles('#image', s.image);
      await page.selectOption('#resize', s.resize);
      if (s.captions !== null) await page.fill('#captions', s.captions.join('\n'));
      await page.click('#run');
      // finished: the button is enabled again and the status no longer says it is working
      await page.waitForFunction(() => !document.getElementById('run').disabled &&
        !/…$/.test(document.getElementById('status').textContent), null, { timeout: 120000 });
      const shown = await page.evaluate(() => ({
        status: document.getElementById('status').textContent,
        error: document.getElementById('status').className === 'error',
        results: document.getElementById('results').hidden ? [] :
          Array.from(document.querySelectorAll('#results tbody tr')).map((tr) => ({
            text: tr.cells[0].textContent, prob: Number(tr.cells[1].textContent), logit: Number(tr.cells[3].textContent),
          })),
      }));
      console.log(JSON.stringify(shown));
      if (i === 0) await page.screenshot({ path: screenshot, fullPage: true });
    }
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => { console.log(JSON.stringify({ fatal: String(e && e.stack || e) })); process.exit(1); });
