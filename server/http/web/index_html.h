/* The page served at "/" (server/http/web/index.html), linked by server/http/web/index_html.S. */
#ifndef RESATTN_WEB_INDEX_HTML_H
#define RESATTN_WEB_INDEX_HTML_H

#include <stdint.h>

extern const unsigned char resattn_web_index_html[]; /* UTF-8 HTML, not NUL-terminated */
extern const uint64_t resattn_web_index_html_size;   /* bytes */

#endif
