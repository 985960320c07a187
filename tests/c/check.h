/* The check macros shared by the C tests: count checks and failures, print each failure with
 * its file, line, condition and a formatted detail, and keep going. */
#ifndef IMHOST_TEST_CHECK_H
#define IMHOST_TEST_CHECK_H

#include <stdio.h>

#include "imhost.h"

static int failures = 0;
static int checks = 0;

#define CHECK(cond, ...)                                                             \
    do {                                                                             \
        ++checks;                                                                    \
        if (!(cond)) {                                                               \
            ++failures;                                                              \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                            \
            fprintf(stderr, "\n");                                                   \
        }                                                                            \
    } while (0)

#define CHECK_STATUS(call, expected)                                                                \
    do {                                                                                            \
        imh_status got_ = (call);                                                                   \
        CHECK(got_ == (expected), "%s returned %s (%s), expected %s", #call, imh_status_name(got_), \
              imh_last_error_message(), imh_status_name(expected));                                \
    } while (0)

#endif
