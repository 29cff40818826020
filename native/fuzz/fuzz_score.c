/*
 * libFuzzer target for the request path (score.h): mks_parse, mks_score and
 * mks_format_double, built with -fsanitize=fuzzer,address,undefined by `make -C native fuzz`.
 *
 * The first byte of an input selects a mode:
 *
 *   'd'          the rest, in 8-byte groups, are doubles for mks_format_double (each as given,
 *                and reshaped into [2^-24, 1), where the exact fast path runs);
 *   'b'          a binary tensor request for mks_parse_binary: two bytes (little-endian) of
 *                JSON-part length, then the body; accepted ones are scored and checked;
 *   'a' .. 'z'   otherwise reserved for future modes (ignored today), so that a seed file
 *                keeps its meaning when a mode is added;
 *   anything     else: the whole input is a request body, parsed as OIP v2 and as KServe v1;
 *                whatever is accepted is scored and the answer checked.
 *
 * So a JSON body is a seed as it stands (it starts with '{' or whitespace).  A new mode is
 * one more row in MODES and a few seed files starting with its letter in corpus/.
 *
 * The library is used through its public API only.  Every broken invariant calls abort(),
 * which libFuzzer reports as a crash and saves the input that caused it.
 */
#define _GNU_SOURCE /* memmem */
#include "../score.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ------------------------------------------------------------------------------ checks -- */

static void fail(const char *file, int line, const char *what) {
    fprintf(stderr, "fuzz_score: %s:%d: CHECK(%s) failed\n", file, line, what);
    abort();
}

#define CHECK(cond)                                                                               \
    do {                                                                                          \
        if (!(cond)) fail(__FILE__, __LINE__, #cond);                                             \
    } while (0)

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) abort();
    return p;
}

/* FNV-1a: a deterministic per-input choice of head, posteriors and index membership. */
static uint64_t fnv(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

/* ------------------------------------------------------------- a strict JSON validator -- */

/* RFC 8259 grammar (UTF-8 inside strings is not validated: the request path accepts only
 * ASCII bodies, which is checked separately).  Nesting deeper than 64 counts as invalid. */
typedef struct {
    const unsigned char *p, *end;
    int depth;
} json_t;

static int j_value(json_t *j);

static void j_ws(json_t *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int j_hex(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int j_string(json_t *j) {
    if (j->p >= j->end || *j->p != '"') return 0;
    j->p++;
    while (j->p < j->end) {
        unsigned char c = *j->p++;
        if (c == '"') return 1;
        if (c < 0x20) return 0;
        if (c != '\\') continue;
        if (j->p >= j->end) return 0;
        c = *j->p++;
        if (c == 'u') {
            for (int i = 0; i < 4; i++)
                if (j->p >= j->end || !j_hex(*j->p++)) return 0;
        } else if (c == 0 || !strchr("\"\\/bfnrt", c)) {
            return 0;
        }
    }
    return 0;
}

static int j_digits(json_t *j) {
    const unsigned char *start = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    return j->p > start;
}

static int j_number(json_t *j) {
    if (j->p < j->end && *j->p == '-') j->p++;
    if (j->p < j->end && *j->p == '0') {
        j->p++;
    } else if (!j_digits(j)) {
        return 0;
    }
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (!j_digits(j)) return 0;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
        if (!j_digits(j)) return 0;
    }
    return 1;
}

static int j_literal(json_t *j, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0) return 0;
    j->p += n;
    return 1;
}

static int j_container(json_t *j, unsigned char close, int object) {
    if (++j->depth > 64) return 0;
    j->p++;
    j_ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        j->depth--;
        return 1;
    }
    for (;;) {
        if (object) {
            j_ws(j);
            if (!j_string(j)) return 0;
            j_ws(j);
            if (j->p >= j->end || *j->p++ != ':') return 0;
        }
        if (!j_value(j)) return 0;
        j_ws(j);
        if (j->p >= j->end) return 0;
        unsigned char c = *j->p++;
        if (c == close) break;
        if (c != ',') return 0;
    }
    j->depth--;
    return 1;
}

