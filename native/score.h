/*
 * mks -- the bandit's request path in C: one inference request's body in, its answer out.
 *
 * Part of libbetadist.so (same library, same cffi binding).  For a Thompson-sampling request
 * the per-item work -- finding each candidate id's posterior, drawing its Beta sample,
 * ranking, and writing the JSON answer -- is the whole cost of the request, and done item by
 * item in Python it is several times the cost of the HTTP exchange itself.  Here it is one
 * pass over the body:
 *
 *   mks_parse()  reads an OIP v2 `infer` or KServe v1 `predict` body in the common, plain
 *                shape (see below) and records where each item id lies in the body;
 *   mks_score()  looks every id up in an mks_index (item id -> row of the posterior arrays),
 *                draws all Beta samples with one betadist_sample_batch() call, ranks the top
 *                k, and writes the complete JSON response.
 *
 * Plain shape, and the fallback
 * -----------------------------
 * The parser accepts a strict subset of JSON: objects, arrays, strings made of printable
 * ASCII (0x20..0x7f) without escapes, and unsigned integers without sign, fraction or
 * exponent.  It accepts a request only when it is a complete, valid JSON document that the
 * Python decoder (mlkube.serving.protocol + bandit.parse_query) would accept with the very
 * same meaning: known fields only, no duplicate keys, `items` BYTES of shape [n] with
 * 1 <= n <= max_items, `segment` BYTES [1] of 1..128 characters, `top_k` INT32/INT64/UINT32/
 * UINT64 [1] >= 1 (or both as request parameters), an optional string `id`.  For anything
 * else -- escapes, non-ASCII text, nested data, tensor parameters, `outputs`, malformed
 * JSON, an error to report -- it returns MKS_FALLBACK and the caller takes the Python path,
 * which gives the exact answer or the exact error.  The fallback is never an error by
 * itself: it only means "not the fast shape".
 *
 * Numbers in the answer
 * ---------------------
 * Scores are written with 17 significant digits, correctly rounded (trailing zeros dropped),
 * which reads back as the very same double; the conversion is exact 128-bit integer
 * arithmetic for scores in [2^-19, 1) (2^-19 is about 1.9e-6), and snprintf("%.17g") for the
 * rest (1.0, and the rare smaller scores).  0 is written "0.0", 1 "1.0".
 *
 * Ranking: descending score, ties by request order (the same order a stable sort gives).
 *
 * Thread safety: an mks_index is immutable after mks_index_create() and may be shared; an
 * mks_scorer is one thread's scratch space.
 */
#ifndef MKS_SCORE_H
#define MKS_SCORE_H

#include <stddef.h>
#include <stdint.h>

#include "betadist.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes. */
enum {
    MKS_OK = 0,
    MKS_FALLBACK = 1, /* mks_parse: not the plain shape; use the general decoder */
    MKS_ENOMEM = 2,   /* out of memory */
    MKS_EPARAM = 3,   /* mks_score: a posterior parameter is invalid (<= 0, NaN, inf) */
    MKS_EARG = 4,     /* a bad argument (NULL, row count mismatch, unknown protocol) */
};

/* Protocols for mks_parse(). */
enum {
    MKS_V2 = 2, /* OIP v2 REST `infer` */
    MKS_V1 = 1, /* KServe v1 `predict` */
    MKS_V2_BINARY = 3, /* OIP v2 `infer` with the binary tensor extension (mks_parse_binary) */
};

#define MKS_MAX_SEGMENT 128

/* Item id -> row.  keys holds the n ids back to back; id i is keys[ends[i-1] .. ends[i])
 * (ends[-1] = 0).  An id given twice maps to its last row.  `seed` keys the hash (pass a
 * random value per process).  NULL when out of memory or when ends is not non-decreasing. */
typedef struct mks_index mks_index;
BETADIST_API mks_index *mks_index_create(const char *keys, const uint64_t *ends, size_t n,
                                        uint64_t seed);
