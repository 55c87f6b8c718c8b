/*
 * Parsing of resattn.config (see config.h): block, layers, stem, attention, num_classes,
 * input {channels, height, width}, and the optional name, labels, preprocess and bn_eps.
 * Unknown keys are errors, and "preprocess" is checked here with the image pipeline's own
 * parser, so a config that could only fail later (on every image) fails at load.
 */
#include "model/config.h"
#include "data/preprocess.h"
#include "model/error.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const attention_names[] = {"none", "se", "eca", "cbam", "ca"};

const char *resattn_attention_name(resattn_attention_kind a) {
    return (unsigned)a < 5 ? attention_names[a] : "?";
}

int resattn_model_name_ok(const char *name) {
    if (!name || !*name)
        return 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p <= ' ' || *p == 127 || strchr("/:?#%\"\\", *p))
            return 0;
    return 1;
}

/* Index of s in names[n], or -1. */
static int lookup(const char *s, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(s, names[i]))
            return i;
    return -1;
}

static resattn_status get_enum(json_t *root, const char *field, const char *const *names, int n,
                               int *out, char *err, size_t err_len) {
    json_t *v = json_object_get(root, field);
    if (!v)
        return resattn_fail(err, err_len, RESATTN_ERR_CONFIG, "config: missing field \"%s\"",
                            field);
    if (!json_is_string(v))
        return resattn_fail(err, err_len, RESATTN_ERR_CONFIG,
                            "config: field \"%s\" must be a string", field);
    int i = lookup(json_string_value(v), names, n);
    if (i < 0) {
        char list[128] = "";
        for (int k = 0; k < n; k++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"", k ? ", " : "",
                     names[k]);
        return resattn_fail(err, err_len, RESATTN_ERR_CONFIG,
                            "config: unknown %s \"%.40s\" (expected one of %s)", field,
                            json_string_value(v), list);
    }
    *out = i;
    return RESATTN_OK;
}

/* obj[field] as an int in [lo, hi]; prefix ("" or "input.") names the parent in errors. */
static resattn_status get_int(json_t *obj, const char *prefix, const char *field, int lo, int hi,
                              int *out, char *err, size_t err_len) {
    json_t *v = json_object_get(obj, field);
    if (!v)
        return resattn_fail(err, err_len, RESATTN_ERR_CONFIG, "config: missing field \"%s%s\"",
                            prefix, field);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return resattn_fail(err, err_len, RESATTN_ERR_CONFIG,
                            "config: field \"%s%s\" must be an integer in [%d, %d]", prefix, field,
                            lo, hi);
    *out = (int)json_integer_value(v);
    return RESATTN_OK;
}

/* Refuse any key of obj not in names[n]; prefix ("" or "input.") names the parent. */
static resattn_status check_keys(json_t *obj, const char *prefix, const char *const *names, int n,
                                 char *err, size_t err_len) {
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (lookup(key, names, n) >= 0)
            continue;
        char list[160] = "";
        for (int k = 0; k < n; k++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? ", " : "",
                     names[k]);
        return resattn_fail(err, err_len, RESATTN_ERR_CONFIG,
                            "config: unknown field \"%s%.40s\" (expected %s)", prefix, key, list);
    }
    return RESATTN_OK;
}

static resattn_status parse_layers(json_t *root, resattn_config *cfg, char *err, size_t err_len) {
    json_t *v = json_object_get(root, "layers");
    if (!v)
        return resattn_fail(err, err_len, RESATTN_ERR_CONFIG, "config: missing field \"layers\"");
    if (!json_is_array(v) || json_array_size(v) < 1 || json_array_size(v) > RESATTN_MAX_STAGES)
        return resattn_fail(err, err_len, RESATTN_ERR_CONFIG,
                            "config: field \"layers\" must be an array of 1 to %d integers",
                            RESATTN_MAX_STAGES);
    cfg->num_stages = (int)json_array_size(v);
    for (int i = 0; i < cfg->num_stages; i++) {
        json_t *e = json_array_get(v, (size_t)i);
        if (!json_is_integer(e) || json_integer_value(e) < 1 || json_integer_value(e) > 1000)
            return resattn_fail(err, err_len, RESATTN_ERR_CONFIG,
                                "config: layers[%d] must be an integer in [1, 1000]", i);
        cfg->layers[i] = (int)json_integer_value(e);
    }
    return RESATTN_OK;
}

static resattn_status parse_input(json_t *root, resattn_config *cfg, char *err, size_t err_len) {
    json_t *in = json_object_get(root, "input");
    if (!in)
        return resattn_fail(err, err_len, RESATTN_ERR_CONFIG, "config: missing field \"input\"");
    if (!json_is_object(in))
        return resattn_fail(err, err_len, RESATTN_ERR_CONFIG,
                            "config: field \"input\" must be an object");
    static const char *const keys[] = {"channels", "height", "width"};
    resattn_status s;
    if ((s = check_keys(in, "input.", keys, 3, err, err_len)) ||
        (s = get_int(in, "input.", "channels", 1, 4096, &cfg->in_channels, err, err_len)) ||
        (s = get_int(in, "input.", "height", 1, 16384, &cfg->in_height, err, err_len)) ||
        (s = get_int(in, "input.", "width", 1, 16384, &cfg->in_width, err, err_len)))
        return s;
    return RESATTN_OK;
}