static int j_value(json_t *j) {
    j_ws(j);
    if (j->p >= j->end) return 0;
    switch (*j->p) {
    case '{': return j_container(j, '}', 1);
    case '[': return j_container(j, ']', 0);
    case '"': return j_string(j);
    case 't': return j_literal(j, "true");
    case 'f': return j_literal(j, "false");
    case 'n': return j_literal(j, "null");
    default: return j_number(j);
    }
}

static int json_valid(const void *buf, size_t n) {
    json_t j = {(const unsigned char *)buf, (const unsigned char *)buf + n, 0};
    if (!j_value(&j)) return 0;
    j_ws(&j);
    return j.p == j.end;
}

/* -------------------------------------------------------------------------- doubles -- */

/* The significant digits of a decimal number (no leading or trailing zeros) and E such that
 * its value is 0.DIGITS * 10^E; 0 when the text is not a plain decimal number. */
static int decimal_digits(const char *s, char *dig, size_t cap, int *exp10) {
    size_t nd = 0;
    int e = 0, point = 0, nonzero = 0;
    for (; *s && *s != 'e' && *s != 'E'; s++) {
        if (*s == '.') {
            if (point++) return 0;
            continue;
        }
        if (*s < '0' || *s > '9') return 0;
        if (*s == '0' && !nonzero) {
            if (point) e--;
            continue;
        }
        nonzero = 1;
        if (nd + 1 >= cap) return 0;
        dig[nd++] = *s;
        if (!point) e++;
    }
    if (*s) e += atoi(s + 1);
    while (nd && dig[nd - 1] == '0') nd--;
    dig[nd] = 0;
    *exp10 = e;
    return 1;
}

/* x's 17 significant digits rounded half up, as "d.dddddddddddddddde<exponent>" (the 80
 * digits of %.80e are exact for every double the fast path writes). */
static void half_up(double x, char *out, size_t cap) {
    char ex[100], d[17];
    snprintf(ex, sizeof ex, "%.80e", x); /* d.<80 digits>e-XX */
    d[0] = ex[0];
    memcpy(d + 1, ex + 2, 16);
    int e = atoi(strchr(ex, 'e') + 1);
    if (ex[2 + 16] >= '5') {
        int i = 16;
        while (i >= 0 && d[i] == '9') d[i--] = '0';
        if (i >= 0) {
            d[i]++;
        } else {
            d[0] = '1';
            e++;
        }
    }
    snprintf(out, cap, "%c.%.16se%d", d[0], d + 1, e);
}

static void check_double(double x) {
    char *buf = xmalloc(32); /* exactly the documented room: a longer write is an ASan report */
    size_t n = mks_format_double(x, buf);
    CHECK(n >= 3 && n <= 32);
    char text[40];
    memcpy(text, buf, n);
    text[n] = 0;
    free(buf);
    if (isnan(x) || isinf(x)) {
        CHECK(strcmp(text, "null") == 0);
        return;
    }
    if (x < 0) return; /* outside the contract: only no crash and the length bound */
    CHECK(json_valid(text, n));
    CHECK(strchr(text, '.') || strchr(text, 'e')); /* reads back as a float, not an int */
    CHECK(strtod(text, NULL) == x);
    if (x == 0) {
        CHECK(strcmp(text, "0.0") == 0);
        return;
    }
    /* 17 significant digits, correctly rounded, trailing zeros dropped: the digits of glibc's
     * exact printf, except that the exact fast path for [2^-19, 1) rounds a tie up where
     * printf rounds it to even (native/test_score.c tests the same). */
    char want[40], got[40], ref[40];
    int want_e, got_e;
    CHECK(decimal_digits(text, got, sizeof got, &got_e));
    snprintf(ref, sizeof ref, "%.16e", x);
    CHECK(decimal_digits(ref, want, sizeof want, &want_e));
    if (strcmp(want, got) == 0 && want_e == got_e) return;
    CHECK(x >= 0x1p-19 && x < 1.0);
    half_up(x, ref, sizeof ref);
    CHECK(decimal_digits(ref, want, sizeof want, &want_e));
    if (strcmp(want, got) != 0 || want_e != got_e)
        fprintf(stderr, "fuzz_score: %a written as %s (%.16e)\n", x, text, x);
    CHECK(strcmp(want, got) == 0 && want_e == got_e);
}