BETADIST_API void mks_index_free(mks_index *index);
/* Number of rows: n as given to mks_index_create(), an id listed twice counted twice. */
BETADIST_API size_t mks_index_size(const mks_index *index);
/* Row of an id, or -1. */
BETADIST_API int64_t mks_index_find(const mks_index *index, const char *key, size_t len);
/* rows[i] = the row of key i, or -1; the n keys are laid out as for mks_index_create().
 * Returns MKS_OK, or MKS_EARG (NULL arguments, ends not non-decreasing; rows untouched). */
BETADIST_API int mks_index_find_many(const mks_index *index, const char *keys,
                                     const uint64_t *ends, size_t n, int64_t *rows);

/* What mks_parse() found.  Offsets are into the body. */
typedef struct {
    uint32_t n_items;     /* candidate ids */
    uint32_t top_k;       /* ranked ids in the answer: min(top_k, n_items) */
    int64_t segment_off;  /* the segment's characters, or -1 when none was given */
    uint32_t segment_len;
    int64_t id_off;       /* the request id's characters (v2), or -1 */
    uint32_t id_len;
    uint32_t n_missing;   /* set by mks_score(): ids the index does not know */
    uint32_t binary_output; /* binary requests: the answer's outputs are binary data */
    uint32_t json_len;    /* set by mks_score() for a binary answer: its JSON part's length */
} mks_request;

/* One thread's scratch space for requests of up to max_items ids. */
typedef struct mks_scorer mks_scorer;
BETADIST_API mks_scorer *mks_scorer_create(size_t max_items);
BETADIST_API void mks_scorer_free(mks_scorer *scorer);

/* Parse `body` (MKS_V2 or MKS_V1); MKS_OK or MKS_FALLBACK (or MKS_EARG). */
BETADIST_API int mks_parse(mks_scorer *scorer, int protocol, const char *body, size_t len,
                           mks_request *req);

/* Parse an OIP v2 `infer` body with the binary tensor extension: its first json_len bytes
 * are the JSON request (the Inference-Header-Content-Length header), the rest is tensor data.
 * Accepted in the plain shape above, where a tensor may give `"parameters":
 * {"binary_data_size": N}` instead of `data` (items and segment as BYTES elements of plain
 * characters, top_k as one INT32/INT64/UINT32/UINT64 >= 1), the data fill the rest of the body
 * exactly, and the request parameters may also hold `"binary_data_output": true|false`.
 * Score it with protocol MKS_V2_BINARY: the answer is binary (req->json_len set) when
 * binary_data_output was true, the plain JSON answer otherwise.  Returns as mks_parse(). */
BETADIST_API int mks_parse_binary(mks_scorer *scorer, const char *body, size_t len,
                                  size_t json_len, mks_request *req);

/* Score the request mks_parse() just accepted (same scorer, same body): item i gets
 * Beta(alpha[row], beta[row]) for its row in `index`, or row n_rows - 1 (the prior) when the
 * index does not know it; n_rows must be mks_index_size(index) + 1.  The answer is written to
 * scratch memory: *out and *out_len describe it until the scorer's next call.  For MKS_V2
 * `head` (head_len bytes) is written first: the caller's rendering of
 * {"model_name":...,"model_version":..., up to and including the comma.  On MKS_EPARAM
 * *bad_row says which row is invalid and nothing is drawn. */
BETADIST_API int mks_score(mks_scorer *scorer, betadist_rng *rng, const mks_index *index,
                           const double *alpha, const double *beta, size_t n_rows,
                           const char *body, int protocol, mks_request *req, const char *head,
                           size_t head_len, const char **out, size_t *out_len, size_t *bad_row);

/* Where the k-th id that mks_score() could not find lies in the body (k < n_missing). */
BETADIST_API void mks_missing(const mks_scorer *scorer, uint32_t k, uint32_t *off,
                              uint32_t *len);

/* Write x (finite, >= 0) as mks_score() does; returns the length (at most 32 bytes). */
BETADIST_API size_t mks_format_double(double x, char *buf);

#ifdef __cplusplus
}
#endif

#endif /* MKS_SCORE_H */
