/*
 * Access-log lines (see access_log.h). Each line is written with one fprintf, so lines from
 * the HTTP and gRPC threads do not interleave within a line.
 */
#include "runtime/access_log.h"

#include <stdarg.h>
#include <stdlib.h>
#include <time.h>

void resattn_access_log_json(FILE *f, json_t *o) {
    char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (line)
        fprintf(f, "%s\n", line);
    free(line);
}

void resattn_access_log_text(FILE *f, const char *fmt, ...) {
    char ts[32], rest[1024];
    time_t now = time(NULL);
    struct tm tm;
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rest, sizeof rest, fmt, ap);
    va_end(ap);
    fprintf(f, "%s %s\n", ts, rest);
}
