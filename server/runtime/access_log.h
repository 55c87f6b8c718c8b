/*
 * The access log of both transports: one line per finished request or call, either a JSON
 * object (--log-format json) or text that starts with a UTC timestamp.
 */
#ifndef RESATTN_ACCESS_LOG_H
#define RESATTN_ACCESS_LOG_H

#include <jansson.h>
#include <stdio.h>

/* o (stolen; NULL writes nothing) as one compact JSON line. */
void resattn_access_log_json(FILE *f, json_t *o);
/* "<YYYY-mm-ddTHH:MM:SSZ> " then the printf-formatted rest and a newline. */
void resattn_access_log_text(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
