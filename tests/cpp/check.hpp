// The C++ tests' checks: CHECK counts and reports a failed condition, expect_error runs code
// that must throw imhost::Error with a given status. main() prints `checks` and `failures`.
#ifndef IMHOST_TESTS_CHECK_HPP
#define IMHOST_TESTS_CHECK_HPP

#include <exception>
#include <iostream>
#include <string>

#include "imhost.hpp"

inline int failures = 0;
inline int checks = 0;

#define CHECK(cond)                                                                     \
    do {                                                                                \
        ++checks;                                                                       \
        if (!(cond)) {                                                                  \
            ++failures;                                                                 \
            std::cerr << __FILE__ << ":" << __LINE__ << ": check failed: " #cond "\n"; \
        }                                                                               \
    } while (0)

/// Run `f`, expecting an imhost::Error with `status`; returns its message.
template <class F>
std::string expect_error(imh_status status, F&& f) {
    ++checks;
    try {
        f();
    } catch (const imhost::Error& e) {
        if (e.status() != status) {
            ++failures;
            std::cerr << "expected " << imh_status_name(status) << ", got " << e.status_name() << ": " << e.what() << "\n";
        }
        return e.what();
    } catch (const std::exception& e) {
        ++failures;
        std::cerr << "expected imhost::Error, got: " << e.what() << "\n";
        return {};
    }
    ++failures;
    std::cerr << "expected " << imh_status_name(status) << ", but nothing was thrown\n";
    return {};
}

#endif  // IMHOST_TESTS_CHECK_HPP
