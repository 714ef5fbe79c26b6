//! Crate docs.
//! More crate docs.

/// Restock items.
/// # Examples
fn restock<'a>(items: &'a mut Vec<u32>, n: u32) -> &'a Vec<u32> {
    // a line comment
    let c = '/'; // a char literal, code
    let q = '\''; let s = "// not a comment";
    let raw = r#"
// not a comment: a raw string
"#;
    /* an outer /* nested */ block
       still the comment */
    for x in items.iter_mut() { *x += n; } /* trailing */
    let multi = "a string
// still inside the string
";
    items
}

#[derive(Debug)] // an attribute is code
struct S;
