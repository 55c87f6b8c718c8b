/*
 * The model configuration: the JSON string stored in __metadata__["resattn.config"] of a
 * model file. Parsing checks every field's type and range; each error names the field.
 */
#ifndef RESATTN_CONFIG_H
#define RESATTN_CONFIG_H

#include <resattn/resattn.h>

typedef struct resattn_config {
    char *name; /* or NULL */
    resattn_block_kind block;
    resattn_stem_kind stem;
    resattn_attention_kind attention;
    int num_stages;
    int layers[RESATTN_MAX_STAGES];
    int num_classes;
    int in_channels, in_height, in_width;
    char **labels;    /* [num_classes] or NULL */
    char *preprocess; /* JSON text or NULL */
    char *json;       /* the whole config text */
    double bn_eps;
} resattn_config;

resattn_status resattn_config_parse(const char *json, resattn_config *cfg, char *err,
                                    size_t err_len);
void resattn_config_release(resattn_config *cfg);
const char *resattn_attention_name(resattn_attention_kind a);

/* A model name must be usable as a URL path segment (/v2/models/<name>/infer) and a metrics
 * label: non-empty, without the characters RESATTN_MODEL_NAME_RULE lists. 1 if it is. */
int resattn_model_name_ok(const char *name);
#define RESATTN_MODEL_NAME_RULE                                                                    \
    "no spaces, control characters, '/', ':', '?', '#', '%', quotes or backslashes"

#endif
