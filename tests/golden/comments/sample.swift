/// Doc comment
/* outer /* nested */ still comment */
let s = """
// not a comment
"""
let x = 1 // code
