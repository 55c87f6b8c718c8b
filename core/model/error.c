/* Error reporting for core code (see error.h). */
#include "model/error.h"

#include <stdarg.h>
#include <stdio.h>

resattn_status resattn_fail(char *err, size_t err_len, resattn_status s, const char *fmt, ...) {
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return s;
}
