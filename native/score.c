/*
 * mks: the bandit's request path in C.  See score.h for what is accepted and why.
 *
 * Index: open addressing with linear probing over 16-byte slots (hash, row, length), load
 * factor at most 1/2, so a lookup is usually one slot read and one memcmp against the key
 * bytes, both in a few hundred KiB for a catalogue of 10,000 items.  The hash is a
 * multiply-xorshift over 8-byte words, seeded with a random value per process so that a list
 * of colliding ids cannot simply be looked up; it is not a cryptographic hash.  Every hit is
 * confirmed against the stored key bytes, so collisions can only slow a lookup, never give a
 * wrong row.
 */
#include "score.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EMPTY_ROW UINT32_MAX

typedef unsigned __int128 u128;

/* ------------------------------------------------------------------------------ index -- */

typedef struct {
    uint64_t hash;
    uint32_t row;
    uint32_t len;
} slot_t;

struct mks_index {
    size_t n; /* rows */
    uint64_t seed;
    size_t mask;
    slot_t *slots;
    uint64_t *starts; /* start of each row's id in keys */
    uint64_t *ends;
    char *keys;
};

static inline uint64_t load8(const unsigned char *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

static inline uint32_t load4(const unsigned char *p) {
    uint32_t w;
    memcpy(&w, p, 4);
    return w;
}

/* The last len % 8 bytes of a key of length len (as one word; only used for hashing, so
 * overlapping loads are fine: the length is hashed too).  Never reads outside the key. */
static inline uint64_t tail_word(const unsigned char *p, size_t len, size_t rest) {
    if (len >= 8) return load8(p + rest - 8);
    if (rest >= 4) return load4(p) | ((uint64_t)load4(p + rest - 4) << 32);
    return (uint64_t)p[0] | ((uint64_t)p[rest / 2] << 8) | ((uint64_t)p[rest - 1] << 16);
}

static inline uint64_t key_hash(uint64_t seed, const char *key, size_t len) {
    const unsigned char *p = (const unsigned char *)key;
    uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15ULL);
    size_t rest = len;
    while (rest >= 8) {
        h = (h ^ load8(p)) * 0xff51afd7ed558ccdULL;
        h ^= h >> 29;
        p += 8;
        rest -= 8;
    }
    if (rest) {
        h = (h ^ tail_word(p, len, rest)) * 0xc4ceb9fe1a85ec53ULL;
        h ^= h >> 32;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

/* a[0..len) == b[0..len), without a library call for the common id lengths. */
static inline int same_bytes(const char *a, const char *b, size_t len) {
    const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
    if (len >= 8 && len <= 16)
        return load8(x) == load8(y) && load8(x + len - 8) == load8(y + len - 8);
    if (len >= 4 && len < 8)
        return load4(x) == load4(y) && load4(x + len - 4) == load4(y + len - 4);
    return len == 0 || memcmp(x, y, len) == 0;
}

static inline int64_t probe(const mks_index *ix, uint64_t h, const char *key, size_t len) {
    size_t i = (size_t)h & ix->mask;
    for (;;) {
        const slot_t *s = &ix->slots[i];
        if (s->row == EMPTY_ROW) return -1;
        if (s->hash == h && s->len == len && same_bytes(ix->keys + ix->starts[s->row], key, len))
            return (int64_t)s->row;
        i = (i + 1) & ix->mask;
    }
}

void mks_index_free(mks_index *ix) {
    if (!ix) return;
    free(ix->slots);
    free(ix->starts);
    free(ix->keys);
    free(ix);
}

mks_index *mks_index_create(const char *keys, const uint64_t *ends, size_t n, uint64_t seed) {
    if (n >= EMPTY_ROW || (n && (!keys || !ends))) return NULL;
    uint64_t total = n ? ends[n - 1] : 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t start = i ? ends[i - 1] : 0;
        if (ends[i] < start || ends[i] - start > UINT32_MAX) return NULL;
    }
    mks_index *ix = calloc(1, sizeof *ix);
    if (!ix) return NULL;
    size_t cap = 8;
    while (cap < 2 * n) cap <<= 1;
    ix->n = n;
    ix->seed = seed;
    ix->mask = cap - 1;
    ix->slots = malloc(cap * sizeof *ix->slots);
    ix->starts = malloc((n ? n : 1) * sizeof *ix->starts);
    ix->keys = malloc(total ? (size_t)total : 1);
    if (!ix->slots || !ix->starts || !ix->keys) {
        mks_index_free(ix);
        return NULL;
    }
    if (total) memcpy(ix->keys, keys, (size_t)total);
    for (size_t i = 0; i < cap; i++) ix->slots[i].row = EMPTY_ROW;
    for (size_t r = 0; r < n; r++) {
        uint64_t start = r ? ends[r - 1] : 0;
        uint32_t len = (uint32_t)(ends[r] - start);
        const char *key = ix->keys + start;
        ix->starts[r] = start;
        uint64_t h = key_hash(seed, key, len);
        size_t i = (size_t)h & ix->mask;
        for (;;) {
            slot_t *s = &ix->slots[i];
            if (s->row == EMPTY_ROW) {
                s->hash = h;
                s->row = (uint32_t)r;
                s->len = len;
                break;
            }
            if (s->hash == h && s->len == len &&
                same_bytes(ix->keys + ix->starts[s->row], key, len)) {
                s->row = (uint32_t)r; /* the last occurrence wins, as in a dict */
                break;
            }
            i = (i + 1) & ix->mask;
        }
    }
    return ix;
}

size_t mks_index_size(const mks_index *ix) { return ix ? ix->n : 0; }

int64_t mks_index_find(const mks_index *ix, const char *key, size_t len) {
    if (!ix || (len && !key)) return -1;
    return probe(ix, key_hash(ix->seed, key, len), key, len);
}

int mks_index_find_many(const mks_index *ix, const char *keys, const uint64_t *ends, size_t n,
                        int64_t *rows) {
    if (!n) return MKS_OK;
    if (!ix || !keys || !ends || !rows) return MKS_EARG;
    for (size_t i = 0; i < n; i++)
        if (ends[i] < (i ? ends[i - 1] : 0)) return MKS_EARG;
    /* Hash and prefetch first (rows[] holds the hashes meanwhile), then probe. */
    for (size_t i = 0; i < n; i++) {
        uint64_t start = i ? ends[i - 1] : 0;
        uint64_t h = key_hash(ix->seed, keys + start, (size_t)(ends[i] - start));
        memcpy(&rows[i], &h, sizeof h);
        __builtin_prefetch(&ix->slots[(size_t)h & ix->mask]);
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t start = i ? ends[i - 1] : 0, h;
        memcpy(&h, &rows[i], sizeof h);
        rows[i] = probe(ix, h, keys + start, (size_t)(ends[i] - start));
    }
    return MKS_OK;
}

/* ----------------------------------------------------------------------------- scorer -- */

struct mks_scorer {
    size_t max_items;
    size_t cap;           /* string spans the parser may record */
    uint32_t *off, *len;  /* spans of every string value recorded by the parser */
    size_t used;          /* spans recorded by the current parse */
    size_t items_start;   /* where the item ids' spans begin */
    uint64_t *hashes;
    double *alpha, *beta, *scores;
    u128 *keys, *tmp;
    uint32_t *missing;
    uint32_t n_missing;
    char *out;
    size_t out_cap;
};

void mks_scorer_free(mks_scorer *sc) {
    if (!sc) return;
    free(sc->off);
    free(sc->len);
    free(sc->hashes);
    free(sc->alpha);
    free(sc->beta);
    free(sc->scores);
    free(sc->keys);
    free(sc->tmp);
    free(sc->missing);
    free(sc->out);
    free(sc);
}

mks_scorer *mks_scorer_create(size_t max_items) {
    if (max_items == 0 || max_items >= (size_t)UINT32_MAX - 4) return NULL;
    mks_scorer *sc = calloc(1, sizeof *sc);
    if (!sc) return NULL;
    size_t n = max_items, cap = max_items + 4;
    sc->max_items = n;
    sc->cap = cap;
    sc->off = malloc(cap * sizeof *sc->off);
    sc->len = malloc(cap * sizeof *sc->len);
    sc->hashes = malloc(n * sizeof *sc->hashes);
    sc->alpha = malloc(n * sizeof *sc->alpha);
    sc->beta = malloc(n * sizeof *sc->beta);
    sc->scores = malloc(n * sizeof *sc->scores);
    sc->keys = malloc(n * sizeof *sc->keys);
    sc->tmp = malloc(n * sizeof *sc->tmp);
    sc->missing = malloc(n * sizeof *sc->missing);
    if (!sc->off || !sc->len || !sc->hashes || !sc->alpha || !sc->beta || !sc->scores ||
        !sc->keys || !sc->tmp || !sc->missing) {
        mks_scorer_free(sc);
        return NULL;
    }
    return sc;
}

/* ----------------------------------------------------------------------------- parser -- */

typedef struct {
    const unsigned char *base, *p, *end;
    const unsigned char *binary_end; /* binary requests: the body's end (end: the JSON's) */
} cur_t;

static inline void ws(cur_t *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t'))
        c->p++;
}

/* Skip whitespace, then consume `ch` if it is next. */
static inline int eat(cur_t *c, unsigned char ch) {
    ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

static inline int peek(cur_t *c) {
    ws(c);
    return c->p < c->end ? *c->p : -1;
}

#define ONES 0x0101010101010101ULL
#define HIGH 0x8080808080808080ULL

/* A flag in the high bit of every byte of w that is '"', a backslash, below 0x20 or 0x80 and
 * above.  The lowest flagged byte is always a true one (a borrow only spreads upwards from a
 * byte that is itself flagged), which is all the scan below needs. */
static inline uint64_t special_bytes(uint64_t w) {
    uint64_t q = w ^ (ONES * '"'), b = w ^ (ONES * '\\');
    return ((q - ONES) & ~q) | ((b - ONES) & ~b) | ((w - ONES * 0x20) & ~w) | w;
}

/* A string of printable ASCII without escapes; its span (offset into the body, length). */
static int str(cur_t *c, uint32_t *off, uint32_t *len) {
    if (!eat(c, '"')) return 0;
    const unsigned char *s = c->p, *q = s;
    for (;;) {
        if (q + 8 <= c->end) {
            uint64_t m = special_bytes(load8(q)) & HIGH;
            if (!m) {
                q += 8;
                continue;
            }
            q += (size_t)__builtin_ctzll(m) >> 3;
        } else if (q >= c->end) {
            return 0;
        }
        unsigned char ch = *q;
        if (ch == '"') break;
        if (ch < 0x20 || ch >= 0x80 || ch == '\\') return 0;
        q++;
    }
    *off = (uint32_t)(s - c->base);
    *len = (uint32_t)(q - s);
    c->p = q + 1;
    return 1;
}

/* An unsigned integer: digits only, no leading zero, at most 10 digits. */
static int read_uint(cur_t *c, uint64_t *v) {
    ws(c);
    const unsigned char *q = c->p;
    if (q >= c->end || *q < '0' || *q > '9') return 0;
    if (*q == '0' && q + 1 < c->end && q[1] >= '0' && q[1] <= '9') return 0;
    uint64_t x = 0;
    int digits = 0;
    while (q < c->end && *q >= '0' && *q <= '9') {
        if (++digits > 10) return 0;
        x = x * 10 + (uint64_t)(*q - '0');
        q++;
    }
    c->p = q;
    *v = x;
    return 1;
}

static inline int is(const cur_t *c, uint32_t off, uint32_t len, const char *lit) {
    size_t n = strlen(lit);
    return len == n && memcmp(c->base + off, lit, n) == 0;
}

enum { T_ITEMS = 1, T_SEGMENT = 2, T_TOPK = 3 };
enum { D_NONE = 0, D_STRINGS = 1, D_UINT = 2 };

typedef struct {
    int name, dtype_ok_bytes, dtype_ok_int, int_size, int_signed;
    int have_name, have_dtype, have_shape, have_data, have_params;
    uint64_t dim0;
    int data_kind;
    size_t data_start, data_count;
    uint64_t data_uint;
    uint64_t binary_size; /* with have_params: the tensor's bytes after the JSON part */
} tensor_t;

/* An array of strings (spans recorded in the scorer) or of exactly one unsigned integer. */
static int data_array(mks_scorer *sc, cur_t *c, tensor_t *t) {
    if (!eat(c, '[')) return 0;
    int first = peek(c);
    if (first == '"') {
        t->data_kind = D_STRINGS;
        t->data_start = sc->used;
        do {
            if (sc->used >= sc->cap) return 0;
            if (!str(c, &sc->off[sc->used], &sc->len[sc->used])) return 0;
            sc->used++;
        } while (eat(c, ','));
        t->data_count = sc->used - t->data_start;
    } else if (first >= '0' && first <= '9') {
        t->data_kind = D_UINT;
        if (!read_uint(c, &t->data_uint)) return 0;
        t->data_count = 1;
    } else {
        return 0; /* empty, nested, or another kind of value */
    }
    return eat(c, ']');
}

static int shape_array(cur_t *c, tensor_t *t) {
    if (!eat(c, '[')) return 0;
    if (!read_uint(c, &t->dim0)) return 0; /* [] is a scalar: not a plain shape */
    return eat(c, ']');                /* more than one dimension: not plain */
}

/* A tensor's parameters in a binary request: exactly {"binary_data_size": N}. */
static int binary_params(cur_t *c, tensor_t *t) {
    uint32_t ko, kl;
    if (!eat(c, '{') || !str(c, &ko, &kl) || !eat(c, ':')) return 0;
    if (!is(c, ko, kl, "binary_data_size") || !read_uint(c, &t->binary_size)) return 0;
    return eat(c, '}');
}

static int tensor(mks_scorer *sc, cur_t *c, tensor_t *t, int binary) {
    memset(t, 0, sizeof *t);
    if (!eat(c, '{')) return 0;
    if (eat(c, '}')) return 0;
    do {
        uint32_t ko, kl, vo, vl;
        if (!str(c, &ko, &kl) || !eat(c, ':')) return 0;
        if (is(c, ko, kl, "name")) {
            if (t->have_name++ || !str(c, &vo, &vl)) return 0;
            if (is(c, vo, vl, "items")) t->name = T_ITEMS;
            else if (is(c, vo, vl, "segment")) t->name = T_SEGMENT;
            else if (is(c, vo, vl, "top_k")) t->name = T_TOPK;
            else return 0;
        } else if (is(c, ko, kl, "datatype")) {
            if (t->have_dtype++ || !str(c, &vo, &vl)) return 0;
            t->dtype_ok_bytes = is(c, vo, vl, "BYTES");
            t->int_size = is(c, vo, vl, "INT64") || is(c, vo, vl, "UINT64")   ? 8
                          : is(c, vo, vl, "INT32") || is(c, vo, vl, "UINT32") ? 4
                                                                              : 0;
            t->int_signed = is(c, vo, vl, "INT64") || is(c, vo, vl, "INT32");
            t->dtype_ok_int = t->int_size != 0;
            if (!t->dtype_ok_bytes && !t->dtype_ok_int) return 0;
        } else if (is(c, ko, kl, "shape")) {
            if (t->have_shape++ || !shape_array(c, t)) return 0;
        } else if (is(c, ko, kl, "data")) {
            if (t->have_data++ || !data_array(sc, c, t)) return 0;
        } else if (binary && is(c, ko, kl, "parameters")) {
            if (t->have_params++ || !binary_params(c, t)) return 0;
        } else {
            return 0; /* other tensor parameters or an unknown field */
        }
    } while (eat(c, ','));
    if (!eat(c, '}')) return 0;
    if (!t->have_name || !t->have_dtype || !t->have_shape) return 0;
    if (t->have_params) return !t->have_data; /* its data come after the JSON part */
    return t->have_data && t->dim0 == t->data_count;
}

/* `true` or `false`. */
static int boolean(cur_t *c, int *v) {
    ws(c);
    size_t left = (size_t)(c->end - c->p);
    if (left >= 4 && memcmp(c->p, "true", 4) == 0) {
        *v = 1;
        c->p += 4;
        return 1;
    }
    if (left >= 5 && memcmp(c->p, "false", 5) == 0) {
        *v = 0;
        c->p += 5;
        return 1;
    }
    return 0;
}

/* True when every byte is printable ASCII other than '"' and a backslash: what str() accepts
 * between quotes, so an id from binary data can be written into JSON as it is. */
static int plain_bytes(const unsigned char *p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        if (special_bytes(load8(p + i)) & HIGH) return 0;
    for (; i < n; i++)
        if (p[i] < 0x20 || p[i] >= 0x80 || p[i] == '"' || p[i] == '\\') return 0;
    return 1;
}

/* Walk one tensor's binary data (b .. b + size): BYTES elements (a 4-byte little-endian
 * length, then the bytes) recorded as spans, or one integer of the tensor's type. */
static int binary_data(mks_scorer *sc, const unsigned char *base, const unsigned char *b,
                       tensor_t *t) {
    const unsigned char *end = b + t->binary_size;
    if (t->dtype_ok_bytes) {
        t->data_kind = D_STRINGS;
        t->data_start = sc->used;
        for (uint64_t i = 0; i < t->dim0; i++) {
            if (end - b < 4 || sc->used >= sc->cap) return 0;
            uint32_t n = load4(b);
            b += 4;
            if ((uint64_t)(end - b) < n || !plain_bytes(b, n)) return 0;
            sc->off[sc->used] = (uint32_t)(b - base);
            sc->len[sc->used] = n;
            sc->used++;
            b += n;
        }
        t->data_count = sc->used - t->data_start;
        return b == end;
    }
    /* An integer tensor of one element (top_k); the range rules are parse_body's. */
    if (t->dim0 != 1 || t->binary_size != (uint64_t)t->int_size) return 0;
    uint64_t v = t->int_size == 8 ? load8(b) : load4(b);
    if (t->int_signed && (t->int_size == 8 ? (v >> 63) != 0 : (v >> 31) != 0)) return 0;
    t->data_kind = D_UINT;
    t->data_uint = v;
    t->data_count = 1;
    return 1;
}

typedef struct {
    int have_top_k, have_segment, have_binary_output, binary_output;
    uint64_t top_k;
    uint32_t seg_off, seg_len;
} params_t;

static int parameters(cur_t *c, params_t *pr, int binary) {
    if (!eat(c, '{')) return 0;
    if (eat(c, '}')) return 1;
    do {
        uint32_t ko, kl;
        if (!str(c, &ko, &kl) || !eat(c, ':')) return 0;
        if (is(c, ko, kl, "top_k")) {
            if (pr->have_top_k++ || !read_uint(c, &pr->top_k)) return 0;
        } else if (is(c, ko, kl, "segment")) {
            if (pr->have_segment++ || !str(c, &pr->seg_off, &pr->seg_len)) return 0;
        } else if (binary && is(c, ko, kl, "binary_data_output")) {
            if (pr->have_binary_output++ || !boolean(c, &pr->binary_output)) return 0;
        } else {
            return 0;
        }
    } while (eat(c, ','));
    return eat(c, '}');
}

static int parse_body(mks_scorer *sc, int protocol, cur_t *c, mks_request *req) {
    /* A binary request is a v2 request whose JSON part ends at c->end and whose tensor data
     * may follow it, up to the body's end (binary_end). */
    int binary = protocol == MKS_V2_BINARY;
    if (binary) protocol = MKS_V2;
    tensor_t ts[3];
    int nt = 0, have_inputs = 0, have_id = 0, have_params = 0;
    params_t pr = {0};
    uint32_t id_off = 0, id_len = 0;
    if (!eat(c, '{')) return 0;
    if (eat(c, '}')) return 0;
    do {
        uint32_t ko, kl;
        if (!str(c, &ko, &kl) || !eat(c, ':')) return 0;
        if (protocol == MKS_V2 && is(c, ko, kl, "inputs")) {
            if (have_inputs++ || !eat(c, '[')) return 0;
            do {
                if (nt == 3 || !tensor(sc, c, &ts[nt], binary)) return 0;
                for (int j = 0; j < nt; j++)
                    if (ts[j].name == ts[nt].name) return 0;
                nt++;
            } while (eat(c, ','));
            if (!eat(c, ']')) return 0;
        } else if (protocol == MKS_V1 && is(c, ko, kl, "instances")) {
            if (have_inputs++) return 0;
            tensor_t *t = &ts[nt++];
            memset(t, 0, sizeof *t);
            t->name = T_ITEMS;
            t->dtype_ok_bytes = 1;
            if (!data_array(sc, c, t) || t->data_kind != D_STRINGS) return 0;
            t->dim0 = t->data_count;
        } else if (protocol == MKS_V2 && is(c, ko, kl, "id")) {
            if (have_id++ || !str(c, &id_off, &id_len)) return 0;
        } else if (is(c, ko, kl, "parameters")) {
            if (have_params++ || !parameters(c, &pr, binary)) return 0;
        } else {
            return 0; /* outputs, an unknown field, or v1 "inputs" */
        }
    } while (eat(c, ','));
    if (!eat(c, '}')) return 0;
    ws(c);
    if (c->p != c->end) return 0;
    if (binary) {
        /* The tensors' data, in input order, must fill the rest of the body exactly. */
        const unsigned char *b = c->end;
        for (int j = 0; j < nt; j++) {
            tensor_t *t = &ts[j];
            if (!t->have_params) continue;
            if ((uint64_t)(c->binary_end - b) < t->binary_size) return 0;
            if (!binary_data(sc, c->base, b, t)) return 0;
            b += t->binary_size;
        }
        if (b != c->binary_end) return 0;
    }

    const tensor_t *items = NULL, *segment = NULL, *top_k = NULL;
    for (int j = 0; j < nt; j++) {
        const tensor_t *t = &ts[j];
        if (t->name == T_ITEMS) items = t;
        else if (t->name == T_SEGMENT) segment = t;
        else top_k = t;
    }
    if (!items || !items->dtype_ok_bytes || items->data_kind != D_STRINGS) return 0;
    size_t n = items->data_count;
    if (n == 0 || n > sc->max_items) return 0;

    req->segment_off = -1;
    req->segment_len = 0;
    if (segment) {
        if (!segment->dtype_ok_bytes || segment->data_kind != D_STRINGS || segment->dim0 != 1)
            return 0;
        pr.seg_off = sc->off[segment->data_start];
        pr.seg_len = sc->len[segment->data_start];
        pr.have_segment = 1;
    }
    if (pr.have_segment) {
        if (pr.seg_len == 0 || pr.seg_len > MKS_MAX_SEGMENT) return 0;
        req->segment_off = pr.seg_off;
        req->segment_len = pr.seg_len;
    }
    if (top_k) {
        if (!top_k->dtype_ok_int || top_k->data_kind != D_UINT || top_k->dim0 != 1) return 0;
        pr.top_k = top_k->data_uint;
        pr.have_top_k = 1;
    }
    uint64_t k = n;
    if (pr.have_top_k) {
        if (pr.top_k < 1) return 0;
        if (pr.top_k < k) k = pr.top_k;
    }
    req->n_items = (uint32_t)n;
    req->top_k = (uint32_t)k;
    req->id_off = have_id ? (int64_t)id_off : -1;
    req->id_len = have_id ? id_len : 0;
    req->n_missing = 0;
    req->binary_output = (uint32_t)(binary && pr.binary_output);
    req->json_len = 0;
    sc->items_start = items->data_start;
    return 1;
}

int mks_parse(mks_scorer *sc, int protocol, const char *body, size_t len, mks_request *req) {
    if (!sc || !req || (len && !body) || (protocol != MKS_V1 && protocol != MKS_V2))
        return MKS_EARG;
    if (len == 0 || len >= UINT32_MAX) {
        req->n_items = 0;
        return MKS_FALLBACK;
    }
    cur_t c = {(const unsigned char *)body, (const unsigned char *)body,
               (const unsigned char *)body + len, (const unsigned char *)body + len};
    sc->used = 0;
    sc->n_missing = 0;
    if (!parse_body(sc, protocol, &c, req)) {
        req->n_items = 0;
        return MKS_FALLBACK;
    }
    return MKS_OK;
}

int mks_parse_binary(mks_scorer *sc, const char *body, size_t len, size_t json_len,
                     mks_request *req) {
    if (!sc || !req || (len && !body) || json_len > len) return MKS_EARG;
    if (json_len == 0 || len >= UINT32_MAX) {
        req->n_items = 0;
        return MKS_FALLBACK;
    }
    cur_t c = {(const unsigned char *)body, (const unsigned char *)body,
               (const unsigned char *)body + json_len, (const unsigned char *)body + len};
    sc->used = 0;
    sc->n_missing = 0;
    if (!parse_body(sc, MKS_V2_BINARY, &c, req)) {
        req->n_items = 0;
        return MKS_FALLBACK;
    }
    return MKS_OK;
}

/* ---------------------------------------------------------------------------- numbers -- */

static const char DIGIT_PAIRS[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

#define E8 100000000ULL
#define E16 (E8 * E8)
#define E17 (E16 * 10)

/* 10^17 .. 10^22 */
static const u128 POW10_17[] = {(u128)E17,       (u128)E17 * 10,   (u128)E17 * 100,
                                (u128)E17 * 1000, (u128)E17 * 10000, (u128)E17 * 100000};

static inline void two_digits(char *p, uint32_t v) { memcpy(p, DIGIT_PAIRS + 2 * v, 2); }

/* v < 10^8 as exactly 8 digits. */
static inline void eight_digits(char *p, uint32_t v) {
    uint32_t hi = v / 10000, lo = v % 10000;
    two_digits(p, hi / 100);
    two_digits(p + 2, hi % 100);
    two_digits(p + 4, lo / 100);
    two_digits(p + 6, lo % 100);
}

/* Decimal digits of x (no sign), into buf; returns the length. */
static size_t write_u64(uint64_t x, char *buf) {
    char tmp[20];
    size_t i = sizeof tmp;
    while (x >= 100) {
        unsigned r = (unsigned)(x % 100);
        x /= 100;
        i -= 2;
        two_digits(tmp + i, r);
    }
    if (x >= 10) {
        i -= 2;
        two_digits(tmp + i, (uint32_t)x);
    } else {
        tmp[--i] = (char)('0' + x);
    }
    size_t n = sizeof tmp - i;
    memcpy(buf, tmp + i, n);
    return n;
}

static size_t format_slow(double x, char *buf) {
    int n = snprintf(buf, 32, "%.17g", x);
    if (n < 0 || n >= 30) n = 0;
    if (!memchr(buf, '.', (size_t)n) && !memchr(buf, 'e', (size_t)n)) {
        memcpy(buf + n, ".0", 2);
        n += 2;
    }
    return (size_t)n;
}

size_t mks_format_double(double x, char *buf) {
    if (isnan(x) || isinf(x)) {
        memcpy(buf, "null", 4);
        return 4;
    }
    if (x == 0.0) {
        memcpy(buf, "0.0", 3);
        return 3;
    }
    if (!(x >= 0x1p-19 && x < 1.0)) return format_slow(x, buf);
    /* x = m * 2^-s exactly, s in [53, 71]; D = round(x * 10^p) has 17 digits for the right p,
     * and 17 <= p <= 22 here, so m * 10^p < 2^53 * 2^73.1 fits in 128 bits. */
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    int s = 1075 - (int)((bits >> 52) & 0x7ff);
    uint64_t m = (bits & ((1ULL << 52) - 1)) | (1ULL << 52);
    int p = 17 + (x < 1e-1) + (x < 1e-2) + (x < 1e-3) + (x < 1e-4) + (x < 1e-5);
    uint64_t d;
    for (int tries = 0;; tries++) {
        u128 prod = (u128)m * POW10_17[p - 17];
        d = (uint64_t)((prod + ((u128)1 << (s - 1))) >> s);
        if (d >= E17) p--;
        else if (d < E16) p++;
        else break;
        if (tries == 2 || p < 17 || p > 22) return format_slow(x, buf);
    }
    /* "0." then p - 17 zeros (at most 5: one 8-byte store), then the 17 digits. */
    memcpy(buf, "0.000000", 8);
    char *digits = buf + 2 + (p - 17);
    uint32_t hi = (uint32_t)(d / E8), lo = (uint32_t)(d % E8); /* hi: 9 digits */
    digits[0] = (char)('0' + hi / E8);
    eight_digits(digits + 1, (uint32_t)(hi % E8));
    eight_digits(digits + 9, lo);
    size_t n = (size_t)(digits - buf) + 17;
    while (buf[n - 1] == '0') n--; /* the first digit is never 0 */
    return n;
}

/* ---------------------------------------------------------------------------- ranking -- */

/* Sort keys ascending (bottom-up merge sort; keys are distinct, so any order is stable). */
static void sort_keys(u128 *a, u128 *tmp, size_t n) {
    for (size_t i = 1; i < n; i++) { /* runs of 16 by insertion sort */
        if (i % 16 == 0) continue;
        u128 v = a[i];
        size_t j = i;
        while (j % 16 && a[j - 1] > v) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = v;
    }
    u128 *src = a, *dst = tmp;
    for (size_t width = 16; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n;
            size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) dst[k++] = src[j] < src[i] ? src[j++] : src[i++];
            while (i < mid) dst[k++] = src[i++];
            while (j < hi) dst[k++] = src[j++];
        }
        u128 *t = src;
        src = dst;
        dst = t;
    }
    if (src != a) memcpy(a, src, n * sizeof *a);
}

static void sift_down(u128 *h, size_t k, size_t i) { /* max-heap */
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < k && h[l] > h[m]) m = l;
        if (r < k && h[r] > h[m]) m = r;
        if (m == i) return;
        u128 t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* The k smallest keys, ascending, into keys[0..k). */
static void top_keys(u128 *keys, u128 *tmp, size_t n, size_t k) {
    if (k * 4 >= n) {
        sort_keys(keys, tmp, n);
        return;
    }
    for (size_t i = k / 2; i-- > 0;) sift_down(keys, k, i);
    for (size_t i = k; i < n; i++) {
        if (keys[i] < keys[0]) {
            keys[0] = keys[i];
            sift_down(keys, k, 0);
        }
    }
    sort_keys(keys, tmp, k);
}

/* Ascending key order = descending score, then ascending request position.  Scores are in
 * [0, 1] (never NaN or negative), where the IEEE bit pattern orders like the value. */
static inline u128 rank_key(double score, uint32_t i) {
    uint64_t bits;
    memcpy(&bits, &score, sizeof bits);
    return ((u128)(~bits) << 32) | i;
}

/* ---------------------------------------------------------------------------- scoring -- */

static inline char *put(char *o, const char *s, size_t n) {
    if (n) memcpy(o, s, n);
    return o + n;
}
#define PUT(o, lit) put((o), (lit), sizeof(lit) - 1)

int mks_score(mks_scorer *sc, betadist_rng *rng, const mks_index *ix, const double *alpha,
              const double *beta, size_t n_rows, const char *body, int protocol,
              mks_request *req, const char *head, size_t head_len, const char **out,
              size_t *out_len, size_t *bad_row) {
    if (!sc || !rng || !ix || !alpha || !beta || !body || !req || !out || !out_len ||
        n_rows != ix->n + 1 ||
        (protocol != MKS_V1 && protocol != MKS_V2 && protocol != MKS_V2_BINARY) ||
        (protocol != MKS_V1 && head_len && !head) || req->n_items == 0 ||
        req->n_items > sc->max_items || req->top_k > req->n_items)
        return MKS_EARG;
    size_t n = req->n_items, k = req->top_k, prior = n_rows - 1;
    const uint32_t *off = sc->off + sc->items_start, *len = sc->len + sc->items_start;

    /* Hash everything first and prefetch the slots, then probe. */
    for (size_t i = 0; i < n; i++) {
        uint64_t h = key_hash(ix->seed, body + off[i], len[i]);
        sc->hashes[i] = h;
        __builtin_prefetch(&ix->slots[(size_t)h & ix->mask]);
    }
    uint32_t missing = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t row = probe(ix, sc->hashes[i], body + off[i], len[i]);
        if (row < 0) {
            row = (int64_t)prior;
            sc->missing[missing++] = (uint32_t)i;
        }
        sc->alpha[i] = alpha[row];
        sc->beta[i] = beta[row];
    }
    req->n_missing = missing;
    sc->n_missing = missing;

    size_t bad = 0;
    int rc = betadist_sample_batch(rng, sc->alpha, sc->beta, sc->scores, n, &bad);
    if (rc != BETADIST_OK) {
        if (bad_row) {
            int64_t row = mks_index_find(ix, body + off[bad], len[bad]);
            *bad_row = row < 0 ? prior : (size_t)row;
        }
        return rc == BETADIST_EALPHA || rc == BETADIST_EBETA ? MKS_EPARAM : MKS_EARG;
    }

    for (size_t i = 0; i < n; i++) sc->keys[i] = rank_key(sc->scores[i], (uint32_t)i);
    top_keys(sc->keys, sc->tmp, n, k);

    if (protocol == MKS_V2_BINARY) protocol = MKS_V2; /* same JSON, unless binary_output */
    size_t ids = 0;
    for (size_t j = 0; j < k; j++) ids += len[(uint32_t)sc->keys[j]] + 4;
    size_t id_len = req->id_off >= 0 ? req->id_len : 0;
    size_t need = head_len + 256 + 33 * n + ids + id_len;
    if (need > sc->out_cap) {
        size_t cap = need + need / 2;
        char *grown = realloc(sc->out, cap);
        if (!grown) return MKS_ENOMEM;
        sc->out = grown;
        sc->out_cap = cap;
    }

    char *o = sc->out;
    if (protocol == MKS_V2 && req->binary_output) {
        /* The binary tensor extension: the JSON part names each output's byte size, then
         * the scores (FP64, little-endian) and the ranking (BYTES elements) follow it. */
        o = put(o, head, head_len);
        o = PUT(o, "\"outputs\":[{\"name\":\"scores\",\"datatype\":\"FP64\",\"shape\":[");
        o += write_u64(n, o);
        o = PUT(o, "],\"parameters\":{\"binary_data_size\":");
        o += write_u64(8 * n, o);
        o = PUT(o, "}},{\"name\":\"ranking\",\"datatype\":\"BYTES\",\"shape\":[");
        o += write_u64(k, o);
        o = PUT(o, "],\"parameters\":{\"binary_data_size\":");
        o += write_u64(ids, o);
        o = PUT(o, "}}]");
        if (req->id_off >= 0) {
            o = PUT(o, ",\"id\":\"");
            o = put(o, body + req->id_off, req->id_len);
            *o++ = '"';
        }
        *o++ = '}';
        req->json_len = (uint32_t)(o - sc->out);
        for (size_t i = 0; i < n; i++) {
            uint64_t bits;
            memcpy(&bits, &sc->scores[i], sizeof bits);
            for (int b = 0; b < 8; b++) *o++ = (char)(bits >> (8 * b));
        }
        for (size_t j = 0; j < k; j++) {
            uint32_t i = (uint32_t)sc->keys[j], m = len[i];
            for (int b = 0; b < 4; b++) *o++ = (char)(m >> (8 * b));
            o = put(o, body + off[i], m);
        }
        *out = sc->out;
        *out_len = (size_t)(o - sc->out);
        return MKS_OK;
    }
    if (protocol == MKS_V2) {
        o = put(o, head, head_len);
        o = PUT(o, "\"outputs\":[{\"name\":\"scores\",\"datatype\":\"FP64\",\"shape\":[");
        o += write_u64(n, o);
        o = PUT(o, "],\"data\":[");
    } else {
        o = PUT(o, "{\"predictions\":[");
    }
    for (size_t i = 0; i < n; i++) {
        if (i) *o++ = ',';
        o += mks_format_double(sc->scores[i], o);
    }
    if (protocol == MKS_V2) {
        o = PUT(o, "]},{\"name\":\"ranking\",\"datatype\":\"BYTES\",\"shape\":[");
        o += write_u64(k, o);
        o = PUT(o, "],\"data\":[");
    } else {
        o = PUT(o, "],\"ranking\":[");
    }
    for (size_t j = 0; j < k; j++) {
        uint32_t i = (uint32_t)sc->keys[j];
        if (j) *o++ = ',';
        *o++ = '"';
        o = put(o, body + off[i], len[i]);
        *o++ = '"';
    }
    if (protocol == MKS_V2) {
        o = PUT(o, "]}]");
        if (req->id_off >= 0) {
            o = PUT(o, ",\"id\":\"");
            o = put(o, body + req->id_off, req->id_len);
            *o++ = '"';
        }
        *o++ = '}';
    } else {
        o = PUT(o, "]}");
    }
    *out = sc->out;
    *out_len = (size_t)(o - sc->out);
    return MKS_OK;
}

void mks_missing(const mks_scorer *sc, uint32_t k, uint32_t *off, uint32_t *len) {
    if (!sc || !off || !len) return;
    if (k >= sc->n_missing) {
        *off = *len = 0;
        return;
    }
    uint32_t i = sc->missing[k];
    *off = sc->off[sc->items_start + i];
    *len = sc->len[sc->items_start + i];
}
