/*
 * Serving your own model, end to end with PyTorch (Debian's python3-torch and
 * python3-torchvision; /usr/bin/python3):
 *   - tests/export/test_export.py: tools/export_pytorch.py and the server's loader refuse
 *     the same bad configs, each naming the key, and --labels FILE works;
 *   - tools/example_own_model.sh: the README's worked example (torchvision ResNet-18,
 *     ImageNet preprocessing, served beside the built-in model, a JPEG through /predict and
 *     v2) runs as written and its logits equal PyTorch's.
 * Both use the binary under test ($RESATTN_BIN). A missing torch is a failure, not a skip.
 */
#include "util_http.h"
#include "util_st.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Run a shell command with its output in a temporary file; on a non-zero exit, fail the
 * test showing the output's last 6000 bytes. */
static void run_ok(const char *what, const char *cmd) {
    char log[] = "/tmp/resattn-export-log-XXXXXX", full[4096];
    int fd = mkstemp(log);
    ck_assert_int_ge(fd, 0);
    close(fd);
    snprintf(full, sizeof full, "%s >%s 2>&1", cmd, log);
    int st = system(full);
    size_t len = 0;
    unsigned char *out = ut_read_file(log, &len);
    unlink(log);
    size_t from = len > 6000 ? len - 6000 : 0;
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: exit %d; output:\n%.*s", what,
                  WIFEXITED(st) ? WEXITSTATUS(st) : -1, (int)(len - from),
                  out ? (char *)out + from : "");
    free(out);
}

START_TEST(exporter_and_loader_agree) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "RESATTN_BIN='%s' /usr/bin/python3 tests/export/test_export.py",
             uh_binary());
    run_ok("tests/export/test_export.py", cmd);
}
END_TEST

START_TEST(readme_own_model_example) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "timeout 600 tools/example_own_model.sh '%s'", uh_binary());
    run_ok("tools/example_own_model.sh", cmd);
}
END_TEST

Suite *export_suite(void) {
    Suite *s = suite_create("export");
    TCase *t = tcase_create("export");
    tcase_set_timeout(t, 600);
    tcase_add_test(t, exporter_and_loader_agree);
    tcase_add_test(t, readme_own_model_example);
    suite_add_tcase(s, t);
    return s;
}
