// C++ sample
#include <string>

/**
 * Doxygen block.
 */
int count = 1'000'000; // digit separators, code
std::string raw = R"x(
// not a comment: a raw string
)x";
/// Doxygen line comment.
int f() { return count; } // code
