/*
 * Replays every input in tests/fuzz/regressions/ that once crashed a libFuzzer harness
 * (tests/fuzz/) through the parser it crashed, and checks the parser now rejects it with
 * a message. The file name prefix picks the parser: npy-, v2json-, v2bin- (harness
 * framing: content-type byte, 2-byte header length, body), tfs-, model-. Under `make asan`
 * and `make valgrind` an out-of-bounds access would also fail the run.
 */
#include "data/npy.h"
#include "protocol/protocol.h"

#include <check.h>
#include <dirent.h>
#include <resattn/resattn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REG_DIR "tests/fuzz/regressions"

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    ck_assert(b != NULL);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int has_prefix(const char *s, const char *p) {
    return !strncmp(s, p, strlen(p));
}

/* Runs one regression input; returns 1 when the parser rejected it with a message. */
static int replay(const char *name, const unsigned char *b, size_t len,
                  const resattn_model_info *info) {
    char err[RESATTN_PROTO_ERR_LEN] = "";
    const resattn_parse_limits lim = {.max_batch = 4, .max_json_depth = 64};
    resattn_infer_request req;
    int rejected;
    if (has_prefix(name, "npy-")) {
        resattn_npy a;
        rejected = resattn_npy_parse(b, len, &a, err, sizeof err) != RESATTN_OK;
        if (!rejected)
            resattn_npy_release(&a);
    } else if (has_prefix(name, "v2json-")) {
        rejected = resattn_v2_parse("application/json", b, len, -1, info, &lim, &req, err,
                                    sizeof err) != 0;
    } else if (has_prefix(name, "v2bin-")) {
        static const char *const types[3] = {"application/json", "application/octet-stream",
                                             "application/x-npy"};
        ck_assert_uint_ge(len, 3);
        unsigned hl = (unsigned)b[1] | (unsigned)b[2] << 8;
        rejected =
            resattn_v2_parse(types[b[0] % 3], b + 3, len - 3, hl == 0xffff ? -1 : (long long)hl,
                             info, &lim, &req, err, sizeof err) != 0;
    } else if (has_prefix(name, "tfs-")) {
        rejected = resattn_tfs_parse(b, len, info, &lim, &req, err, sizeof err) != 0;
    } else if (has_prefix(name, "model-")) {
        resattn_model *m = NULL;
        rejected = resattn_model_load_buffer(b, len, &m, err, sizeof err) != RESATTN_OK;
        resattn_model_free(m);
    } else {
        ck_abort_msg("%s/%s: unknown prefix", REG_DIR, name);
        return 0;
    }
    if (!rejected && !has_prefix(name, "npy-") && !has_prefix(name, "model-"))
        resattn_infer_request_release(&req);
    return rejected && err[0];
}

START_TEST(test_replay_all) {
    resattn_model *model = NULL;
    char err[256];
    ck_assert_msg(resattn_model_load_file("tests/fixtures/basic_cifar_se.safetensors", &model, err,
                                          sizeof err) == RESATTN_OK,
                  "%s", err);
    DIR *d = opendir(REG_DIR);
    ck_assert_msg(d != NULL, "cannot open %s", REG_DIR);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "README.md"))
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", REG_DIR, e->d_name);
        size_t len;
        unsigned char *b = read_all(path, &len);
        ck_assert_msg(replay(e->d_name, b, len, resattn_model_get_info(model)),
                      "%s was accepted or rejected without a message", path);
        free(b);
        n++;
    }
    closedir(d);
    resattn_model_free(model);
    ck_assert_int_ge(n, 1); /* the directory is not empty: the replay really ran */
}
END_TEST

/* The first crash (fuzz_npy): a 'descr' whose size digits run to the end of the header
 * made strtol read past the buffer. The same header, NUL-free and cut right after the
 * digits, must be refused with the descr message. */
START_TEST(test_npy_descr_digits_at_end) {
    static const char hdr[] = "{'descr': '<f4444444444";
    unsigned char buf[10 + sizeof hdr - 1];
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)(sizeof hdr - 1);
    buf[9] = 0;
    memcpy(buf + 10, hdr, sizeof hdr - 1);
    unsigned char *exact = malloc(sizeof buf); /* exact size, so ASan sees any over-read */
    memcpy(exact, buf, sizeof buf);
    resattn_npy a;
    char err[256] = "";
    ck_assert_int_ne(resattn_npy_parse(exact, sizeof buf, &a, err, sizeof err), RESATTN_OK);
    ck_assert_msg(strstr(err, "descr") != NULL, "%s", err);
    free(exact);
}
END_TEST

Suite *fuzz_regressions_suite(void) {
    Suite *s = suite_create("fuzz_regressions");
    TCase *tc = tcase_create("replay");
    tcase_add_test(tc, test_replay_all);
    tcase_add_test(tc, test_npy_descr_digits_at_end);
    suite_add_tcase(s, tc);
    return s;
}
