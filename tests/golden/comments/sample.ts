/// <reference path="types.d.ts" />
// a comment
interface Item {
  name: string; // trailing
  /** The quantity. */
  quantity: number;
}

/*
   a block comment
*/
export const price = (i: Item): number => i.quantity * 2; // code
const tpl = `a ${`nested ${"x"}`} // not a comment`;
// after a nested template
