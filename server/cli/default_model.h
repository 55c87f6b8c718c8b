/* The built-in model, linked from models/default.safetensors by models/default_model.S. */
#ifndef RESATTN_DEFAULT_MODEL_H
#define RESATTN_DEFAULT_MODEL_H

#include <stdint.h>

extern const unsigned char resattn_default_model_data[];
extern const uint64_t resattn_default_model_size; /* 0 when the build had no model file */

#endif
