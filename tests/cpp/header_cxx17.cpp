// imhost.h and imhost.hpp compile as strict C++17 (-Wpedantic -Werror), and the enum's
// underlying type matches the C typedef.
#include <type_traits>

#include "imhost.h"
#include "imhost.hpp"

static_assert(std::is_same<std::underlying_type<imh_status>::type, uint32_t>::value, "imh_status is 32-bit unsigned");
static_assert(sizeof(imh_geometry) == 15 * sizeof(double), "imh_geometry layout");
static_assert(std::is_nothrow_move_constructible<imhost::Volume>::value, "Volume moves without throwing");
static_assert(!std::is_copy_constructible<imhost::Context>::value, "Context is move-only");
static_assert(!std::is_copy_constructible<imhost::CancelToken>::value, "CancelToken is move-only");

int main() { return imhost::version().empty() ? 1 : 0; }
