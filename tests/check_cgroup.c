/*
 * Tests of the cgroup readings behind `resattn serve`'s defaults (server/cli/config.c), on
 * fake cgroup trees written to a temporary directory: the CPU quota for the automatic thread
 * counts (cgroup v2 cpu.max and the v1 fallback, cpu/ and cpu,cpuacct/), and the memory
 * limit the default memory budget is derived from (v2 memory.max, v1 memory.limit_in_bytes,
 * of the cgroup named in /proc/self/cgroup and its ancestors), with that derivation.
 */
#include "cli/config.h"
#include "runtime/budget.h"
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

static void mkdirs(const char *rel) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/%s'", root, rel);
    ck_assert_int_eq(system(cmd), 0);
}

/* resattn_cgroup_memory_limit with the fake tree at root and a fake /proc/self/cgroup. */
static long long mem_limit(const char *self_cgroup) {
    put("self", self_cgroup);
    char self[128];
    snprintf(self, sizeof self, "%s/self", root);
    return resattn_cgroup_memory_limit(root, self);
}

#define MIB (1024LL * 1024)

START_TEST(test_memory_v2) {
    fresh_root();
    ck_assert_int_eq(mem_limit("0::/\n"), -1); /* no memory files at all */
    put("memory.max", "max\n");
    ck_assert_int_eq(mem_limit("0::/\n"), 0);
    put("memory.max", "536870912\n");
    ck_assert_int_eq(mem_limit("0::/\n"), 512 * MIB);
    /* a cgroup path that does not exist under root (a container's cgroup namespace shows
     * its own cgroup at root): root's file */
    ck_assert_int_eq(mem_limit("0::/not/here\n"), 512 * MIB);
    /* the process's own cgroup and its ancestors: the smallest limit wins */
    put("memory.max", "max\n");
    mkdirs("kubepods/pod1/ctr");
    put("kubepods/memory.max", "1073741824\n");
    put("kubepods/pod1/memory.max", "max\n");
    put("kubepods/pod1/ctr/memory.max", "805306368\n");
    ck_assert_int_eq(mem_limit("0::/kubepods/pod1/ctr\n"), 768 * MIB);
    put("kubepods/pod1/ctr/memory.max", "max\n");
    ck_assert_int_eq(mem_limit("0::/kubepods/pod1/ctr\n"), 1024 * MIB);
    remove_root();
}
END_TEST

START_TEST(test_memory_v1) {
    fresh_root();
    mkdirs("memory/docker/abc");
    /* v1 says "unlimited" with a number near 2^63 */
    put("memory/memory.limit_in_bytes", "9223372036854771712\n");
    put("memory/docker/memory.limit_in_bytes", "9223372036854771712\n");
    put("memory/docker/abc/memory.limit_in_bytes", "9223372036854771712\n");
    const char *self = "12:pids:/docker/abc\n4:memory:/docker/abc\n0::/\n";
    ck_assert_int_eq(mem_limit(self), 0);
    put("memory/docker/abc/memory.limit_in_bytes", "268435456\n");
    ck_assert_int_eq(mem_limit(self), 256 * MIB);
    /* the memory controller co-mounted with another, and a parent's smaller limit */
    put("memory/docker/memory.limit_in_bytes", "134217728\n");
    ck_assert_int_eq(mem_limit("7:blkio,memory:/docker/abc\n"), 128 * MIB);
    /* inside a container the cgroup is shown at the mount root */
    ck_assert_int_eq(mem_limit("4:memory:/\n"), 0);
    put("memory/memory.limit_in_bytes", "536870912\n");
    ck_assert_int_eq(mem_limit("4:memory:/\n"), 512 * MIB);
    /* a v2 file wins over v1 */
    put("memory.max", "1048576000\n");
    ck_assert_int_eq(mem_limit("4:memory:/\n0::/\n"), 1048576000);
    remove_root();
    ck_assert_int_gt(resattn_physical_memory(), 64 * MIB);
}
END_TEST

/* The default budget of a 512 MiB container read from a fake tree: the limit less what is
 * fixed, with the stated margin (10 %, at least 16 MiB). */
START_TEST(test_memory_budget_derivation) {
    fresh_root();
    put("memory.max", "536870912\n");
    resattn_memory_plan p = {.limit = mem_limit("0::/\n"),
                             .resident = 14 * MIB,
                             .workspaces = 38 * MIB,
                             .connections = 1024 * 64 * 1024LL,
                             .parse = resattn_budget_decode_bytes(40000000, 1)};
    resattn_memory_plan_compute(&p);
    ck_assert_int_eq(p.margin, 536870912 / 10);
    ck_assert_int_eq(p.fixed, 14 * MIB + 38 * MIB + 64 * MIB + 160000000 + 536870912 / 10);
    ck_assert_int_eq(p.budget, 536870912 - p.fixed);
    ck_assert_int_gt(p.budget, 150 * MIB); /* what the README quotes for the built-in model */
    /* a small limit: the margin is at least 16 MiB and the budget can go negative */
    put("memory.max", "67108864\n");
    p.limit = mem_limit("0::/\n");
    resattn_memory_plan_compute(&p);
    ck_assert_int_eq(p.margin, 16 * MIB);
    ck_assert_int_lt(p.budget, 0);
    remove_root();
}
END_TEST

Suite *cgroup_suite(void) {
    Suite *s = suite_create("cgroup");
    TCase *tc = tcase_create("cgroup");
    tcase_add_test(tc, test_cgroup_v2);
    tcase_add_test(tc, test_cgroup_v1);
    tcase_add_test(tc, test_memory_v2);
    tcase_add_test(tc, test_memory_v1);
    tcase_add_test(tc, test_memory_budget_derivation);
    suite_add_tcase(s, tc);
    return s;
}
