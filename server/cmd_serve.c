/* Temporary placeholder for `resattn serve` until the server lands. */
#include "commands.h"

#include <stdio.h>

int resattn_cmd_serve(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "serve: not built yet\n");
    return 2;
}
