/*
 * Tests of the cgroup CPU quota reading behind `resattn serve`'s automatic thread counts
 * (server/cli/config.c): cgroup v2 cpu.max and the v1 fallback (cpu/ and cpu,cpuacct/), on fake
 * cgroup trees written to a temporary directory.
 */
#include "cli/config.h"
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static char root[64];

static void put(const char *rel, const char *text) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    FILE *f = fopen(path, "w");
    ck_assert_msg(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static void fresh_root(void) {
    snprintf(root, sizeof root, "/tmp/resattn-cg-XXXXXX");
    ck_assert(mkdtemp(root));
}

static void remove_root(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_cgroup_v2) {
    fresh_root();
    ck_assert_int_eq(resattn_cgroup_cpu_limit(root), -1);
    put("cpu.max", "max 100000\n");
    ck_assert_int_eq(resattn_cgroup_cpu_limit(root), 0);
    put("cpu.max", "150000 100000\n");
    ck_assert_int_eq(resattn_cgroup_cpu_limit(root), 2);
    put("cpu.max", "50000 100000\n");
    ck_assert_int_eq(resattn_cgroup_cpu_limit(root), 1);
    remove_root();
}
END_TEST

START_TEST(test_cgroup_v1) {
    const char *dirs[] = {"cpu", "cpu,cpuacct"};
    for (int i = 0; i < 2; i++) {
        fresh_root();
        char d[128];
        snprintf(d, sizeof d, "%s/%s", root, dirs[i]);
        ck_assert_int_eq(mkdir(d, 0755), 0);
        char q[64], p[64];
        snprintf(q, sizeof q, "%s/cpu.cfs_quota_us", dirs[i]);
        snprintf(p, sizeof p, "%s/cpu.cfs_period_us", dirs[i]);
        put(q, "-1\n");
        put(p, "100000\n");
        ck_assert_int_eq(resattn_cgroup_cpu_limit(root), 0);
        put(q, "300000\n");
        ck_assert_int_eq(resattn_cgroup_cpu_limit(root), 3);
        put(q, "250000\n");
        ck_assert_int_eq(resattn_cgroup_cpu_limit(root), 3);
        /* a v2 file wins over v1 */
        put("cpu.max", "100000 100000\n");
        ck_assert_int_eq(resattn_cgroup_cpu_limit(root), 1);
        remove_root();
    }
    ck_assert_int_ge(resattn_usable_cpus(), 1);
}
END_TEST

Suite *cgroup_suite(void) {
    Suite *s = suite_create("cgroup");
    TCase *tc = tcase_create("cgroup");
    tcase_add_test(tc, test_cgroup_v2);
    tcase_add_test(tc, test_cgroup_v1);
    suite_add_tcase(s, tc);
    return s;
}
