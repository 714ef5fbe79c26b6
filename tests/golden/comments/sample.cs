/// <summary>XML doc.</summary>
// a comment
var path = @"C:\temp\"; // verbatim string with a trailing backslash, then a comment
/* block */
var x = 1;