static void mode_doubles(const uint8_t *p, size_t n) {
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t bits;
        double x;
        memcpy(&bits, p, 8);
        memcpy(&x, &bits, 8);
        check_double(x);
        /* The same mantissa in [2^-24, 1): the exact-integer fast path and its edges. */
        uint64_t shaped = (bits & ((1ULL << 52) - 1)) | ((uint64_t)(1022 - p[7] % 24) << 52);
        memcpy(&x, &shaped, 8);
        check_double(x);
        check_double(nextafter(x, 1.0));
        check_double(nextafter(x, 0.0));
    }
}

/* ---------------------------------------------------------------------- request bodies -- */

/* Big enough that only the body size limits a request (libFuzzer's -max_len). */
#define BIG_MAX_ITEMS 65536

static mks_scorer *scorer_for(size_t max_items) {
    static mks_scorer *big, *tiny;
    mks_scorer **sc = max_items == 1 ? &tiny : &big;
    if (!*sc) *sc = mks_scorer_create(max_items);
    if (!*sc) abort();
    return *sc;
}

static const char HEAD_V2[] = "{\"model_name\":\"bandit\",\"model_version\":\"1\",";

typedef struct {
    const uint8_t *body;
    size_t len;
    int proto;
    mks_request req;
    uint32_t *off, *ilen; /* every item's span, in request order */
} request_t;

/* A span of the body holds a plain string: printable ASCII without '"' or a backslash, and
 * it is quoted in the body. */
static void check_span(const request_t *r, int64_t off, uint32_t len) {
    CHECK(off >= 1 && (uint64_t)off + len < r->len);
    CHECK(r->body[off - 1] == '"' && r->body[off + len] == '"');
    for (uint32_t i = 0; i < len; i++) {
        uint8_t c = r->body[off + i];
        CHECK(c >= 0x20 && c < 0x80 && c != '"' && c != '\\');
    }
}

static int same_request(const mks_request *a, const mks_request *b) {
    return a->n_items == b->n_items && a->top_k == b->top_k && a->segment_off == b->segment_off &&
           a->segment_len == b->segment_len && a->id_off == b->id_off && a->id_len == b->id_len;
}

/* What an accepted body must be, whatever it says. */
static void check_accepted(const request_t *r) {
    const mks_request *q = &r->req;
    CHECK(json_valid(r->body, r->len));
    for (size_t i = 0; i < r->len; i++) CHECK(r->body[i] < 0x80 && r->body[i] != '\\');
    CHECK(q->n_items >= 1 && q->n_items <= BIG_MAX_ITEMS);
    CHECK(q->top_k >= 1 && q->top_k <= q->n_items);
    CHECK(q->n_missing == 0);
    if (q->segment_off < 0) {
        CHECK(q->segment_off == -1 && q->segment_len == 0);
    } else {
        CHECK(q->segment_len >= 1 && q->segment_len <= MKS_MAX_SEGMENT);
        check_span(r, q->segment_off, q->segment_len);
    }
    if (q->id_off < 0) {
        CHECK(q->id_off == -1 && q->id_len == 0);
    } else {
        CHECK(r->proto == MKS_V2);
        check_span(r, q->id_off, q->id_len);
    }
}

typedef struct {
    const request_t *r;
    const double *scores;
} rank_ctx;

static rank_ctx ranking_ctx;

