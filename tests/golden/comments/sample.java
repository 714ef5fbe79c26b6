/*
 * Licensed under the MIT License.
 */
package com.example;

import java.util.List; // trailing comment: code

/** A class comment (Javadoc). */
public class Stock {
    // a line comment
    private int count = 0; /* trailing block: code */
    private String url = "http://example.com/*not a comment*/";
    private char slash = '/';
    private char quote = '"';
    private String block = """
        // not a comment: inside a text block
        """;

    /**
     * Javadoc spanning lines.
     * @param n how many
     */
    public int restock(int n) {
        /* one-line block */
        count += n; // code
        /* block */ count++;
        return count; /* a block that
        goes on */
    }
}
