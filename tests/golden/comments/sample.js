// @ts-check
/* eslint-disable no-console */
'use strict';

/**
 * Restock items.
 * @param {number} n
 */
function restock(items, n) {
  const re = /\/*[a-z]+/g; // a regex literal holding "/*"
  const url = 'http://example.com'; // code
  const s = "// not a comment";
  const t = `
// inside a template: not a comment
${items.map((x) => { return x; /* a comment in code in a template */ })}
/* still template text */
`;
  const half = n / 2; // division, then a comment
  // a comment line
  return items.length / half;
}
