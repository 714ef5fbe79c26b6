/* Copyright header
 * second line
 */
#include <stdio.h>
#define MAX 3 /* a macro is code */

// a line comment
int main(void) {
    char c = '"'; // a quote char
    const char *s = "/* not a comment */";
    int a = 10 / 2; /* division */
    /* block */
    return a; // code
}
