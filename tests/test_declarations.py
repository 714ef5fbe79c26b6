"""analyzer.declarations: import and function/type header lines, across languages."""

import pytest

from analyzer.declarations import declares, imports

DECLARES = {
    "python": ["from typing import List", "import os.path", "def has_close_elements(numbers: List[float]) -> bool:",
               "async def fetch(url):", "class Solution:", "class Node(object):"],
    "java": ["import java.util.*;", "package org.jsoup.nodes;", "class Solution {",
             "public List<String> separateParenGroups(String paren_string) {",
             "public static boolean breadth_first_search(Node startnode, Node goalnode) {",
             "public Attribute(String key, String val, Attributes parent) {", "final Tag name(String name) {",
             "public Map<String, Integer> histogram(String test) {", "public static int gcd(int a,",
             "private void read() throws IOException {", "public abstract class Token {"],
    "cpp": ["#include<stdio.h>", "#include <vector>", "using namespace std;", "#ifdef _WIN32",
            "bool has_close_elements(vector<float> numbers, float threshold){", "int main() {",
            "vector<int> parse_nested_parens(string paren_string){", "int Foo::bar(int x) const {",
            "struct Point {", "static inline size_t count(const char* s)"],
    "javascript": ["const fs = require('fs');", "var express = require('../')", "import x from 'y';",
                   "function add(a, b) {", "export default function handler(req, res) {",
                   "const add = (a, b) => {", "async fetch(url) {", "class Router extends Base {"],
    "go": ["package main", "import (", "import \"fmt\"", "func main() {", "func (c *Command) Execute() error {",
           "type Config struct {"],
    "rust": ["use std::{slice::Iter, cmp::{max, self}, mem::replace};", "use std::fmt;", "extern crate regex;",
             "fn from_str(s: &str) -> Result<Style, Error> {", "pub fn new(expr: &Hir) -> LiteralSets {",
             "pub(crate) fn helper() {", "impl Default for Config {", "mod tests {", "pub struct Args {",
             "async fn run() {"],
}

STATEMENTS = {
    "python": ["return kth(above, k)", "print(result)", "x = foo(y)", "if paren == '(':", "raise ValueError(msg)",
               "await asyncio.sleep(1)", "with open(path) as f:", "elif check(x):", "# import this later",
               "assert f(x) == 1", "self.items.append(item)"],
    "java": ["for (int j = i + 1; j < numbers.size(); j++) {", "return binsearch(arr, x, mid, end);",
             "if (current_depth < 0) {", "} else if (x) {", "int product = 0;", "result.append(\"1\");",
             "assertEquals(1052, bytes.length);", "throw new IllegalStateException(msg);",
             "synchronized (lock) {", "list.forEach(x -> {", "Element el = new Element(tag, baseUri);",
             "else if (check(x)) {"],
    "cpp": ["if (numbers[i]-numbers[j]<threshold)", "return number-int(number)+1;", "std::sort(v.begin(), v.end());",
            "EXPECT_EQ(pow(10, dec_exp), ldexp(fp.f, fp.e));", "ERROR_FILE_EXISTS, MAKELANGID(LANG_NEUTRAL, X)",
            "delete foo(x);", "string n2str(nstr.rbegin(),nstr.rend());", "out.push_back(numbers[i]);"],
    "javascript": ["union(options, helpers);", "app.use(express.static(dir));", "return res.send(body);",
                   "const x = compute(y);"],
    "go": ["if err != nil {", "x := foo(y)", "defer f.Close()", "go worker(ch)", "return cmd.Execute()"],
    "rust": ["let x = f(y);", "Ok(if before > 0 || after > 0 {", "quiet_matched: QuietMatched::new(quiet),",
             "match self.kind {", "return res;", ") -> Result<&mut OverrideBuilder, Error> {"],
}


@pytest.mark.parametrize("language,line", [(lang, ln) for lang, lines in DECLARES.items() for ln in lines])
def test_declaration_lines(language, line):
    assert declares(line) and declares("    " + line), (language, line)


@pytest.mark.parametrize("language,line", [(lang, ln) for lang, lines in STATEMENTS.items() for ln in lines])
def test_statement_lines(language, line):
    assert not declares(line), (language, line)


def test_blank_and_punctuation():
    assert not declares("") and not declares("   ") and not declares("}") and not declares("});")


IMPORTS = ["from typing import List", "import os.path", "import java.util.*;", "package org.jsoup.nodes;",
           "#include<stdio.h>", "using namespace std;", "#ifdef _WIN32", "const fs = require('fs');",
           "import x from 'y';", "import (", "use std::{slice::Iter, cmp::{max, self}, mem::replace};",
           "extern crate regex;", "#include <vector>", "var express = require('../')", "package main",
           "import \"fmt\"", "use std::fmt;"]


@pytest.mark.parametrize("line", IMPORTS)
def test_import_lines(line):
    assert imports(line) and imports("  " + line) and declares(line), line


@pytest.mark.parametrize("line", [ln for lines in DECLARES.values() for ln in lines if ln not in IMPORTS]
                         + [ln for lines in STATEMENTS.values() for ln in lines])
def test_headers_and_statements_do_not_import(line):
    assert not imports(line), line