static int by_rank(const void *pa, const void *pb) {
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    double sa = ranking_ctx.scores[a], sb = ranking_ctx.scores[b];
    if (sa != sb) return sa > sb ? -1 : 1;
    return a < b ? -1 : a > b;
}

typedef struct {
    const char *p, *end;
} reader_t;

static void expect(reader_t *rd, const char *lit) {
    size_t n = strlen(lit);
    CHECK((size_t)(rd->end - rd->p) >= n && memcmp(rd->p, lit, n) == 0);
    rd->p += n;
}

static void expect_bytes(reader_t *rd, const uint8_t *s, size_t n) {
    CHECK((size_t)(rd->end - rd->p) >= n && (n == 0 || memcmp(rd->p, s, n) == 0));
    rd->p += n;
}

static void expect_uint(reader_t *rd, uint64_t want) {
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%llu", (unsigned long long)want);
    CHECK(n > 0);
    expect(rd, buf);
    CHECK(rd->p == rd->end || *rd->p < '0' || *rd->p > '9');
}

/* n scores, each in [0, 1], each written as mks_format_double writes it. */
static void read_scores(reader_t *rd, size_t n, double *scores) {
    for (size_t i = 0; i < n; i++) {
        if (i) expect(rd, ",");
        const char *start = rd->p;
        while (rd->p < rd->end && *rd->p && strchr("0123456789.eE+-", *rd->p)) rd->p++;
        size_t len = (size_t)(rd->p - start);
        CHECK(len >= 3 && len <= 32);
        char text[40], again[32];
        memcpy(text, start, len);
        text[len] = 0;
        char *end;
        double x = strtod(text, &end);
        CHECK(end == text + len);
        CHECK(x >= 0.0 && x <= 1.0);
        CHECK(mks_format_double(x, again) == len && memcmp(again, text, len) == 0);
        scores[i] = x;
    }
}

/* Check one answer against the request: its exact layout, the scores, and the ranking (by
 * score descending, ties by request position, over the scores the answer itself gives). */
static void check_answer(const request_t *r, const char *out, size_t out_len, const char *head,
                         size_t head_len) {
    size_t n = r->req.n_items, k = r->req.top_k;
    /* Within what mks_score reserves for it. */
    size_t bound = head_len + 256 + 33 * n + (r->req.id_off >= 0 ? r->req.id_len : 0);
    for (size_t i = 0; i < n; i++) bound += r->ilen[i] + 3; /* >= the ranked ids' share */
    CHECK(out_len <= bound);

    /* Valid JSON: with the caller's head when that is an object's start, else behind a '{'. */
    if (r->proto == MKS_V1 || (head_len && head[0] == '{')) {
        CHECK(out_len >= 2 && out[0] == '{' && out[out_len - 1] == '}');
        CHECK(json_valid(out, out_len));
    } else {
        char *whole = xmalloc(out_len + 1);
        whole[0] = '{';
        memcpy(whole + 1, out, out_len);
        CHECK(json_valid(whole, out_len + 1));
        free(whole);
    }

    reader_t rd = {out, out + out_len};
    double *scores = xmalloc(n * sizeof *scores);
    if (r->proto == MKS_V2) {
        expect_bytes(&rd, (const uint8_t *)head, head_len);
        expect(&rd, "\"outputs\":[{\"name\":\"scores\",\"datatype\":\"FP64\",\"shape\":[");
        expect_uint(&rd, n);
        expect(&rd, "],\"data\":[");
    } else {
        expect(&rd, "{\"predictions\":[");
    }
    read_scores(&rd, n, scores);
    if (r->proto == MKS_V2) {
        expect(&rd, "]},{\"name\":\"ranking\",\"datatype\":\"BYTES\",\"shape\":[");
        expect_uint(&rd, k);
        expect(&rd, "],\"data\":[");
    } else {
        expect(&rd, "],\"ranking\":[");
    }
    uint32_t *order = xmalloc(n * sizeof *order);
    for (uint32_t i = 0; i < n; i++) order[i] = i;
    ranking_ctx = (rank_ctx){r, scores};
    qsort(order, n, sizeof *order, by_rank);
    for (size_t j = 0; j < k; j++) {
        if (j) expect(&rd, ",");
        expect(&rd, "\"");
        expect_bytes(&rd, r->body + r->off[order[j]], r->ilen[order[j]]);
        expect(&rd, "\"");
    }
    if (r->proto == MKS_V2) {
        expect(&rd, "]}]");
        if (r->req.id_off >= 0) {
            expect(&rd, ",\"id\":\"");
            expect_bytes(&rd, r->body + r->req.id_off, r->req.id_len);
            expect(&rd, "\"");
        }
        expect(&rd, "}");
    } else {
        expect(&rd, "]}");
    }
    CHECK(rd.p == rd.end);
    free(order);
    free(scores);
}