static resattn_status parse_optional(json_t *root, resattn_config *cfg, char *err, size_t err_len) {
    json_t *v;
    if ((v = json_object_get(root, "name")) && !json_is_null(v)) {
        if (!json_is_string(v))
            return resattn_fail(err, err_len, RESATTN_ERR_CONFIG,
                                "config: field \"name\" must be a string");
        const char *name = json_string_value(v);
        /* the name is a URL path segment (/v2/models/<name>) and a metrics label value */
        if (!resattn_model_name_ok(name))
            return resattn_fail(err, err_len, RESATTN_ERR_CONFIG,
                                "config: field \"name\" \"%.40s\" cannot be used in URLs (%s)",
                                name, RESATTN_MODEL_NAME_RULE);
        if (!(cfg->name = strdup(name)))
            return RESATTN_ERR_NOMEM;
    }
    if ((v = json_object_get(root, "labels")) && !json_is_null(v)) {
        if (!json_is_array(v) || json_array_size(v) != (size_t)cfg->num_classes)
            return resattn_fail(
                err, err_len, RESATTN_ERR_CONFIG,
                "config: field \"labels\" must be an array of num_classes (%d) strings",
                cfg->num_classes);
        cfg->labels = calloc((size_t)cfg->num_classes, sizeof *cfg->labels);
        if (!cfg->labels)
            return RESATTN_ERR_NOMEM;
        for (int i = 0; i < cfg->num_classes; i++) {
            json_t *e = json_array_get(v, (size_t)i);
            if (!json_is_string(e))
                return resattn_fail(err, err_len, RESATTN_ERR_CONFIG,
                                    "config: labels[%d] must be a string", i);
            if (!(cfg->labels[i] = strdup(json_string_value(e))))
                return RESATTN_ERR_NOMEM;
        }
    }
    if ((v = json_object_get(root, "preprocess")) && !json_is_null(v)) {
        if (!json_is_object(v))
            return resattn_fail(err, err_len, RESATTN_ERR_CONFIG,
                                "config: field \"preprocess\" must be an object");
        if (!(cfg->preprocess = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS)))
            return RESATTN_ERR_NOMEM;
        resattn_preprocess pp;
        char msg[RESATTN_ERR_LEN];
        if (resattn_preprocess_parse(cfg->preprocess, cfg->in_channels, cfg->in_height,
                                     cfg->in_width, &pp, msg, sizeof msg))
            return resattn_fail(err, err_len, RESATTN_ERR_CONFIG, "config: %s", msg);
    }
    cfg->bn_eps = 1e-5;
    if ((v = json_object_get(root, "bn_eps")) && !json_is_null(v)) {
        if (!json_is_number(v) || json_number_value(v) <= 0 || json_number_value(v) >= 1)
            return resattn_fail(err, err_len, RESATTN_ERR_CONFIG,
                                "config: field \"bn_eps\" must be a number in (0, 1)");
        cfg->bn_eps = json_number_value(v);
    }
    return RESATTN_OK;
}

static resattn_status parse_root(json_t *root, resattn_config *cfg, char *err, size_t err_len) {
    static const char *const blocks[] = {"basic", "bottleneck"};
    static const char *const stems[] = {"imagenet", "cifar"};
    static const char *const keys[] = {"name",        "block", "layers", "stem",       "attention",
                                       "num_classes", "input", "labels", "preprocess", "bn_eps"};
    if (!json_is_object(root))
        return resattn_fail(err, err_len, RESATTN_ERR_CONFIG,
                            "config: resattn.config is not a JSON object");
    int b, st, a;
    resattn_status s;
    if ((s = check_keys(root, "", keys, 10, err, err_len)) ||
        (s = get_enum(root, "block", blocks, 2, &b, err, err_len)) ||
        (s = parse_layers(root, cfg, err, err_len)) ||
        (s = get_enum(root, "stem", stems, 2, &st, err, err_len)) ||
        (s = get_enum(root, "attention", attention_names, 5, &a, err, err_len)) ||
        (s = get_int(root, "", "num_classes", 1, 1 << 20, &cfg->num_classes, err, err_len)) ||
        (s = parse_input(root, cfg, err, err_len)) || (s = parse_optional(root, cfg, err, err_len)))
        return s;
    cfg->block = (resattn_block_kind)b;
    cfg->stem = (resattn_stem_kind)st;
    cfg->attention = (resattn_attention_kind)a;
    return RESATTN_OK;
}

resattn_status resattn_config_parse(const char *json, resattn_config *cfg, char *err,
                                    size_t err_len) {
    memset(cfg, 0, sizeof *cfg);
    if (!json)
        return resattn_fail(err, err_len, RESATTN_ERR_CONFIG,
                            "config: __metadata__[\"resattn.config\"] is missing");
    json_error_t je;
    json_t *root = json_loadb(json, strlen(json), JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return resattn_fail(err, err_len, RESATTN_ERR_CONFIG,
                            "config: resattn.config is invalid JSON at byte %d: %s", je.position,
                            je.text);
    resattn_status s = parse_root(root, cfg, err, err_len);
    json_decref(root);
    if (!s && !(cfg->json = strdup(json)))
        s = RESATTN_ERR_NOMEM;
    if (s == RESATTN_ERR_NOMEM && err && err_len)
        snprintf(err, err_len, "config: out of memory");
    if (s)
        resattn_config_release(cfg);
    return s;
}

void resattn_config_release(resattn_config *cfg) {
    if (!cfg)
        return;
    if (cfg->labels)
        for (int i = 0; i < cfg->num_classes; i++)
            free(cfg->labels[i]);
    free(cfg->labels);
    free(cfg->name);
    free(cfg->preprocess);
    free(cfg->json);
    memset(cfg, 0, sizeof *cfg);
}
