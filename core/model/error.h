/*
 * The one way core code reports an error: fill the caller's message buffer (which may be
 * NULL) and return the status, so a failing path is a single `return resattn_fail(...)`.
 */
#ifndef RESATTN_ERROR_H
#define RESATTN_ERROR_H

#include <resattn/resattn.h>
#include <stddef.h>

resattn_status resattn_fail(char *err, size_t err_len, resattn_status s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
