// Headless Chromium against `nanochat serve`: send a message, see tokens stream in, edit the
// message and regenerate, regenerate an answer, take a screenshot.
const { chromium } = require('playwright-core'); // NODE_PATH: target/ui-test/node_modules
(async () => {
  const url = process.argv[2], shot = process.argv[3];
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 900, height: 700 } });
  await page.goto(url);
  await page.fill('#input', 'The capital of France is');
  await page.press('#input', 'Enter');
  // Streaming: the assistant bubble grows while generating.
  const lengths = [];
  for (let i = 0; i < 40; i++) {
    const t = await page.locator('.msg.assistant').last().textContent().catch(() => '');
    lengths.push(t.length);
    if (await page.locator('button.regenerate').count() > 0) break;
    await page.waitForTimeout(25);
  }
  await page.waitForSelector('button.regenerate', { timeout: 30000 });
  const first = (await page.locator('.msg.assistant').last().textContent()).replace('Regenerate', '');
  console.log('streamed lengths (first samples):', lengths.slice(0, 12).join(','));
  console.log('answer 1:', JSON.stringify(first));
  // Edit the user message (a prompt() dialog) and regenerate from it.
  page.once('dialog', d => d.accept('The opposite of hot is'));
  await page.locator('.msg.user').first().click();
  await page.waitForFunction(() => document.querySelector('.msg.user').textContent === 'The opposite of hot is');
  await page.waitForSelector('button.regenerate', { timeout: 30000 });
  const edited = (await page.locator('.msg.assistant').last().textContent()).replace('Regenerate', '');
  console.log('after edit:', JSON.stringify(edited));
  // Slash command and regenerate.
  await page.fill('#input', '/temperature 1.2'); await page.press('#input', 'Enter');
  await page.locator('button.regenerate').last().click();
  await page.waitForSelector('button.regenerate', { timeout: 30000 });
  const users = await page.locator('.msg.user').count(), answers = await page.locator('.msg.assistant').count();
  console.log('messages: user', users, 'assistant', answers, '| settings:', await page.textContent('#settings'));
  await page.screenshot({ path: shot });
  await browser.close();
  if (users !== 1 || answers !== 1) { console.error('unexpected message counts'); process.exit(1); }
  console.log('UI OK');
})().catch(e => { console.error(e); process.exit(1); });
