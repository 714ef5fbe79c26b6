// Package inventory keeps stock.
package inventory

//go:generate stringer -type=Kind

import "fmt" // code

/*
Block comment
across lines.
*/

var raw = `
// not a comment: a raw string
`

var r = '/' // a rune
var s = "/* not a comment */"

// Restock adds n to every item.
func Restock(items []int, n int) {
	for i := range items {
		items[i] += n // code
		// a comment in a loop
	}
	fmt.Println(raw, r, s)
}
