/** Scaladoc
  * second line
  */
object Main { // code
  // a comment
  val c = '/'
  val s = """// not a comment"""
}