/* Score against an empty index: every id is missing, which reveals every item's span. */
static void score_unknown(mks_scorer *sc, request_t *r, betadist_rng *rng, const char *head,
                          size_t head_len) {
    mks_index *empty = mks_index_create(NULL, NULL, 0, 7);
    CHECK(empty != NULL);
    const double one = 1.0;
    const char *out = NULL;
    size_t out_len = 0, bad = 0;
    int rc = mks_score(sc, rng, empty, &one, &one, 1, (const char *)r->body, r->proto, &r->req,
                       head, head_len, &out, &out_len, &bad);
    CHECK(rc == MKS_OK);
    CHECK(r->req.n_missing == r->req.n_items);
    for (uint32_t i = 0; i < r->req.n_items; i++) {
        mks_missing(sc, i, &r->off[i], &r->ilen[i]);
        check_span(r, r->off[i], r->ilen[i]);
        CHECK(i == 0 || r->off[i] > r->off[i - 1]);
    }
    uint32_t off = 1, len = 1;
    mks_missing(sc, r->req.n_items, &off, &len);
    CHECK(off == 0 && len == 0);
    check_answer(r, out, out_len, head, head_len);
    mks_index_free(empty);
}

/* Score against an index holding some of the request's ids (chosen by h), with posteriors
 * of one of a few families, sometimes one invalid row. */
