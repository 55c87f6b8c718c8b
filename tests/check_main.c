/*
 * The one Check runner. Every tests/check_<module>.c defines `Suite *<module>_suite(void)`;
 * the Makefile lists them in suites.h (X-macro), so adding a test file needs no edit here.
 * CK_RUN_SUITE / CK_RUN_CASE filter as usual.
 */
#include <check.h>
#include <stdlib.h>

#define SUITE(name) Suite *name##_suite(void);
#include "suites.h"
#undef SUITE

int main(void) {
    SRunner *sr = srunner_create(NULL);
#define SUITE(name) srunner_add_suite(sr, name##_suite());
#include "suites.h"
#undef SUITE
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
