/*
 * safetensors.h — reading .safetensors files by mmap (tensors are used in place) and
 * writing them. A file is: u64 little-endian header length N, N bytes of JSON
 * {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, data.
 */
#ifndef STRATA_MODEL_SAFETENSORS_H
#define STRATA_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "strata.h"

typedef enum st_dtype { ST_F32, ST_F16, ST_BF16, ST_I32, ST_I64, ST_F64, ST_I8, ST_U8, ST_BOOL,
                        ST_I16,
                        ST_BF16_PANELS, /* not a file dtype: BF16 repacked at load for the kernels (kernels/isa.h) */
                        ST_I8_PANELS    /* not a file dtype: int8 packed at load for the int8 compute mode (kernels/q8.h) */
} st_dtype;

typedef struct st_tensor {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[8];
    int64_t numel;
    const void *data;    /* inside the mapping, or `copy` where the mapping is off alignment */
    size_t nbytes;
    void *copy;          /* owned: the tensor's bytes aligned, for a file whose header is not padded */
} st_tensor;

typedef struct st_file {
    char *path;
    void *map;
    size_t map_len;
    st_tensor *tensors;
    int n_tensors;
    char *metadata_json; /* the __metadata__ object as JSON text, or NULL */
    int owns_map;        /* 1: mmapped by st_open; 0: the caller's buffer */
    size_t data_offset;  /* where the data section starts */
} st_file;

strata_status st_open(const char *path, st_file **out, strata_error *err);
/* The same over bytes in memory (not copied: they must outlive the st_file);
 * `what` names the buffer in errors. */
strata_status st_open_buffer(const void *bytes, size_t len, const char *what, st_file **out, strata_error *err);
void st_close(st_file *file);
const st_tensor *st_find(const st_file *file, const char *name);
const char *st_dtype_name(st_dtype dtype);
size_t st_dtype_size(st_dtype dtype);

/* Write tensors (F32 / I32 views) and optional metadata (a JSON object's text with
 * string values) as a safetensors file. */
/* The bytes of a safetensors file holding the tensors (malloc'd). */
strata_status st_serialize(const strata_tensor_view *tensors, int n, const char *metadata_json, void **out,
                           size_t *len, strata_error *err);
strata_status st_write(const char *path, const strata_tensor_view *tensors, int n,
                       const char *metadata_json, strata_error *err);

/* CRC-32 (IEEE 802.3), continuing from crc (0 to start). */
uint32_t st_crc32(uint32_t crc, const void *data, size_t len);

#endif
