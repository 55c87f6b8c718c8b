/* The web page served at "/" linked into the binary as read-only data: RESATTN_WEB_PAGE is
 * the page the Makefile writes from server/http/web/index.html with the example pictures
 * embedded (server/http/web/embed_examples.sh). */
#ifndef RESATTN_WEB_PAGE
#define RESATTN_WEB_PAGE "server/http/web/index.html"
#endif
    .section .rodata
    .global resattn_web_index_html
    .global resattn_web_index_html_size
resattn_web_index_html:
    .incbin RESATTN_WEB_PAGE
resattn_web_index_html_end:
    .balign 8
resattn_web_index_html_size:
    .quad resattn_web_index_html_end - resattn_web_index_html
    .section .note.GNU-stack,"",@progbits