static void score_known(mks_scorer *sc, request_t *r, betadist_rng *rng, uint64_t h,
                        const char *head, size_t head_len) {
    uint32_t n = r->req.n_items;
    size_t total = 0, rows = 0;
    for (uint32_t i = 0; i < n; i++) total += r->ilen[i];
    char *keys = xmalloc(total + 8);
    uint64_t *ends = xmalloc((n + 1) * sizeof *ends);
    size_t pos = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!((h >> (i % 61)) & 1)) continue;
        memcpy(keys + pos, r->body + r->off[i], r->ilen[i]);
        pos += r->ilen[i];
        ends[rows++] = pos;
    }
    memcpy(keys + pos, "~absent", 7); /* one more row, usually unused */
    pos += 7;
    ends[rows++] = pos;
    mks_index *ix = mks_index_create(keys, ends, rows, h);
    CHECK(ix != NULL && mks_index_size(ix) == rows);

    size_t n_rows = rows + 1;
    double *alpha = xmalloc(n_rows * sizeof *alpha), *beta = xmalloc(n_rows * sizeof *beta);
    int family = (int)((h >> 8) & 3);
    for (size_t row = 0; row < n_rows; row++) {
        double a = 1.0 + (double)(row % 5), b = 1.0 + (double)(row % 3);
        if (family == 1) a = 1e-3; /* mostly 0.0: ties */
        if (family == 2) a = 1e9;  /* mostly 1.0 (or just below): ties */
        if (family == 3 && row % 2) b = 1e-2;
        alpha[row] = a;
        beta[row] = b;
    }
    size_t bad_row = n_rows;
    if (((h >> 12) & 7) == 0) {
        bad_row = (size_t)((h >> 16) % n_rows);
        if ((h >> 20) & 1) alpha[bad_row] = (h >> 21) & 1 ? 0.0 : NAN;
        else beta[bad_row] = (h >> 21) & 1 ? -1.0 : INFINITY;
    }

    /* What the answer must say: each item's row (the prior's when unknown). */
    int64_t *found = xmalloc(n * sizeof *found), *many = xmalloc(n * sizeof *many);
    uint64_t *item_ends = xmalloc(n * sizeof *item_ends);
    char *item_keys = xmalloc(total + 1);
    size_t ipos = 0, expect_missing = 0;
    int uses_bad = 0;
    for (uint32_t i = 0; i < n; i++) {
        found[i] = mks_index_find(ix, (const char *)r->body + r->off[i], r->ilen[i]);
        CHECK(found[i] >= -1 && found[i] < (int64_t)rows);
        expect_missing += found[i] < 0;
        size_t row = found[i] < 0 ? rows : (size_t)found[i];
        uses_bad |= row == bad_row;
        memcpy(item_keys + ipos, r->body + r->off[i], r->ilen[i]);
        ipos += r->ilen[i];
        item_ends[i] = ipos;
    }
    CHECK(mks_index_find_many(ix, item_keys, item_ends, n, many) == MKS_OK);
    CHECK(memcmp(found, many, n * sizeof *found) == 0);

    const char *out = NULL;
    size_t out_len = 0, reported = SIZE_MAX;
    int rc = mks_score(sc, rng, ix, alpha, beta, n_rows, (const char *)r->body, r->proto,
                       &r->req, head, head_len, &out, &out_len, &reported);
    if (uses_bad) {
        CHECK(rc == MKS_EPARAM && reported == bad_row);
    } else {
        CHECK(rc == MKS_OK);
        CHECK(r->req.n_missing == expect_missing);
        uint32_t k = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (found[i] >= 0) continue;
            uint32_t off, len;
            mks_missing(sc, k++, &off, &len);
            CHECK(off == r->off[i] && len == r->ilen[i]);
        }
        check_answer(r, out, out_len, head, head_len);
    }
    free(item_keys);
    free(item_ends);
    free(many);
    free(found);
    free(alpha);
    free(beta);
    free(ends);
    free(keys);
    mks_index_free(ix);
}

