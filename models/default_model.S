/* The built-in model: models/default.safetensors linked into the binary as read-only data. */
    .section .rodata
    .balign 64
    .global resattn_default_model_data
    .global resattn_default_model_size
resattn_default_model_data:
    .incbin "models/default.safetensors"
resattn_default_model_end:
    .balign 8
resattn_default_model_size:
    .quad resattn_default_model_end - resattn_default_model_data
    .section .note.GNU-stack,"",@progbits
