<?php
// a comment
# a hash comment
#[Attribute]
/* block
   comment */
$s = "# not a comment"; // code
