/* outer /* nested */ still comment */
// a line comment
val s = """
// not a comment
"""
/** KDoc */
fun f(): Char = '/' // code
