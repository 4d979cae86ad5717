// node --test reporter that prints the closing line `N passed, M failed`
// (top-level tests; a failing before() hook fails every test).
export default async function* summary(source) {
  let passed = 0, failed = 0;
  for await (const { type, data } of source) {
    if (data?.nesting !== 0 || data?.details?.type === 'suite') continue;
    if (type === 'test:pass' && !data.skip && !data.todo) passed++;
    else if (type === 'test:fail') failed++;
  }
  yield `${passed} passed, ${failed} failed\n`;
}
