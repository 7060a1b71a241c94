/*
 * config.h — the model's hyper-parameters, read from config.json in every spelling
 * the released Nemotron-H checkpoints use (see docs/model.md §2).
 */
#ifndef STRATA_MODEL_CONFIG_H
#define STRATA_MODEL_CONFIG_H

#include "strata.h"

#define STRATA_MAX_LAYERS 4096

typedef struct model_config {
    strata_model_info info;     /* the public part; info.pattern points at `pattern` */
    char pattern[STRATA_MAX_LAYERS + 1];
    int d_mlp;                  /* leading in_proj columns Mamba ignores (0 when released) */
    int moe_latent_size;        /* 0: experts act on d directly */
    int use_bias;               /* Mamba in_proj / out_proj bias */
    int use_conv_bias;
    int attention_bias;
    int mlp_bias;
} model_config;

/* Parse a config.json file (a nested "text_config" is used when present). */
strata_status config_load(const char *path, model_config *cfg, strata_error *err);

#endif