static void mode_body(const uint8_t *body, size_t len) {
    mks_scorer *big = scorer_for(BIG_MAX_ITEMS), *tiny = scorer_for(1);
    uint64_t h = fnv(body, len);
    int accepted = 0;
    char long_head[300];
    int lh = snprintf(long_head, sizeof long_head,
                      "{\"model_name\":\"%0200d\",\"model_version\":\"%llu\",", 0,
                      (unsigned long long)(h % 1000));
    CHECK(lh > 0 && (size_t)lh < sizeof long_head);
    for (int proto = MKS_V1; proto <= MKS_V2; proto++) {
        request_t r = {body, len, proto, {0}, NULL, NULL};
        r.req.n_items = 12345;
        int rc = mks_parse(big, proto, (const char *)body, len, &r.req);
        CHECK(rc == MKS_OK || rc == MKS_FALLBACK);
        /* A scorer for one item (room for 5 strings) takes exactly the one-item requests. */
        mks_request one;
        int rc1 = mks_parse(tiny, proto, (const char *)body, len, &one);
        CHECK(rc1 == (rc == MKS_OK && r.req.n_items == 1 ? MKS_OK : MKS_FALLBACK));
        CHECK(rc1 != MKS_OK || same_request(&one, &r.req));
        if (rc == MKS_FALLBACK) {
            CHECK(r.req.n_items == 0);
            continue;
        }
        accepted++;
        check_accepted(&r);

        /* The item limit is exact: a scorer for n_items - 1 declines the body, and one for
         * n_items reads it as the big one did. */
        uint32_t n = r.req.n_items;
        mks_request other;
        if (n > 1) {
            mks_scorer *small = mks_scorer_create(n - 1);
            CHECK(small != NULL);
            CHECK(mks_parse(small, proto, (const char *)body, len, &other) == MKS_FALLBACK);
            mks_scorer_free(small);
        }
        mks_scorer *tight = mks_scorer_create(n);
        CHECK(tight != NULL);
        other = r.req;
        CHECK(mks_parse(tight, proto, (const char *)body, len, &r.req) == MKS_OK);
        CHECK(same_request(&other, &r.req));

        /* Score on the tight scorer (its scratch space is exactly the request's size). */
        const char *head = "";
        size_t head_len = 0;
        switch ((h >> 4) & 3) {
        case 0: break;
        case 3:
            head = long_head;
            head_len = (size_t)lh;
            break;
        default:
            head = HEAD_V2;
            head_len = sizeof HEAD_V2 - 1;
        }
        betadist_rng *rng = betadist_rng_create(h);
        CHECK(rng != NULL);
        r.off = xmalloc(n * sizeof *r.off);
        r.ilen = xmalloc(n * sizeof *r.ilen);
        score_unknown(tight, &r, rng, head, head_len);
        score_known(tight, &r, rng, h, head, head_len);
        /* A second answer on the same scorer, whose output buffer is now reused. */
        score_known(tight, &r, rng, h * 0x9e3779b97f4a7c15ULL + 1, HEAD_V2, sizeof HEAD_V2 - 1);
        free(r.off);
        free(r.ilen);
        betadist_rng_free(rng);
        mks_scorer_free(tight);
    }
    CHECK(accepted <= 1); /* "inputs" (v2) and "instances" (v1) exclude each other */
}


/* ------------------------------------------------------------------- binary requests -- */

/* Mode 'b': a binary tensor request.  Two bytes (little-endian) give the JSON part's length
 * (the Inference-Header-Content-Length header), the rest is the body.  An accepted body's
 * JSON part is valid JSON, its item spans are plain bytes inside the body, and the answer --
 * binary or JSON, as binary_data_output says -- has exactly the layout mks_score promises. */
