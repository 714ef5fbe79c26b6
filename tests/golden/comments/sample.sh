#!/bin/sh
# a shell comment
set -eu
echo "$# args" # code
n=${#1}
echo 'it is # not a comment'
    # an indented comment
