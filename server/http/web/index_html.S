/* The web page served at "/": server/http/web/index.html linked into the binary as read-only data. */
    .section .rodata
    .global resattn_web_index_html
    .global resattn_web_index_html_size
resattn_web_index_html:
    .incbin "server/http/web/index.html"
resattn_web_index_html_end:
    .balign 8
resattn_web_index_html_size:
    .quad resattn_web_index_html_end - resattn_web_index_html
    .section .note.GNU-stack,"",@progbits