static void mode_binary(const uint8_t *data, size_t size) {
    if (size < 2) return;
    size_t json_len = (size_t)data[0] | (size_t)data[1] << 8;
    const uint8_t *body = data + 2;
    size_t len = size - 2;
    mks_scorer *big = scorer_for(BIG_MAX_ITEMS);
    mks_request req;
    req.n_items = 12345;
    int rc = mks_parse_binary(big, (const char *)body, len, json_len, &req);
    if (json_len > len) {
        CHECK(rc == MKS_EARG);
        return;
    }
    CHECK(rc == MKS_OK || rc == MKS_FALLBACK);
    if (rc != MKS_OK) {
        CHECK(req.n_items == 0);
        return;
    }
    CHECK(json_valid(body, json_len));
    CHECK(req.n_items >= 1 && req.n_items <= BIG_MAX_ITEMS);
    CHECK(req.top_k >= 1 && req.top_k <= req.n_items);
    CHECK(req.binary_output <= 1);
    /* The same body as plain JSON is never the plain shape unless there is no binary part. */
    mks_request plain;
    if (len > json_len) CHECK(mks_parse(big, MKS_V2, (const char *)body, len, &plain) == MKS_FALLBACK);
    if (req.segment_off >= 0) CHECK(req.segment_len >= 1 && req.segment_len <= MKS_MAX_SEGMENT);
    if (req.id_off >= 0) CHECK((uint64_t)req.id_off + req.id_len < json_len);

    /* Score against an empty index: every id missing, so every span is revealed. */
    mks_index *empty = mks_index_create(NULL, NULL, 0, 7);
    CHECK(empty != NULL);
    const double one = 1.0;
    const char *out = NULL;
    size_t out_len = 0, bad = 0;
    betadist_rng *rng = betadist_rng_create(fnv(body, len));
    CHECK(rng != NULL);
    uint32_t n = req.n_items, k = req.top_k;
    CHECK(mks_score(big, rng, empty, &one, &one, 1, (const char *)body, MKS_V2_BINARY, &req,
                    HEAD_V2, sizeof HEAD_V2 - 1, &out, &out_len, &bad) == MKS_OK);
    CHECK(req.n_missing == n);
    uint32_t *off = xmalloc(n * sizeof *off), *ilen = xmalloc(n * sizeof *ilen);
    size_t ranked_bytes = 0;
    for (uint32_t i = 0; i < n; i++) {
        mks_missing(big, i, &off[i], &ilen[i]);
        CHECK((uint64_t)off[i] + ilen[i] <= len);
        for (uint32_t b = 0; b < ilen[i]; b++) {
            uint8_t c = body[off[i] + b];
            CHECK(c >= 0x20 && c < 0x80 && c != '"' && c != '\\');
        }
    }
    if (req.binary_output) {
        size_t jl = req.json_len;
        CHECK(jl > sizeof HEAD_V2 && jl <= out_len);
        CHECK(memcmp(out, HEAD_V2, sizeof HEAD_V2 - 1) == 0);
        CHECK(json_valid(out, jl));
        CHECK(out_len >= jl + 8 * (size_t)n);
        const uint8_t *p = (const uint8_t *)out + jl, *end = (const uint8_t *)out + out_len;
        double prev = 2.0;
        double *scores = xmalloc(n * sizeof *scores);
        for (uint32_t i = 0; i < n; i++) {
            memcpy(&scores[i], p + 8 * (size_t)i, 8);
            CHECK(scores[i] >= 0.0 && scores[i] <= 1.0);
        }
        p += 8 * (size_t)n;
        /* k ranked ids, each a length and the bytes of one of the request's ids, best first */
        for (uint32_t j = 0; j < k; j++) {
            CHECK(end - p >= 4);
            if (end - p < 4) break;
            uint32_t m = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                         (uint32_t)p[3] << 24;
            p += 4;
            CHECK((size_t)(end - p) >= m);
            if ((size_t)(end - p) < m) break;
            int found = 0;
            for (uint32_t i = 0; i < n && !found; i++)
                if (ilen[i] == m && memcmp(body + off[i], p, m) == 0 && scores[i] <= prev) {
                    found = 1;
                    prev = scores[i];
                }
            CHECK(found);
            ranked_bytes += 4 + m;
            p += m;
        }
        CHECK(p == end);
        char size_field[64];
        snprintf(size_field, sizeof size_field, "\"binary_data_size\":%zu}", ranked_bytes);
        CHECK(jl > strlen(size_field) &&
              memmem(out, jl, size_field, strlen(size_field)) != NULL);
        free(scores);
    } else {
        CHECK(out_len >= sizeof HEAD_V2 && memcmp(out, HEAD_V2, sizeof HEAD_V2 - 1) == 0);
        CHECK(json_valid(out, out_len));
    }
    free(off);
    free(ilen);
    betadist_rng_free(rng);
    mks_index_free(empty);
}

/* ------------------------------------------------------------------------------- modes -- */

typedef struct {
    uint8_t letter;
    void (*run)(const uint8_t *data, size_t size);
} fuzz_mode;

static const fuzz_mode MODES[] = {
    {'d', mode_doubles},
    {'b', mode_binary},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    if (data[0] >= 'a' && data[0] <= 'z') {
        for (size_t i = 0; i < sizeof MODES / sizeof MODES[0]; i++)
            if (MODES[i].letter == data[0]) MODES[i].run(data + 1, size - 1);
        return 0;
    }
    mode_body(data, size); /* libFuzzer's buffer has exactly `size` bytes */
    return 0;
}
