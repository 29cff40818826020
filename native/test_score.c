/*
 * C tests for the mks request path (score.c), run by `make -C native check` under
 * AddressSanitizer and UndefinedBehaviorSanitizer (any finding aborts the run) and by
 * `make -C native valgrind`.  Every body, key and output buffer handed to the library is
 * malloc'ed at exactly its length (no terminating NUL), so a read or write past the end is
 * caught.  Scores are checked exactly: a twin generator with the same seed replays every
 * betadist_sample_batch() call mks_score() makes.
 */
/* The library source is included, not linked, so that its internal helpers (key_hash,
 * special_bytes, str, sort_keys, top_keys, ...) can be tested directly; betadist.c is linked. */
#include "score.c"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
static long n_checks;

#define MAX_REPORTS 50

#define CHECK(cond, ...)                                                                          \
    do {                                                                                          \
        n_checks++;                                                                               \
        if (!(cond)) {                                                                            \
            if (failures++ < MAX_REPORTS) {                                                       \
                fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);         \
                fprintf(stderr, __VA_ARGS__);                                                     \
                fputc('\n', stderr);                                                              \
            }                                                                                     \
        }                                                                                         \
    } while (0)

/* ----------------------------------------------------------------------------- helpers -- */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        perror("malloc");
        exit(2);
    }
    return p;
}

/* n bytes of s in a buffer of exactly n bytes (one byte, unread, for n == 0). */
static char *exact_copy(const char *s, size_t n) {
    char *p = xmalloc(n);
    if (n) memcpy(p, s, n);
    return p;
}

/* Deterministic test data (splitmix64). */
static uint64_t data_state = 0x243f6a8885a308d3ULL;
static uint64_t rnd(void) {
    uint64_t z = (data_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static size_t rnd_below(size_t n) { return (size_t)(rnd() % n); }
static double rnd_unit(void) { return (double)(rnd() >> 11) * 0x1.0p-53; }

/* A printable ASCII byte the parser accepts inside a string (0x20..0x7f, no quote, no
 * backslash). */
static char plain_char(void) {
    for (;;) {
        char c = (char)(0x20 + rnd_below(0x60));
        if (c != '"' && c != '\\') return c;
    }
}

/* Growable string. */
typedef struct {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_reserve(sbuf *b, size_t more) {
    if (b->len + more + 1 > b->cap) {
        size_t cap = 2 * (b->len + more + 1);
        char *q = realloc(b->p, cap);
        if (!q) {
            perror("realloc");
            exit(2);
        }
        b->p = q;
        b->cap = cap;
    }
}
static void sb_add(sbuf *b, const char *s, size_t n) {
    sb_reserve(b, n);
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}
static void sb_puts(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }
static void sb_char(sbuf *b, char c) { sb_add(b, &c, 1); }
static void sb_clear(sbuf *b) {
    sb_reserve(b, 0);
    b->len = 0;
    b->p[0] = 0;
}
static void sb_free(sbuf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) exit(2);
    sb_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* mks_parse() on an exact-size copy of body; req is filled with garbage first, so that every
 * field the parser should set is seen to be set. */
static int parse_copy(mks_scorer *sc, int proto, const char *body, size_t len, mks_request *req) {
    char *b = exact_copy(body, len);
    memset(req, 0xa5, sizeof *req);
    int rc = mks_parse(sc, proto, b, len, req);
    free(b);
    return rc;
}

/* Check an accepted body; seg/id NULL when absent, items '|'-separated (NULL: not checked). */
static void expect_ok(int line, mks_scorer *sc, int proto, const char *body, size_t len,
                      uint32_t n, uint32_t k, const char *seg, const char *id, const char *items) {
    mks_request req;
    int rc = parse_copy(sc, proto, body, len, &req);
    CHECK(rc == MKS_OK, "line %d: rc %d for %.*s", line, rc, (int)len, body);
    if (rc != MKS_OK) return;
    CHECK(req.n_items == n && req.top_k == k, "line %d: n %u top_k %u, want %u %u for %.*s", line,
          req.n_items, req.top_k, n, k, (int)len, body);
    CHECK(req.n_missing == 0, "line %d: n_missing %u after parse", line, req.n_missing);
    if (seg) {
        size_t sl = strlen(seg);
        CHECK(req.segment_off >= 0 && req.segment_len == sl &&
                  (size_t)req.segment_off + sl <= len &&
                  memcmp(body + req.segment_off, seg, sl) == 0,
              "line %d: segment off %lld len %u, want %s", line, (long long)req.segment_off,
              req.segment_len, seg);
    } else {
        CHECK(req.segment_off == -1 && req.segment_len == 0, "line %d: segment %lld/%u, want none",
              line, (long long)req.segment_off, req.segment_len);
    }
    if (id) {
        size_t il = strlen(id);
        CHECK(req.id_off >= 0 && req.id_len == il && (size_t)req.id_off + il <= len &&
                  memcmp(body + req.id_off, id, il) == 0,
              "line %d: id off %lld len %u, want %s", line, (long long)req.id_off, req.id_len, id);
    } else {
        CHECK(req.id_off == -1 && req.id_len == 0, "line %d: id %lld/%u, want none", line,
              (long long)req.id_off, req.id_len);
    }
    if (items) {
        const char *p = items;
        for (uint32_t i = 0; i < req.n_items; i++) {
            const char *bar = strchr(p, '|');
            size_t il = bar ? (size_t)(bar - p) : strlen(p);
            uint32_t o = sc->off[sc->items_start + i], l = sc->len[sc->items_start + i];
            CHECK(l == il && (size_t)o + l <= len && memcmp(body + o, p, il) == 0,
                  "line %d: item %u is %.*s, want %.*s", line, i, (int)l, body + o, (int)il, p);
            if (!bar) {
                CHECK(i + 1 == req.n_items, "line %d: %u items, fewer expected", line, req.n_items);
                break;
            }
            p = bar + 1;
        }
    }
}

static void expect_fallback(int line, mks_scorer *sc, int proto, const char *body, size_t len) {
    mks_request req;
    int rc = parse_copy(sc, proto, body, len, &req);
    CHECK(rc == MKS_FALLBACK, "line %d: rc %d, want MKS_FALLBACK for [%.*s]", line, rc, (int)len,
          body);
    CHECK(req.n_items == 0, "line %d: n_items %u left on fallback", line, req.n_items);
}

#define EXPECT_OK(sc, proto, body, n, k, seg, id, items)                                          \
    expect_ok(__LINE__, sc, proto, body, strlen(body), n, k, seg, id, items)
#define EXPECT_FB(sc, proto, body) expect_fallback(__LINE__, sc, proto, body, strlen(body))

/* The same JSON with whitespace around every token (variant picks which). */
static void spaced(sbuf *out, const char *compact, int variant) {
    static const char *const WS[] = {" ", "\t", "\n", "\r", " \t\r\n ", "", "\r\n"};
    const size_t nws = sizeof WS / sizeof WS[0];
    size_t turn = (size_t)variant;
    int in_string = 0;
    sb_clear(out);
    sb_puts(out, WS[turn++ % nws]);
    for (const char *p = compact; *p; p++) {
        char ch = *p;
        if (in_string) {
            sb_char(out, ch);
            if (ch == '"') in_string = 0;
        } else if (ch == '"') {
            sb_puts(out, WS[turn++ % nws]);
            sb_char(out, ch);
            in_string = 1;
        } else if (strchr("{}[],:", ch)) {
            sb_puts(out, WS[turn++ % nws]);
            sb_char(out, ch);
            sb_puts(out, WS[turn++ % nws]);
        } else {
            sb_char(out, ch);
        }
    }
    sb_puts(out, WS[turn++ % nws]);
}

/* A JSON number, by the grammar of RFC 8259. */
static int json_number_ok(const char *s, size_t n) {
    size_t i = 0;
    if (i < n && s[i] == '-') i++;
    if (i >= n) return 0;
    if (s[i] == '0') {
        i++;
    } else if (s[i] >= '1' && s[i] <= '9') {
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    } else {
        return 0;
    }
    if (i < n && s[i] == '.') {
        size_t d = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        if (i == d) return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        if (i == d) return 0;
    }
    return i == n;
}

/* ------------------------------------------------------------------------------- index -- */

static int64_t ref_find(const char *keys, const uint64_t *ends, size_t n, const char *q, size_t len) {
    for (size_t r = n; r-- > 0;) {
        uint64_t start = r ? ends[r - 1] : 0;
        if (ends[r] - start == len && (len == 0 || memcmp(keys + start, q, len) == 0))
            return (int64_t)r;
    }
    return -1;
}

/* key_hash, tail_word and same_bytes on keys of every length 0..48, each at the very end of
 * an exact-size buffer. */
static void test_hash_and_compare(void) {
    for (size_t len = 0; len <= 48; len++) {
        char *src = xmalloc(len + 1);
        for (size_t i = 0; i < len; i++) src[i] = (char)('A' + (i * 5 + len) % 50);
        char *a = exact_copy(src, len), *b = exact_copy(src, len);
        const uint64_t seed = 0x5eed0000 + len;
        const uint64_t h = key_hash(seed, a, len);
        CHECK(h == key_hash(seed, b, len), "len %zu: same bytes, different hash", len);
        CHECK(h != key_hash(seed + 1, a, len), "len %zu: the seed is not hashed", len);
        CHECK(same_bytes(a, b, len), "len %zu: equal keys compare unequal", len);
        /* every single-byte change of a same-length key changes the hash (the mixing steps
         * are bijective and every byte reaches a word or the tail word) and the comparison */
        for (size_t pos = 0; pos < len; pos++) {
            static const unsigned char flips[] = {0x01, 0x20, 0x80, 0xff};
            for (size_t f = 0; f < sizeof flips; f++) {
                b[pos] = (char)(a[pos] ^ flips[f]);
                CHECK(key_hash(seed, b, len) != h, "len %zu: byte %zu not hashed", len, pos);
                CHECK(!same_bytes(a, b, len) && !same_bytes(b, a, len),
                      "len %zu: difference at %zu not seen", len, pos);
                b[pos] = a[pos];
            }
        }
        /* the length is hashed: a key and the same key plus a zero byte differ */
        char *longer = xmalloc(len + 1);
        memcpy(longer, src, len);
        longer[len] = 0;
        CHECK(key_hash(seed, longer, len + 1) != h, "len %zu: length not hashed", len);
        CHECK(key_hash(seed, longer, len) == h, "len %zu: hash reads past len", len);
        free(longer);
        free(src);
        free(a);
        free(b);
    }
}

static void test_index_small(void) {
    /* n == 0 */
    mks_index *empty = mks_index_create(NULL, NULL, 0, 1);
    CHECK(empty != NULL, "n == 0 must be accepted");
    CHECK(mks_index_size(empty) == 0, "size of the empty index");
    char *one = exact_copy("a", 1);
    CHECK(mks_index_find(empty, one, 1) == -1 && mks_index_find(empty, one, 0) == -1,
          "the empty index finds nothing");
    CHECK(mks_index_find(empty, NULL, 0) == -1, "NULL, 0 on the empty index");
    mks_index_free(empty);
    free(one);

    /* one key of each length that reaches another branch of tail_word / same_bytes */
    static const size_t lens[] = {0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 40};
    const size_t n = sizeof lens / sizeof lens[0];
    sbuf all = {0};
    uint64_t *ends = xmalloc(n * sizeof *ends);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < lens[i]; j++) sb_char(&all, (char)('a' + (j * 7 + lens[i]) % 26));
        ends[i] = all.len;
    }
    char *keys = exact_copy(all.p, all.len);
    mks_index *ix = mks_index_create(keys, ends, n, 0x1234);
    CHECK(ix != NULL && mks_index_size(ix) == n, "create %zu keys", n);
    if (!ix) return;
    long unknown = 0;
    sbuf q = {0};
    for (size_t i = 0; i < n; i++) {
        const size_t start = i ? (size_t)ends[i - 1] : 0, len = lens[i];
        char *k = exact_copy(keys + start, len);
        CHECK(mks_index_find(ix, k, len) == (int64_t)i, "key of length %zu not at row %zu", len, i);
        free(k);
        /* near misses: each byte changed, each prefix, one byte more at either end, and the
         * same bytes under every other length */
        for (size_t pos = 0; pos < len; pos++) {
            static const unsigned char flips[] = {0x01, 0x20, 0x80};
            for (size_t f = 0; f < sizeof flips; f++) {
                char *m = exact_copy(keys + start, len);
                m[pos] = (char)(m[pos] ^ flips[f]);
                const int64_t want = ref_find(keys, ends, n, m, len), got = mks_index_find(ix, m, len);
                CHECK(got == want, "len %zu, byte %zu changed: %lld, want %lld", len, pos,
                      (long long)got, (long long)want);
                unknown += want < 0;
                free(m);
            }
        }
        for (size_t m = 0; m < len; m++) {
            char *p = exact_copy(keys + start, m);
            CHECK(mks_index_find(ix, p, m) == ref_find(keys, ends, n, p, m), "prefix %zu of %zu", m, len);
            free(p);
            p = exact_copy(keys + start + len - m, m);
            CHECK(mks_index_find(ix, p, m) == ref_find(keys, ends, n, p, m), "suffix %zu of %zu", m, len);
            free(p);
        }
        for (int side = 0; side < 2; side++) {
            sb_clear(&q);
            if (side) sb_char(&q, 'a');
            sb_add(&q, keys + start, len);
            if (!side) sb_char(&q, 'a');
            char *p = exact_copy(q.p, q.len);
            const int64_t want = ref_find(keys, ends, n, p, q.len);
            CHECK(want == -1 && mks_index_find(ix, p, q.len) == -1, "len %zu plus one byte", len);
            free(p);
        }
    }
    /* the same byte pattern at lengths that are not in the index */
    for (size_t len = 0; len <= 48; len++) {
        sb_clear(&q);
        for (size_t j = 0; j < len; j++) sb_char(&q, (char)('a' + (j * 7 + len + 1) % 26));
        char *p = exact_copy(q.p, q.len);
        CHECK(mks_index_find(ix, p, len) == ref_find(keys, ends, n, p, len), "pattern len %zu", len);
        free(p);
    }
    CHECK(unknown > 200, "only %ld near misses were unknown ids", unknown);
    mks_index_free(ix);
    free(keys);
    free(ends);
    sb_free(&all);
    sb_free(&q);

    /* a duplicate id maps to its last row; size counts rows */
    {
        const char dk[] = "abcxyzabc";
        const uint64_t dends[] = {3, 6, 9, 9, 9};
        char *k = exact_copy(dk, 9);
        uint64_t *e = xmalloc(sizeof dends);
        memcpy(e, dends, sizeof dends);
        mks_index *d = mks_index_create(k, e, 5, 99);
        CHECK(d && mks_index_size(d) == 5, "duplicates: %zu rows", mks_index_size(d));
        CHECK(mks_index_find(d, "abc", 3) == 2, "abc -> last row 2");
        CHECK(mks_index_find(d, "xyz", 3) == 1, "xyz -> row 1");
        CHECK(mks_index_find(d, k, 0) == 4, "empty id -> last row 4");
        CHECK(mks_index_find(d, "abcx", 4) == -1 && mks_index_find(d, "ab", 2) == -1, "no partial");
        mks_index_free(d);
        free(k);
        free(e);
    }
    /* ends must be non-decreasing; ids longer than 2^32 - 1 are refused; NULL pointers */
    {
        char *k = exact_copy("abcdef", 6);
        uint64_t *e = xmalloc(3 * sizeof *e);
        e[0] = 3;
        e[1] = 2;
        e[2] = 6;
        CHECK(mks_index_create(k, e, 3, 1) == NULL, "decreasing ends must be refused");
        e[0] = 0;
        e[1] = 0;
        e[2] = 0;
        mks_index *z = mks_index_create(k, e, 3, 1);
        CHECK(z && mks_index_size(z) == 3 && mks_index_find(z, k, 0) == 2, "three empty ids");
        mks_index_free(z);
        e[0] = 3;
        e[1] = 6;
        e[2] = 5;
        CHECK(mks_index_create(k, e, 3, 1) == NULL, "last end decreasing must be refused");
        e[0] = 1;
        e[1] = 1 + ((uint64_t)1 << 32);
        CHECK(mks_index_create(k, e, 2, 1) == NULL, "an id of 2^32 bytes must be refused");
        e[0] = 3;
        e[1] = 6;
        CHECK(mks_index_create(NULL, e, 2, 1) == NULL, "NULL keys");
        CHECK(mks_index_create(k, NULL, 2, 1) == NULL, "NULL ends");
        free(k);
        free(e);
    }
}

static void test_index_large(void) {
    const size_t n = 200000;
    sbuf all = {0};
    uint64_t *ends = xmalloc(n * sizeof *ends);
    for (size_t i = 0; i < n; i++) {
        sb_printf(&all, "item-%zu", i);
        ends[i] = all.len;
    }
    char *keys = exact_copy(all.p, all.len);
    mks_index *a = mks_index_create(keys, ends, n, 0x0123456789abcdefULL);
    mks_index *b = mks_index_create(keys, ends, n, 42);
    CHECK(a && b, "create 200000 ids");
    if (!a || !b) return;
    CHECK(mks_index_size(a) == n, "size %zu", mks_index_size(a));
    long wrong = 0, differ = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t start = i ? (size_t)ends[i - 1] : 0, len = (size_t)ends[i] - start;
        const int64_t ra = mks_index_find(a, keys + start, len), rb = mks_index_find(b, keys + start, len);
        wrong += ra != (int64_t)i;
        differ += ra != rb;
    }
    CHECK(wrong == 0, "%ld of 200000 ids not at their row", wrong);
    char q[48];
    long found = 0;
    for (size_t i = 0; i < n; i++) {
        int len;
        switch (i % 4) {
        case 0: len = snprintf(q, sizeof q, "item-%zu", n + i); break;
        case 1: len = snprintf(q, sizeof q, "item-%zux", i); break;
        case 2: len = snprintf(q, sizeof q, "Item-%zu", i); break;
        default: len = snprintf(q, sizeof q, "item-%07zu", i); break; /* leading zeros */
        }
        const int64_t ra = mks_index_find(a, q, (size_t)len), rb = mks_index_find(b, q, (size_t)len);
        found += ra != -1;
        differ += ra != rb;
    }
    CHECK(found == 0, "%ld of 200000 unknown ids found", found);
    CHECK(differ == 0, "two seeds disagree on %ld lookups", differ);

    /* mks_index_find_many: every stored id (reversed order, so rows differ from positions)
     * plus the unknown ids, in one call, against mks_index_find one by one. */
    sbuf many = {0};
    const size_t m = 2 * n;
    uint64_t *mends = xmalloc(m * sizeof *mends);
    int64_t *rows = xmalloc(m * sizeof *rows);
    for (size_t i = 0; i < m; i++) {
        if (i < n) sb_printf(&many, "item-%zu", n - 1 - i);
        else sb_printf(&many, "item-%zux", i);
        mends[i] = many.len;
    }
    char *mkeys = exact_copy(many.p, many.len);
    CHECK(mks_index_find_many(a, mkeys, mends, m, rows) == MKS_OK, "find_many");
    long bad_rows = 0;
    for (size_t i = 0; i < m; i++) {
        const size_t start = i ? (size_t)mends[i - 1] : 0;
        bad_rows += rows[i] != mks_index_find(a, mkeys + start, (size_t)mends[i] - start);
        bad_rows += i < n && rows[i] != (int64_t)(n - 1 - i);
        bad_rows += i >= n && rows[i] != -1;
    }
    CHECK(bad_rows == 0, "find_many: %ld rows differ", bad_rows);
    CHECK(mks_index_find_many(a, NULL, NULL, 0, NULL) == MKS_OK, "find_many of nothing");
    CHECK(mks_index_find_many(NULL, mkeys, mends, 1, rows) == MKS_EARG, "find_many, NULL index");
    rows[0] = 77;
    mends[0] = mends[1] + 1; /* ends must not decrease */
    CHECK(mks_index_find_many(a, mkeys, mends, 2, rows) == MKS_EARG && rows[0] == 77,
          "find_many, decreasing ends");
    free(mkeys);
    free(mends);
    free(rows);
    sb_free(&many);

    mks_index_free(a);
    mks_index_free(b);
    free(keys);
    free(ends);
    sb_free(&all);
}

/* ---------------------------------------------------------------------- string scanning -- */

static int is_special(unsigned char c) { return c == '"' || c == '\\' || c < 0x20 || c >= 0x80; }

/* The lowest flagged byte of special_bytes() is the first special byte, for every pair of
 * bytes at every pair of positions, and for random words. */
static void test_special_bytes(void) {
    static const unsigned char fillers[] = {'a', ' ', 0x21, '#', '[', ']', 0x7f, '~'};
    long wrong = 0;
    for (size_t f = 0; f < sizeof fillers; f++) {
        for (int b1 = 0; b1 < 256; b1++) {
            for (int b2 = 0; b2 < 256; b2 += (f ? 3 : 1)) {
                for (int i = 0; i < 8; i++) {
                    for (int j = i + 1; j < 8; j++) {
                        unsigned char w8[8];
                        memset(w8, fillers[f], 8);
                        w8[i] = (unsigned char)b1;
                        w8[j] = (unsigned char)b2;
                        int first = -1;
                        for (int t = 0; t < 8 && first < 0; t++)
                            if (is_special(w8[t])) first = t;
                        const uint64_t m = special_bytes(load8(w8)) & HIGH;
                        const int got = m ? (int)(__builtin_ctzll(m) >> 3) : -1;
                        wrong += got != first;
                    }
                }
            }
        }
    }
    CHECK(wrong == 0, "special_bytes: %ld pair words with the wrong first flag", wrong);
    wrong = 0;
    for (int r = 0; r < 200000; r++) {
        unsigned char w8[8];
        for (int t = 0; t < 8; t++) {
            const uint64_t x = rnd();
            w8[t] = (x & 7) ? (unsigned char)(0x20 + (x >> 8) % 0x60) : (unsigned char)(x >> 8);
        }
        int first = -1;
        for (int t = 0; t < 8 && first < 0; t++)
            if (is_special(w8[t])) first = t;
        const uint64_t m = special_bytes(load8(w8)) & HIGH;
        wrong += (m ? (int)(__builtin_ctzll(m) >> 3) : -1) != first;
    }
    CHECK(wrong == 0, "special_bytes: %ld random words with the wrong first flag", wrong);
}

/* str() on s[0..n) in an exact buffer: 1 and the span, or 0. */
static int str_exact(const char *s, size_t n, uint32_t *off, uint32_t *len, size_t *used) {
    char *b = exact_copy(s, n);
    cur_t c = {(const unsigned char *)b, (const unsigned char *)b, (const unsigned char *)b + n,
               (const unsigned char *)b + n};
    *off = *len = 12345;
    const int ok = str(&c, off, len);
    *used = (size_t)(c.p - c.base);
    free(b);
    return ok;
}

static void test_str_direct(void) {
    static const unsigned char bad[] = {'\\', 0x00, 0x01, 0x1f, '\n', 0x80, 0xc3, 0xff};
    sbuf s = {0};
    uint32_t off, len;
    size_t used;
    for (size_t L = 0; L <= 20; L++) {
        for (size_t tail = 0; tail <= 9; tail++) {
            /* the closing quote at offset L, then `tail` more bytes (specials included:
             * nothing after the quote matters) */
            sb_clear(&s);
            sb_char(&s, '"');
            for (size_t i = 0; i < L; i++) sb_char(&s, plain_char());
            sb_char(&s, '"');
            for (size_t i = 0; i < tail; i++) sb_char(&s, (char)bad[i % sizeof bad]);
            CHECK(str_exact(s.p, s.len, &off, &len, &used) == 1 && off == 1 && len == L && used == L + 2,
                  "quote at %zu, tail %zu: off %u len %u used %zu", L, tail, off, len, used);
            /* no closing quote: the string runs to the end of the buffer */
            sb_clear(&s);
            sb_char(&s, '"');
            for (size_t i = 0; i < L + tail; i++) sb_char(&s, plain_char());
            CHECK(str_exact(s.p, s.len, &off, &len, &used) == 0, "unterminated, length %zu", L + tail);
            /* a bad byte at every offset before the closing quote */
            for (size_t pos = 0; pos < L; pos++) {
                for (size_t b = 0; b < sizeof bad; b++) {
                    sb_clear(&s);
                    sb_char(&s, '"');
                    for (size_t i = 0; i < L; i++) sb_char(&s, i == pos ? (char)bad[b] : plain_char());
                    if (tail) sb_char(&s, '"'); /* closed or not */
                    for (size_t i = 1; i < tail; i++) sb_char(&s, 'x');
                    CHECK(str_exact(s.p, s.len, &off, &len, &used) == 0,
                          "byte 0x%02x at %zu of %zu accepted", bad[b], pos, L);
                }
            }
        }
    }
    /* leading whitespace is skipped; a missing opening quote is refused */
    CHECK(str_exact(" \t\r\n\"ab\"", 8, &off, &len, &used) == 1 && off == 5 && len == 2, "ws then string");
    CHECK(str_exact("ab\"", 3, &off, &len, &used) == 0 && str_exact("", 0, &off, &len, &used) == 0,
          "no opening quote");
    CHECK(str_exact("\"", 1, &off, &len, &used) == 0, "a lone quote");
    /* every accepted byte */
    sb_clear(&s);
    sb_char(&s, '"');
    for (int c = 0x20; c < 0x80; c++)
        if (c != '"' && c != '\\') sb_char(&s, (char)c);
    sb_char(&s, '"');
    CHECK(str_exact(s.p, s.len, &off, &len, &used) == 1 && len == 0x60 - 2, "all printable ASCII");

    /* random strings against a byte-by-byte reference */
    long wrong = 0;
    for (int r = 0; r < 100000; r++) {
        const size_t n = 1 + rnd_below(30);
        sb_clear(&s);
        sb_char(&s, '"');
        for (size_t i = 1; i < n; i++) {
            const uint64_t x = rnd();
            char c = (x % 23 == 0) ? '"' : (x % 29 == 0) ? (char)bad[(x >> 8) % sizeof bad] : plain_char();
            sb_char(&s, c);
        }
        int want = 0;
        size_t want_len = 0;
        for (size_t i = 1; i < n; i++) {
            const unsigned char c = (unsigned char)s.p[i];
            if (c == '"') {
                want = 1;
                want_len = i - 1;
                break;
            }
            if (is_special(c)) break;
        }
        const int got = str_exact(s.p, s.len, &off, &len, &used);
        wrong += got != want || (want && (len != want_len || off != 1));
    }
    CHECK(wrong == 0, "str: %ld random strings misread", wrong);
    sb_free(&s);
}

/* The same through mks_parse: an item id or request id whose closing quote is at every
 * offset, a bad byte at every offset, and bodies cut off inside the string. */
static void test_str_in_bodies(void) {
    static const unsigned char bad[] = {'\\', 0x01, 0x1f, 0x80, 0xff};
    static const char v2_head[] = "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[1],"
                                  "\"data\":[\"a\"]}],\"id\":\"";
    mks_scorer *sc = mks_scorer_create(4);
    sbuf s = {0}, ids = {0};
    for (size_t L = 0; L <= 20; L++) {
        sb_clear(&ids);
        for (size_t i = 0; i < L; i++) {
            const char c = plain_char();
            sb_char(&ids, c == '|' ? '!' : c); /* '|' separates expect_ok's items */
        }
        for (size_t tail = 0; tail <= 9; tail++) {
            /* v2: the id is the last string of the body */
            sb_clear(&s);
            sb_puts(&s, v2_head);
            sb_add(&s, ids.p, ids.len);
            sb_puts(&s, "\"}");
            for (size_t i = 0; i < tail; i++) sb_char(&s, " \t\r\n"[i % 4]);
            expect_ok(__LINE__, sc, MKS_V2, s.p, s.len, 1, 1, NULL, ids.p, "a");
            /* v1: the item */
            sb_clear(&s);
            sb_puts(&s, "{\"instances\":[\"");
            sb_add(&s, ids.p, ids.len);
            sb_puts(&s, "\"]}");
            for (size_t i = 0; i < tail; i++) sb_char(&s, ' ');
            expect_ok(__LINE__, sc, MKS_V1, s.p, s.len, 1, 1, NULL, NULL, ids.p);
        }
        /* cut off inside the string, after it, or before the closing brace */
        sb_clear(&s);
        sb_puts(&s, v2_head);
        sb_add(&s, ids.p, ids.len);
        expect_fallback(__LINE__, sc, MKS_V2, s.p, s.len);
        sb_char(&s, '"');
        expect_fallback(__LINE__, sc, MKS_V2, s.p, s.len);
        sb_clear(&s);
        sb_puts(&s, "{\"instances\":[\"");
        sb_add(&s, ids.p, ids.len);
        expect_fallback(__LINE__, sc, MKS_V1, s.p, s.len);
        /* a bad byte at every offset of the string */
        for (size_t pos = 0; pos < L; pos++) {
            for (size_t b = 0; b < sizeof bad; b++) {
                for (size_t tail = 0; tail < 3; tail++) {
                    sb_clear(&s);
                    sb_puts(&s, v2_head);
                    for (size_t i = 0; i < L; i++) sb_char(&s, i == pos ? (char)bad[b] : ids.p[i]);
                    sb_puts(&s, "\"}");
                    for (size_t i = 0; i < tail; i++) sb_char(&s, ' ');
                    expect_fallback(__LINE__, sc, MKS_V2, s.p, s.len);
                    sb_clear(&s);
                    sb_puts(&s, "{\"instances\":[\"");
                    for (size_t i = 0; i < L; i++) sb_char(&s, i == pos ? (char)bad[b] : ids.p[i]);
                    sb_puts(&s, "\"]}");
                    for (size_t i = 0; i < tail; i++) sb_char(&s, ' ');
                    expect_fallback(__LINE__, sc, MKS_V1, s.p, s.len);
                }
            }
        }
    }
    sb_free(&s);
    sb_free(&ids);
    mks_scorer_free(sc);
}

/* ----------------------------------------------------------------------------- parsing -- */

#define ITEMS3 "{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}"
#define V2B(rest) "{\"inputs\":[" ITEMS3 "]" rest "}"
#define TOPK(dt, v) "{\"name\":\"top_k\",\"datatype\":\"" dt "\",\"shape\":[1],\"data\":[" v "]}"
#define SEGT(v) "{\"name\":\"segment\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[" v "]}"

typedef struct {
    int proto;
    const char *body;
    uint32_t n, k;
    const char *seg, *id, *items;
} accept_case;

static const accept_case ACCEPT[] = {
    {MKS_V2, V2B(""), 3, 3, NULL, NULL, "a|b|c"},
    {MKS_V2,
     "{\"inputs\":[{\"data\":[\"a\",\"b\",\"c\"],\"shape\":[3],\"datatype\":\"BYTES\",\"name\":\"items\"}]}",
     3, 3, NULL, NULL, "a|b|c"},
    {MKS_V2,
     "{\"parameters\":{\"segment\":\"s1\",\"top_k\":2},\"id\":\"req-1\",\"inputs\":[{\"shape\":[3],"
     "\"name\":\"items\",\"data\":[\"a\",\"b\",\"c\"],\"datatype\":\"BYTES\"}]}",
     3, 2, "s1", "req-1", "a|b|c"},
    {MKS_V2, V2B(",\"parameters\":{\"top_k\":2,\"segment\":\"s1\"}"), 3, 2, "s1", NULL, "a|b|c"},
    {MKS_V2, V2B(",\"id\":\"req-1\""), 3, 3, NULL, "req-1", "a|b|c"},
    {MKS_V2, V2B(",\"id\":\"\""), 3, 3, NULL, "", "a|b|c"},
    {MKS_V2, V2B(",\"parameters\":{}"), 3, 3, NULL, NULL, "a|b|c"},
    {MKS_V2, V2B(",\"parameters\":{\"top_k\":10}"), 3, 3, NULL, NULL, "a|b|c"},
    {MKS_V2, V2B(",\"parameters\":{\"top_k\":3}"), 3, 3, NULL, NULL, "a|b|c"},
    {MKS_V2, V2B(",\"parameters\":{\"top_k\":1}"), 3, 1, NULL, NULL, "a|b|c"},
    {MKS_V2, V2B(",\"parameters\":{\"top_k\":9999999999}"), 3, 3, NULL, NULL, "a|b|c"},
    {MKS_V2, V2B(",\"parameters\":{\"top_k\":4294967297}"), 3, 3, NULL, NULL, "a|b|c"},
    {MKS_V2, V2B(",\"parameters\":{\"segment\":\"seg\"}"), 3, 3, "seg", NULL, "a|b|c"},
    {MKS_V2, "{\"inputs\":[" ITEMS3 "," TOPK("INT64", "2") "]}", 3, 2, NULL, NULL, "a|b|c"},
    {MKS_V2, "{\"inputs\":[" ITEMS3 "," TOPK("INT32", "1") "]}", 3, 1, NULL, NULL, "a|b|c"},
    {MKS_V2, "{\"inputs\":[" ITEMS3 "," TOPK("UINT32", "2") "]}", 3, 2, NULL, NULL, "a|b|c"},
    {MKS_V2, "{\"inputs\":[" ITEMS3 "," TOPK("UINT64", "7") "]}", 3, 3, NULL, NULL, "a|b|c"},
    {MKS_V2, "{\"inputs\":[" TOPK("INT64", "2") "," SEGT("\"t\"") "," ITEMS3 "]}", 3, 2, "t", NULL,
     "a|b|c"},
    {MKS_V2, "{\"inputs\":[" SEGT("\"tseg\"") "," ITEMS3 "]}", 3, 3, "tseg", NULL, "a|b|c"},
    /* tensors win over parameters (whose values are then not validated, as in Python) */
    {MKS_V2,
     "{\"parameters\":{\"top_k\":1,\"segment\":\"p\"},\"inputs\":[" ITEMS3 "," TOPK("INT64", "2")
     "," SEGT("\"t\"") "]}",
     3, 2, "t", NULL, "a|b|c"},
    {MKS_V2, "{\"inputs\":[" ITEMS3 "," TOPK("INT64", "2") "],\"parameters\":{\"top_k\":0}}", 3, 2,
     NULL, NULL, "a|b|c"},
    {MKS_V2, "{\"inputs\":[" ITEMS3 "," SEGT("\"t\"") "],\"parameters\":{\"segment\":\"\"}}", 3, 3,
     "t", NULL, "a|b|c"},
    /* odd but plain item ids: empty, spaces, 0x7f, punctuation, duplicates */
    {MKS_V2,
     "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[5],\"data\":[\"\",\" x \","
     "\"\x7f\",\"a/b{}[],:\",\"\"]}]}",
     5, 5, NULL, NULL, "| x |\x7f|a/b{}[],:|"},
    {MKS_V2, "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"x\"]}]}", 1,
     1, NULL, NULL, "x"},
    {MKS_V1, "{\"instances\":[\"a\",\"b\"]}", 2, 2, NULL, NULL, "a|b"},
    {MKS_V1, "{\"instances\":[\"a\",\"b\"],\"parameters\":{\"top_k\":1,\"segment\":\"s\"}}", 2, 1, "s",
     NULL, "a|b"},
    {MKS_V1, "{\"parameters\":{\"segment\":\"s\"},\"instances\":[\"a\",\"b\",\"a\"]}", 3, 3, "s", NULL,
     "a|b|a"},
    {MKS_V1, "{\"instances\":[\"\"],\"parameters\":{}}", 1, 1, NULL, NULL, ""},
};
#define N_ACCEPT (sizeof ACCEPT / sizeof ACCEPT[0])

static void test_parse_accept(void) {
    mks_scorer *sc = mks_scorer_create(64);
    sbuf s = {0};
    for (size_t c = 0; c < N_ACCEPT; c++) {
        const accept_case *a = &ACCEPT[c];
        EXPECT_OK(sc, a->proto, a->body, a->n, a->k, a->seg, a->id, a->items);
        for (int v = 0; v < 7; v++) {
            spaced(&s, a->body, v);
            expect_ok(__LINE__, sc, a->proto, s.p, s.len, a->n, a->k, a->seg, a->id, a->items);
        }
    }
    /* segment of exactly 128 characters (129 is refused below) */
    sb_clear(&s);
    sb_puts(&s, V2B(",\"parameters\":{\"segment\":\""));
    s.len -= 1; /* drop V2B's closing brace, re-added below */
    for (int i = 0; i < MKS_MAX_SEGMENT; i++) sb_char(&s, (char)('a' + i % 26));
    sb_puts(&s, "\"}}");
    {
        char seg[MKS_MAX_SEGMENT + 1];
        for (int i = 0; i < MKS_MAX_SEGMENT; i++) seg[i] = (char)('a' + i % 26);
        seg[MKS_MAX_SEGMENT] = 0;
        expect_ok(__LINE__, sc, MKS_V2, s.p, s.len, 3, 3, seg, NULL, "a|b|c");
        sb_clear(&s);
        sb_printf(&s, "{\"inputs\":[" ITEMS3 "," SEGT("\"%s\"") "]}", seg);
        expect_ok(__LINE__, sc, MKS_V2, s.p, s.len, 3, 3, seg, NULL, "a|b|c");
        sb_clear(&s);
        sb_printf(&s, "{\"inputs\":[" ITEMS3 "," SEGT("\"%sx\"") "]}", seg);
        expect_fallback(__LINE__, sc, MKS_V2, s.p, s.len);
        sb_clear(&s);
        sb_printf(&s, "{\"instances\":[\"a\"],\"parameters\":{\"segment\":\"%sx\"}}", seg);
        expect_fallback(__LINE__, sc, MKS_V1, s.p, s.len);
    }
    /* n == max_items is accepted, max_items + 1 is not (both protocols) */
    mks_scorer *small = mks_scorer_create(5);
    EXPECT_OK(small, MKS_V2,
              "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[5],\"data\":[\"a\",\"b\","
              "\"c\",\"d\",\"e\"]}," SEGT("\"s\"") "," TOPK("INT64", "2") "]}",
              5, 2, "s", NULL, "a|b|c|d|e");
    EXPECT_FB(small, MKS_V2,
              "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[6],\"data\":[\"a\",\"b\","
              "\"c\",\"d\",\"e\",\"f\"]}]}");
    EXPECT_OK(small, MKS_V1, "{\"instances\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 5, 5, NULL, NULL, "a|b|c|d|e");
    EXPECT_FB(small, MKS_V1, "{\"instances\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\"]}");
    EXPECT_FB(small, MKS_V1, "{\"instances\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\"]}");
    /* a fallback leaves nothing behind: the next good body parses normally */
    EXPECT_OK(small, MKS_V1, "{\"instances\":[\"q\"]}", 1, 1, NULL, NULL, "q");
    mks_scorer_free(small);
    mks_scorer_free(sc);
    sb_free(&s);
}

static const char *const REJECT_V2[] = {
    "",
    " ",
    "{}",
    "[]",
    "null",
    "\"inputs\"",
    "{\"inputs\":[]}",
    "{\"inputs\":[{}]}",
    "{\"inputs\":{}}",
    "{\"inputs\":null}",
    "{\"inputs\":[" ITEMS3 ",]}",
    "{\"inputs\":[" ITEMS3 "],}",
    "{,\"inputs\":[" ITEMS3 "]}",
    "{\"inputs\":[," ITEMS3 "]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"],}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\",]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[3,],\"data\":[\"a\",\"b\",\"c\"]}]}",
    V2B(",\"parameters\":{\"top_k\":2,}"),
    V2B(",\"parameters\":{,}"),
    V2B("") " x",
    V2B("") "}",
    V2B("") ",",
    V2B("") "\"",
    V2B("") V2B(""),
    V2B("") "{}",
    V2B("") "[]",
    "{\"inputs\":[" ITEMS3 "]",
    "{\"inputs\":[" ITEMS3 "]}}",
    "{\"inputs\":[" ITEMS3 "]]}",
    "{\"inputs\" [" ITEMS3 "]}",
    "{\"inputs\":[" ITEMS3 "] \"id\":\"x\"}",
    "{inputs:[" ITEMS3 "]}",
    "{'inputs':[" ITEMS3 "]}",
    /* duplicate keys at every level, duplicate tensors */
    "{\"inputs\":[" ITEMS3 "],\"inputs\":[" ITEMS3 "]}",
    V2B(",\"id\":\"a\",\"id\":\"b\""),
    V2B(",\"id\":\"a\",\"id\":\"a\""),
    V2B(",\"parameters\":{},\"parameters\":{}"),
    V2B(",\"parameters\":{\"top_k\":1,\"top_k\":1}"),
    V2B(",\"parameters\":{\"segment\":\"a\",\"segment\":\"a\"}"),
    "{\"inputs\":[{\"name\":\"items\",\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"datatype\":\"BYTES\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[3],\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[" ITEMS3 "," ITEMS3 "]}",
    "{\"inputs\":[" ITEMS3 "," TOPK("INT64", "1") "," TOPK("INT64", "1") "]}",
    "{\"inputs\":[" ITEMS3 "," SEGT("\"a\"") "," SEGT("\"a\"") "]}",
    "{\"inputs\":[" ITEMS3 "," SEGT("\"a\"") "," TOPK("INT64", "1") "," TOPK("INT64", "1") "]}",
    /* unknown or unsupported fields */
    V2B(",\"outputs\":[]"),
    V2B(",\"outputs\":[{\"name\":\"scores\"}]"),
    V2B(",\"foo\":1"),
    V2B(",\"model_name\":\"m\""),
    V2B(",\"instances\":[\"a\"]"),
    V2B(",\"parameters\":{\"foo\":1}"),
    V2B(",\"parameters\":{\"top_k\":1,\"foo\":\"x\"}"),
    V2B(",\"parameters\":[]"),
    V2B(",\"parameters\":null"),
    V2B(",\"parameters\":\"x\""),
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"],\"parameters\":{}}]}",
    "{\"inputs\":[{\"parameters\":{\"content_type\":\"str\"},\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"],\"x\":1}]}",
    /* tensor names and datatypes */
    "{\"inputs\":[{\"name\":\"other\",\"datatype\":\"BYTES\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"Items\",\"datatype\":\"BYTES\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"\",\"datatype\":\"BYTES\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[" ITEMS3 ",{\"name\":\"other\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"a\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"FP64\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"INT64\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"bytes\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"STRING\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":null,\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":null,\"datatype\":\"BYTES\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    /* missing tensor fields */
    "{\"inputs\":[{\"datatype\":\"BYTES\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[3]}]}",
    "{\"inputs\":[" SEGT("\"s\"") "]}",
    "{\"inputs\":[" TOPK("INT64", "1") "]}",
    "{\"id\":\"x\"}",
    "{\"parameters\":{\"top_k\":1}}",
    /* shapes */
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[2],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[4],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[1,3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[3,1],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":3,\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[\"3\"],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[-3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[3.0],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[03],\"data\":[\"a\",\"b\",\"c\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[0],\"data\":[]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[[\"a\"]]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[1,3],\"data\":[[\"a\",\"b\",\"c\"]]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[1]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[2],\"data\":[\"a\",1]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[null]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":\"a\"}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[{\"a\":1}]}]}",
    /* top_k: as a parameter and as a tensor */
    V2B(",\"parameters\":{\"top_k\":0}"),
    V2B(",\"parameters\":{\"top_k\":-1}"),
    V2B(",\"parameters\":{\"top_k\":1.5}"),
    V2B(",\"parameters\":{\"top_k\":2.0}"),
    V2B(",\"parameters\":{\"top_k\":1e2}"),
    V2B(",\"parameters\":{\"top_k\":1E2}"),
    V2B(",\"parameters\":{\"top_k\":01}"),
    V2B(",\"parameters\":{\"top_k\":00}"),
    V2B(",\"parameters\":{\"top_k\":+1}"),
    V2B(",\"parameters\":{\"top_k\":true}"),
    V2B(",\"parameters\":{\"top_k\":null}"),
    V2B(",\"parameters\":{\"top_k\":\"3\"}"),
    V2B(",\"parameters\":{\"top_k\":[2]}"),
    V2B(",\"parameters\":{\"top_k\":12345678901}"),
    V2B(",\"parameters\":{\"top_k\":0000000001}"),
    "{\"inputs\":[" ITEMS3 "," TOPK("INT64", "0") "]}",
    "{\"inputs\":[" ITEMS3 "," TOPK("INT64", "-1") "]}",
    "{\"inputs\":[" ITEMS3 "," TOPK("INT64", "1.5") "]}",
    "{\"inputs\":[" ITEMS3 "," TOPK("INT64", "1e2") "]}",
    "{\"inputs\":[" ITEMS3 "," TOPK("INT64", "01") "]}",
    "{\"inputs\":[" ITEMS3 "," TOPK("INT64", "true") "]}",
    "{\"inputs\":[" ITEMS3 "," TOPK("INT64", "\"3\"") "]}",
    "{\"inputs\":[" ITEMS3 "," TOPK("INT64", "12345678901") "]}",
    "{\"inputs\":[" ITEMS3 "," TOPK("INT64", "1,2") "]}",
    "{\"inputs\":[" ITEMS3 "," TOPK("INT64", "[2]") "]}",
    "{\"inputs\":[" ITEMS3 "," TOPK("INT64", "") "]}",
    "{\"inputs\":[" ITEMS3 "," TOPK("BYTES", "2") "]}",
    "{\"inputs\":[" ITEMS3 "," TOPK("FP32", "2") "]}",
    "{\"inputs\":[" ITEMS3 "," TOPK("INT16", "2") "]}",
    "{\"inputs\":[" ITEMS3 "," TOPK("BOOL", "2") "]}",
    "{\"inputs\":[" ITEMS3 ",{\"name\":\"top_k\",\"datatype\":\"INT64\",\"shape\":[2],\"data\":[1,2]}]}",
    "{\"inputs\":[" ITEMS3 ",{\"name\":\"top_k\",\"datatype\":\"INT64\",\"shape\":[2],\"data\":[1]}]}",
    "{\"inputs\":[" ITEMS3 ",{\"name\":\"top_k\",\"datatype\":\"INT64\",\"shape\":[1,1],\"data\":[1]}]}",
    "{\"inputs\":[" ITEMS3 ",{\"name\":\"top_k\",\"datatype\":\"INT64\",\"shape\":[],\"data\":[1]}]}",
    /* a parameter of the wrong kind falls back even where a tensor overrides it (Python
     * ignores it then; falling back is always safe) */
    "{\"inputs\":[" ITEMS3 "," TOPK("INT64", "2") "],\"parameters\":{\"top_k\":\"x\"}}",
    /* segment */
    V2B(",\"parameters\":{\"segment\":\"\"}"),
    V2B(",\"parameters\":{\"segment\":3}"),
    V2B(",\"parameters\":{\"segment\":null}"),
    V2B(",\"parameters\":{\"segment\":[\"s\"]}"),
    V2B(",\"parameters\":{\"segment\":true}"),
    "{\"inputs\":[" ITEMS3 "," SEGT("\"\"") "]}",
    "{\"inputs\":[" ITEMS3 "," SEGT("3") "]}",
    "{\"inputs\":[" ITEMS3 "," SEGT("\"a\",\"b\"") "]}",
    "{\"inputs\":[" ITEMS3 ",{\"name\":\"segment\",\"datatype\":\"BYTES\",\"shape\":[2],\"data\":[\"a\",\"b\"]}]}",
    "{\"inputs\":[" ITEMS3 ",{\"name\":\"segment\",\"datatype\":\"INT64\",\"shape\":[1],\"data\":[\"a\"]}]}",
    "{\"inputs\":[" ITEMS3 ",{\"name\":\"segment\",\"datatype\":\"INT64\",\"shape\":[1],\"data\":[3]}]}",
    "{\"inputs\":[" ITEMS3 ",{\"name\":\"segment\",\"datatype\":\"BYTES\",\"shape\":[1,1],\"data\":[\"a\"]}]}",
    /* id */
    V2B(",\"id\":null"),
    V2B(",\"id\":3"),
    V2B(",\"id\":true"),
    V2B(",\"id\":[\"x\"]"),
    V2B(",\"id\":{}"),
    V2B(",\"id\":\"\xc3\xa9t\xc3\xa9\""),
    V2B(",\"id\":\"a\\\"b\""),
    V2B(",\"id\":\"\\u0061\""),
    /* escapes and non-ASCII anywhere */
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"a\\\"b\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"\\u0061\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"a\\\\b\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"a\\/b\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"caf\xc3\xa9\"]}]}",
    "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"tab\there\"]}]}",
    "{\"inp\\u0075ts\":[" ITEMS3 "]}",
    "{\"inputs\":[{\"name\":\"it\\u0065ms\",\"datatype\":\"BYTES\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}]}",
    V2B(",\"parameters\":{\"segment\":\"s\\n\"}"),
    "\xef\xbb\xbf" V2B(""),
    /* a v1 body */
    "{\"instances\":[\"a\",\"b\"]}",
};

static const char *const REJECT_V1[] = {
    "",
    "{}",
    "{\"instances\":[]}",
    "{\"instances\":null}",
    "{\"instances\":\"a\"}",
    "{\"instances\":[1]}",
    "{\"instances\":[\"a\",1]}",
    "{\"instances\":[[\"a\"]]}",
    "{\"instances\":[{\"a\":1}]}",
    "{\"instances\":[\"a\",]}",
    "{\"instances\":[\"a\"],}",
    "{\"instances\":[\"a\"]} x",
    "{\"instances\":[\"a\"]}{\"instances\":[\"a\"]}",
    "{\"inputs\":[\"a\"]}",
    "{\"instances\":[\"a\"],\"inputs\":[\"a\"]}",
    "{\"instances\":[\"a\"],\"instances\":[\"b\"]}",
    "{\"instances\":[\"a\"],\"id\":\"x\"}",
    "{\"instances\":[\"a\"],\"outputs\":[]}",
    "{\"instances\":[\"a\"],\"parameters\":{\"top_k\":0}}",
    "{\"instances\":[\"a\"],\"parameters\":{\"top_k\":1,\"top_k\":1}}",
    "{\"instances\":[\"a\"],\"parameters\":{\"segment\":\"\"}}",
    "{\"instances\":[\"a\"],\"parameters\":{\"other\":1}}",
    "{\"instances\":[\"a\"],\"parameters\":{},\"parameters\":{}}",
    "{\"instances\":[\"a\\\"b\"]}",
    "{\"instances\":[\"\xc3\xa9\"]}",
    "{\"parameters\":{\"top_k\":1}}",
    V2B(""),
};

/* Truncations and single-byte mutations of a good body: every prefix falls back, nothing
 * crashes, and whatever is still accepted is self-consistent. */
static void mutate_body(mks_scorer *sc, int proto, const char *body, size_t len, size_t max_items) {
    size_t last = len;
    while (last > 0 && body[last - 1] != '}') last--;
    for (size_t cut = 0; cut < last; cut++)
        expect_fallback(__LINE__, sc, proto, body, cut);
    static const char repl[] = {'"', '\\', ',', ':', '{', '}', '[', ']', ' ', '0', '1', '9', 'a',
                                '-', '.', 'e', 0x00, 0x1f, (char)0x80, (char)0xff};
    char *m = xmalloc(len);
    mks_request req;
    for (size_t pos = 0; pos < len; pos++) {
        for (size_t r = 0; r <= sizeof repl; r++) {
            size_t mlen = len;
            if (r == sizeof repl) { /* deletion */
                memcpy(m, body, pos);
                memcpy(m + pos, body + pos + 1, len - pos - 1);
                mlen = len - 1;
            } else {
                memcpy(m, body, len);
                m[pos] = repl[r];
            }
            const int rc = parse_copy(sc, proto, m, mlen, &req);
            CHECK(rc == MKS_OK || rc == MKS_FALLBACK, "mutation rc %d", rc);
            if (rc == MKS_OK) {
                CHECK(req.n_items >= 1 && req.n_items <= max_items && req.top_k >= 1 &&
                          req.top_k <= req.n_items,
                      "mutated body accepted with n %u k %u", req.n_items, req.top_k);
                CHECK(req.segment_off < 0 ||
                          (req.segment_len >= 1 && req.segment_len <= MKS_MAX_SEGMENT &&
                           (size_t)req.segment_off + req.segment_len <= mlen),
                      "mutated body: segment span");
                CHECK(req.id_off < 0 || (size_t)req.id_off + req.id_len <= mlen, "mutated body: id span");
                for (uint32_t i = 0; i < req.n_items; i++) {
                    const size_t o = sc->off[sc->items_start + i], l = sc->len[sc->items_start + i];
                    int plain = o + l <= mlen && o > 0 && m[o - 1] == '"' && o + l < mlen && m[o + l] == '"';
                    for (size_t j = 0; plain && j < l; j++) plain = !is_special((unsigned char)m[o + j]);
                    CHECK(plain, "mutated body: item %u span %zu+%zu", i, o, l);
                }
            } else {
                CHECK(req.n_items == 0, "n_items left on fallback");
            }
        }
    }
    free(m);
}

static void test_parse_reject(void) {
    mks_scorer *sc = mks_scorer_create(64);
    sbuf s = {0};
    for (size_t i = 0; i < sizeof REJECT_V2 / sizeof REJECT_V2[0]; i++) {
        expect_fallback(__LINE__, sc, MKS_V2, REJECT_V2[i], strlen(REJECT_V2[i]));
        spaced(&s, REJECT_V2[i], (int)i);
        expect_fallback(__LINE__, sc, MKS_V2, s.p, s.len);
    }
    for (size_t i = 0; i < sizeof REJECT_V1 / sizeof REJECT_V1[0]; i++) {
        expect_fallback(__LINE__, sc, MKS_V1, REJECT_V1[i], strlen(REJECT_V1[i]));
        spaced(&s, REJECT_V1[i], (int)i);
        expect_fallback(__LINE__, sc, MKS_V1, s.p, s.len);
    }
    /* bytes after the document: a NUL, a form feed, a vertical tab (not JSON whitespace) */
    static const char trail[] = {'\0', '\f', '\v', (char)0xa0};
    for (size_t t = 0; t < sizeof trail; t++) {
        sb_clear(&s);
        sb_puts(&s, V2B(""));
        sb_char(&s, trail[t]);
        expect_fallback(__LINE__, sc, MKS_V2, s.p, s.len);
        sb_clear(&s);
        sb_puts(&s, "{\"instances\":[\"a\"],");
        sb_char(&s, trail[t]);
        sb_puts(&s, "\"parameters\":{}}");
        expect_fallback(__LINE__, sc, MKS_V1, s.p, s.len);
    }
    /* every prefix of every good body, and single-byte mutations */
    for (size_t c = 0; c < N_ACCEPT; c++) {
        mutate_body(sc, ACCEPT[c].proto, ACCEPT[c].body, strlen(ACCEPT[c].body), 64);
        spaced(&s, ACCEPT[c].body, (int)c);
        size_t last = s.len;
        while (last > 0 && s.p[last - 1] != '}') last--;
        for (size_t cut = 0; cut < last; cut++) expect_fallback(__LINE__, sc, ACCEPT[c].proto, s.p, cut);
    }
    /* protocols and arguments */
    mks_request req;
    const char *good = "{\"instances\":[\"a\"]}";
    char *g = exact_copy(good, strlen(good));
    CHECK(mks_parse(sc, 3, g, strlen(good), &req) == MKS_EARG, "protocol 3");
    CHECK(mks_parse(sc, 0, g, strlen(good), &req) == MKS_EARG, "protocol 0");
    CHECK(mks_parse(NULL, MKS_V1, g, strlen(good), &req) == MKS_EARG, "NULL scorer");
    CHECK(mks_parse(sc, MKS_V1, g, strlen(good), NULL) == MKS_EARG, "NULL request");
    CHECK(mks_parse(sc, MKS_V1, NULL, 5, &req) == MKS_EARG, "NULL body with a length");
    CHECK(mks_parse(sc, MKS_V1, g, 0, &req) == MKS_FALLBACK, "empty body");
    CHECK(mks_parse(sc, MKS_V1, g, strlen(good), &req) == MKS_OK && req.n_items == 1, "still fine");
    free(g);
    mks_scorer_free(sc);
    sb_free(&s);
}

/* ----------------------------------------------------------------------------- scoring -- */

typedef struct {
    double s;
    size_t i;
} ranked;

static int by_score_then_position(const void *pa, const void *pb) {
    const ranked *a = pa, *b = pb;
    if (a->s != b->s) return a->s > b->s ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

typedef struct {
    const char *p; /* id bytes */
    size_t len;
    int64_t row;   /* expected row, -1 for unknown */
} item_t;

/* A request body for items; *off receives where each id lies in the body.  topk_mode: 0 none,
 * 1 parameter, 2 INT64 tensor.  seg/id may be NULL. */
static void build_body(sbuf *b, int proto, const item_t *items, size_t n, uint32_t *off,
                       int topk_mode, unsigned long long top_k, const char *seg, const char *id,
                       size_t id_len) {
    sb_clear(b);
    if (proto == MKS_V2) {
        if (id) {
            sb_puts(b, "{\"id\":\"");
            sb_add(b, id, id_len);
            sb_puts(b, "\",\"inputs\":[");
        } else {
            sb_puts(b, "{\"inputs\":[");
        }
        if (topk_mode == 2) sb_printf(b, TOPK("INT64", "%llu") ",", top_k);
        sb_printf(b, "{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[%zu],\"data\":[", n);
    } else {
        sb_puts(b, "{\"instances\":[");
    }
    for (size_t i = 0; i < n; i++) {
        sb_puts(b, i ? ",\"" : "\"");
        off[i] = (uint32_t)b->len;
        sb_add(b, items[i].p, items[i].len);
        sb_char(b, '"');
    }
    sb_puts(b, proto == MKS_V2 ? "]}]" : "]");
    if (topk_mode == 1 || seg) {
        sb_puts(b, ",\"parameters\":{");
        if (topk_mode == 1) sb_printf(b, "\"top_k\":%llu%s", top_k, seg ? "," : "");
        if (seg) sb_printf(b, "\"segment\":\"%s\"", seg);
        sb_char(b, '}');
    }
    sb_char(b, '}');
}

static const char HEAD[] = "{\"model_name\":\"bandit\",\"model_version\":\"v1\",";

/* Walk an answer: skeleton, every score (strtod, exact against want, the same text
 * mks_format_double writes), the ranking against a qsort reference, the id, the end. */
static void check_answer(int line, const char *out, size_t out_len, int proto, const item_t *items,
                         size_t n, size_t k, const double *want, const char *id, size_t id_len) {
    char *o = xmalloc(out_len + 1);
    memcpy(o, out, out_len);
    o[out_len] = 0;
    const char *p = o, *end = o + out_len;
    char lit[160];
    ranked *ref = xmalloc(n * sizeof *ref);
#define LIT(s)                                                                                    \
    do {                                                                                          \
        const size_t l_ = strlen(s);                                                              \
        if ((size_t)(end - p) < l_ || memcmp(p, s, l_) != 0) {                                    \
            CHECK(0, "line %d: expected [%s] at offset %zu of [%.200s]", line, s, (size_t)(p - o), \
                  o);                                                                             \
            goto done;                                                                            \
        }                                                                                         \
        p += l_;                                                                                  \
    } while (0)
    if (proto == MKS_V2) {
        LIT(HEAD);
        snprintf(lit, sizeof lit, "\"outputs\":[{\"name\":\"scores\",\"datatype\":\"FP64\",\"shape\":[%zu],\"data\":[", n);
        LIT(lit);
    } else {
        LIT("{\"predictions\":[");
    }
    for (size_t i = 0; i < n; i++) {
        if (i) LIT(",");
        char *e;
        const double v = strtod(p, &e);
        char fmt[40];
        const size_t fl = mks_format_double(want[i], fmt);
        CHECK(e > p && json_number_ok(p, (size_t)(e - p)), "line %d: score %zu is no number", line, i);
        CHECK(v == want[i], "line %d: score %zu is %.17g, want %.17g", line, i, v, want[i]);
        CHECK(v >= 0.0 && v <= 1.0, "line %d: score %zu = %g outside [0, 1]", line, i, v);
        CHECK((size_t)(e - p) == fl && memcmp(p, fmt, fl) == 0, "line %d: score %zu text", line, i);
        if (e <= p) goto done;
        p = e;
    }
    if (proto == MKS_V2) {
        snprintf(lit, sizeof lit, "]},{\"name\":\"ranking\",\"datatype\":\"BYTES\",\"shape\":[%zu],\"data\":[", k);
        LIT(lit);
    } else {
        LIT("],\"ranking\":[");
    }
    for (size_t i = 0; i < n; i++) {
        ref[i].s = want[i];
        ref[i].i = i;
    }
    qsort(ref, n, sizeof *ref, by_score_then_position);
    for (size_t j = 0; j < k; j++) {
        if (j) LIT(",");
        LIT("\"");
        const item_t *it = &items[ref[j].i];
        CHECK((size_t)(end - p) > it->len && memcmp(p, it->p, it->len) == 0 && p[it->len] == '"',
              "line %d: ranking[%zu] should be item %zu (%.*s), is [%.40s]", line, j, ref[j].i,
              (int)it->len, it->p, p);
        if ((size_t)(end - p) <= it->len) goto done;
        p += it->len;
        LIT("\"");
    }
    if (proto == MKS_V2) {
        LIT("]}]");
        if (id) {
            LIT(",\"id\":\"");
            CHECK((size_t)(end - p) >= id_len && memcmp(p, id, id_len) == 0, "line %d: id", line);
            if ((size_t)(end - p) < id_len) goto done;
            p += id_len;
            LIT("\"");
        }
        LIT("}");
    } else {
        LIT("]}");
    }
    CHECK(p == end, "line %d: %zu bytes after the answer", line, (size_t)(end - p));
done:
#undef LIT
    free(ref);
    free(o);
}

/* Everything needed to score and verify one request. */
typedef struct {
    mks_scorer *sc;
    betadist_rng *rng, *twin;
    const mks_index *ix;
    const double *alpha, *beta;
    size_t n_rows;
} bench_t;

/* Parse and score; on MKS_OK verify the whole answer and the missing ids.  Returns mks_score's
 * code (or -1 when the parse failed). */
static int score_and_check(int line, bench_t *t, int proto, const item_t *items, size_t n,
                           int topk_mode, unsigned long long top_k, const char *seg, const char *id,
                           size_t id_len, size_t *bad_row) {
    sbuf b = {0};
    uint32_t *off = xmalloc(n * sizeof *off);
    build_body(&b, proto, items, n, off, topk_mode, top_k, seg, id, id_len);
    char *body = exact_copy(b.p, b.len);
    mks_request req;
    int rc = mks_parse(t->sc, proto, body, b.len, &req);
    CHECK(rc == MKS_OK, "line %d: parse rc %d", line, rc);
    if (rc != MKS_OK) {
        rc = -1;
        goto out;
    }
    const size_t k = topk_mode && top_k < n ? (size_t)top_k : n;
    CHECK(req.n_items == n && req.top_k == k, "line %d: n %u k %u", line, req.n_items, req.top_k);
    const char *ans = NULL;
    size_t ans_len = 0;
    rc = mks_score(t->sc, t->rng, t->ix, t->alpha, t->beta, t->n_rows, body, proto, &req, HEAD,
                   sizeof HEAD - 1, &ans, &ans_len, bad_row);
    if (rc != MKS_OK) goto out;
    /* the twin draws the same batch: item i from its row, unknown ids from the prior */
    double *a = xmalloc(n * sizeof *a), *be = xmalloc(n * sizeof *be), *want = xmalloc(n * sizeof *want);
    size_t n_unknown = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t row = items[i].row < 0 ? t->n_rows - 1 : (size_t)items[i].row;
        a[i] = t->alpha[row];
        be[i] = t->beta[row];
        n_unknown += items[i].row < 0;
    }
    CHECK(betadist_sample_batch(t->twin, a, be, want, n, NULL) == BETADIST_OK, "twin batch");
    check_answer(line, ans, ans_len, proto, items, n, k, want, proto == MKS_V2 ? id : NULL, id_len);
    CHECK(req.n_missing == n_unknown, "line %d: n_missing %u, want %zu", line, req.n_missing, n_unknown);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].row >= 0) continue;
        uint32_t mo = 1, ml = 1;
        mks_missing(t->sc, (uint32_t)m, &mo, &ml);
        CHECK(mo == off[i] && ml == items[i].len, "line %d: missing[%zu] at %u+%u, want %u+%zu", line,
              m, mo, ml, off[i], items[i].len);
        m++;
    }
    for (uint32_t extra = 0; extra < 3; extra++) {
        uint32_t mo = 7, ml = 7;
        mks_missing(t->sc, (uint32_t)m + extra * 1000, &mo, &ml);
        CHECK(mo == 0 && ml == 0, "line %d: mks_missing past n_missing gave %u+%u", line, mo, ml);
    }
    free(a);
    free(be);
    free(want);
out:
    free(body);
    free(off);
    sb_free(&b);
    return rc;
}

static item_t item_of(const char *s, int64_t row) {
    item_t it = {s, strlen(s), row};
    return it;
}

/* A small catalogue with extreme posteriors, so that which score belongs to which id is
 * known: Beta(1e6, 1) ~ 1, Beta(1, 1e6) ~ 0, Beta(1e300, 1e300) == 0.5 exactly (prior). */
static void test_score_small(void) {
    const char *names[] = {"apple", "banana", "cherry", "date", "elderberry-with-a-long-id"};
    const size_t K = 5;
    sbuf all = {0};
    uint64_t *ends = xmalloc(K * sizeof *ends);
    for (size_t i = 0; i < K; i++) {
        sb_puts(&all, names[i]);
        ends[i] = all.len;
    }
    char *keys = exact_copy(all.p, all.len);
    mks_index *ix = mks_index_create(keys, ends, K, 7);
    double *alpha = xmalloc((K + 1) * sizeof *alpha), *beta = xmalloc((K + 1) * sizeof *beta);
    for (size_t r = 0; r < K; r++) { /* even rows ~ 1, odd rows ~ 0 */
        alpha[r] = r % 2 == 0 ? 1e6 : 1.0;
        beta[r] = r % 2 == 0 ? 1.0 : 1e6;
    }
    alpha[K] = beta[K] = 1e300; /* the prior: exactly 0.5 */
    betadist_rng *rng = betadist_rng_create(2024), *twin = betadist_rng_create(2024);
    bench_t t = {mks_scorer_create(64), rng, twin, ix, alpha, beta, K + 1};
    const item_t req[] = {item_of("banana", 1), item_of("apple", 0), item_of("zzz", -1),
                          item_of("cherry", 2), item_of("date", 3), item_of("unknown-2", -1),
                          item_of("elderberry-with-a-long-id", 4)};
    const size_t n = sizeof req / sizeof req[0];
    size_t bad = 777;

    CHECK(score_and_check(__LINE__, &t, MKS_V2, req, n, 1, 3, "s1", "req-1", 5, &bad) == MKS_OK, "v2");
    CHECK(score_and_check(__LINE__, &t, MKS_V2, req, n, 0, 0, NULL, NULL, 0, &bad) == MKS_OK, "v2 no id");
    CHECK(score_and_check(__LINE__, &t, MKS_V2, req, n, 2, 100, NULL, "", 0, &bad) == MKS_OK, "v2 id \"\"");
    CHECK(score_and_check(__LINE__, &t, MKS_V1, req, n, 1, 2, "s", NULL, 0, &bad) == MKS_OK, "v1");
    CHECK(score_and_check(__LINE__, &t, MKS_V1, req, n, 0, 0, NULL, NULL, 0, NULL) == MKS_OK, "v1 all");
    CHECK(bad == 777, "bad_row written on success");

    /* the same by hand, to see the posteriors land on the right ids: request order, extremes */
    {
        const char body[] = "{\"instances\":[\"banana\",\"apple\",\"zzz\",\"cherry\"],"
                            "\"parameters\":{\"top_k\":3}}";
        char *bd = exact_copy(body, sizeof body - 1);
        mks_request r;
        CHECK(mks_parse(t.sc, MKS_V1, bd, sizeof body - 1, &r) == MKS_OK, "parse");
        const char *out;
        size_t out_len;
        CHECK(mks_score(t.sc, rng, ix, alpha, beta, K + 1, bd, MKS_V1, &r, NULL, 0, &out, &out_len,
                        NULL) == MKS_OK,
              "score (v1: head unused)");
        double want[4];
        const double a4[4] = {alpha[1], alpha[0], alpha[K], alpha[2]};
        const double b4[4] = {beta[1], beta[0], beta[K], beta[2]};
        betadist_sample_batch(twin, a4, b4, want, 4, NULL);
        char *o = exact_copy(out, out_len);
        double sc4[4];
        const char *p = o + strlen("{\"predictions\":[");
        for (int i = 0; i < 4; i++) {
            char num[40];
            size_t l = 0;
            while (p < o + out_len && *p != ',' && *p != ']' && l < sizeof num - 1) num[l++] = *p++;
            num[l] = 0;
            sc4[i] = strtod(num, NULL);
            p++;
        }
        CHECK(sc4[0] < 1e-3 && sc4[1] > 1 - 1e-3 && sc4[2] == 0.5 && sc4[3] > 1 - 1e-3,
              "scores in request order: %g %g %g %g", sc4[0], sc4[1], sc4[2], sc4[3]);
        CHECK(sc4[0] == want[0] && sc4[1] == want[1] && sc4[2] == want[2] && sc4[3] == want[3],
              "scores equal the twin's");
        const char *rk = sc4[1] > sc4[3] ? "\"apple\",\"cherry\",\"zzz\"]}" : "\"cherry\",\"apple\",\"zzz\"]}";
        CHECK(out_len > strlen(rk) && memcmp(o + out_len - strlen(rk), rk, strlen(rk)) == 0,
              "ranking %.*s", (int)out_len, o);
        CHECK(r.n_missing == 1, "one missing");
        uint32_t mo, ml;
        mks_missing(t.sc, 0, &mo, &ml);
        CHECK(ml == 3 && memcmp(body + mo, "zzz", 3) == 0, "missing zzz at %u+%u", mo, ml);
        free(o);
        free(bd);
    }

    /* n_rows must be size + 1; nothing is drawn on an error */
    {
        const char body[] = "{\"instances\":[\"apple\",\"nope\"]}";
        char *bd = exact_copy(body, sizeof body - 1);
        mks_request r;
        const char *out = NULL;
        size_t out_len = 0;
        CHECK(mks_parse(t.sc, MKS_V1, bd, sizeof body - 1, &r) == MKS_OK, "parse");
        CHECK(mks_score(t.sc, rng, ix, alpha, beta, K, bd, MKS_V1, &r, NULL, 0, &out, &out_len, &bad) == MKS_EARG,
              "n_rows == size");
        CHECK(mks_score(t.sc, rng, ix, alpha, beta, K + 2, bd, MKS_V1, &r, NULL, 0, &out, &out_len, &bad) == MKS_EARG,
              "n_rows == size + 2");
        CHECK(mks_score(NULL, rng, ix, alpha, beta, K + 1, bd, MKS_V1, &r, NULL, 0, &out, &out_len, &bad) == MKS_EARG &&
                  mks_score(t.sc, NULL, ix, alpha, beta, K + 1, bd, MKS_V1, &r, NULL, 0, &out, &out_len, &bad) == MKS_EARG &&
                  mks_score(t.sc, rng, NULL, alpha, beta, K + 1, bd, MKS_V1, &r, NULL, 0, &out, &out_len, &bad) == MKS_EARG &&
                  mks_score(t.sc, rng, ix, NULL, beta, K + 1, bd, MKS_V1, &r, NULL, 0, &out, &out_len, &bad) == MKS_EARG &&
                  mks_score(t.sc, rng, ix, alpha, NULL, K + 1, bd, MKS_V1, &r, NULL, 0, &out, &out_len, &bad) == MKS_EARG &&
                  mks_score(t.sc, rng, ix, alpha, beta, K + 1, NULL, MKS_V1, &r, NULL, 0, &out, &out_len, &bad) == MKS_EARG &&
                  mks_score(t.sc, rng, ix, alpha, beta, K + 1, bd, MKS_V1, NULL, NULL, 0, &out, &out_len, &bad) == MKS_EARG &&
                  mks_score(t.sc, rng, ix, alpha, beta, K + 1, bd, MKS_V1, &r, NULL, 0, NULL, &out_len, &bad) == MKS_EARG &&
                  mks_score(t.sc, rng, ix, alpha, beta, K + 1, bd, MKS_V1, &r, NULL, 0, &out, NULL, &bad) == MKS_EARG &&
                  mks_score(t.sc, rng, ix, alpha, beta, K + 1, bd, 4, &r, NULL, 0, &out, &out_len, &bad) == MKS_EARG &&
                  mks_score(t.sc, rng, ix, alpha, beta, K + 1, bd, MKS_V2, &r, NULL, 5, &out, &out_len, &bad) == MKS_EARG,
              "NULL arguments and bad protocols");
        mks_request tampered = r;
        tampered.top_k = r.n_items + 1;
        CHECK(mks_score(t.sc, rng, ix, alpha, beta, K + 1, bd, MKS_V1, &tampered, NULL, 0, &out, &out_len, &bad) == MKS_EARG,
              "top_k > n_items");
        tampered = r;
        tampered.n_items = 65;
        tampered.top_k = 1;
        CHECK(mks_score(t.sc, rng, ix, alpha, beta, K + 1, bd, MKS_V1, &tampered, NULL, 0, &out, &out_len, &bad) == MKS_EARG,
              "n_items > max_items");

        /* an invalid row used by the request: EPARAM with its row, nothing drawn */
        const double bads[] = {0.0, -1.0, NAN, INFINITY};
        for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
            for (int which = 0; which < 2; which++) {
                double *arr = which ? beta : alpha;
                const double keep = arr[0];
                arr[0] = bads[i];
                bad = 999;
                CHECK(mks_score(t.sc, rng, ix, alpha, beta, K + 1, bd, MKS_V1, &r, NULL, 0, &out, &out_len, &bad) == MKS_EPARAM && bad == 0,
                      "%s = %g on row 0: bad_row %zu", which ? "beta" : "alpha", bads[i], bad);
                CHECK(mks_score(t.sc, rng, ix, alpha, beta, K + 1, bd, MKS_V1, &r, NULL, 0, &out, &out_len, NULL) == MKS_EPARAM,
                      "EPARAM with bad_row NULL");
                arr[0] = keep;
                /* the prior, used by "nope" */
                const double keep_prior = arr[K];
                arr[K] = bads[i];
                bad = 999;
                CHECK(mks_score(t.sc, rng, ix, alpha, beta, K + 1, bd, MKS_V1, &r, NULL, 0, &out, &out_len, &bad) == MKS_EPARAM && bad == K,
                      "invalid prior: bad_row %zu", bad);
                arr[K] = keep_prior;
                /* a row the request does not use */
                const double keep3 = arr[3];
                arr[3] = bads[i];
                CHECK(mks_score(t.sc, rng, ix, alpha, beta, K + 1, bd, MKS_V1, &r, NULL, 0, &out, &out_len, &bad) == MKS_OK,
                      "invalid unused row");
                const double a2[2] = {alpha[0], alpha[K]}, b2[2] = {beta[0], beta[K]};
                double w2[2];
                betadist_sample_batch(twin, a2, b2, w2, 2, NULL);
                const item_t it2[2] = {item_of("apple", 0), item_of("nope", -1)};
                check_answer(__LINE__, out, out_len, MKS_V1, it2, 2, 2, w2, NULL, 0);
                arr[3] = keep3;
            }
        }
        /* a fallback leaves nothing to score */
        CHECK(mks_parse(t.sc, MKS_V1, bd, 5, &r) == MKS_FALLBACK, "truncated");
        CHECK(mks_score(t.sc, rng, ix, alpha, beta, K + 1, bd, MKS_V1, &r, NULL, 0, &out, &out_len, &bad) == MKS_EARG,
              "score after a fallback");
        free(bd);
    }
    /* the twin is still in step: errors drew nothing */
    CHECK(betadist_rng_next_u64(rng) == betadist_rng_next_u64(twin), "errors must not draw");

    /* ties (Beta(1e300, 1e300) is exactly 0.5) are ranked in request order, on both the
     * heap path (k < n/4) and the sort path, duplicates in the request included */
    {
        item_t tie[40];
        char names40[40][8];
        for (size_t i = 0; i < 40; i++) {
            snprintf(names40[i], sizeof names40[i], "u%zu", i);
            tie[i] = item_of(i % 7 == 3 ? "cherry" : i % 5 == 0 ? "u0" : names40[i],
                             i % 7 == 3 ? 2 : -1);
        }
        tie[39] = item_of("apple", 0);
        const unsigned long long ks[] = {1, 2, 5, 9, 10, 11, 39, 40};
        for (size_t j = 0; j < sizeof ks / sizeof ks[0]; j++)
            CHECK(score_and_check(__LINE__, &t, (j & 1) ? MKS_V1 : MKS_V2, tie, 40, 1, ks[j], NULL, "t", 1, &bad) == MKS_OK,
                  "ties, k %llu", ks[j]);
    }

    /* duplicates in the index: the last row is used, the first may be invalid */
    {
        const char dk[] = "xyx";
        const uint64_t de[] = {1, 2, 3};
        char *k2 = exact_copy(dk, 3);
        uint64_t *e2 = xmalloc(sizeof de);
        memcpy(e2, de, sizeof de);
        mks_index *dx = mks_index_create(k2, e2, 3, 5);
        double a3[4] = {0.0, 1e6, 1.0, 1e300}, b3[4] = {1.0, 1.0, 1e6, 1e300};
        bench_t d = {t.sc, rng, twin, dx, a3, b3, 4};
        const item_t it[] = {item_of("x", 2), item_of("y", 1), item_of("q", -1)};
        CHECK(score_and_check(__LINE__, &d, MKS_V2, it, 3, 0, 0, NULL, "dup", 3, &bad) == MKS_OK,
              "first row of a duplicate is unused");
        a3[2] = NAN;
        CHECK(score_and_check(__LINE__, &d, MKS_V2, it, 3, 0, 0, NULL, "dup", 3, &bad) == MKS_EPARAM && bad == 2,
              "last row of a duplicate: bad_row %zu", bad);
        mks_index_free(dx);
        free(k2);
        free(e2);
    }

    mks_scorer_free(t.sc);
    mks_index_free(ix);
    betadist_rng_free(rng);
    betadist_rng_free(twin);
    free(alpha);
    free(beta);
    free(keys);
    free(ends);
    sb_free(&all);
}

/* Requests of growing and shrinking size (up to max_items = 10000, ids up to 200 bytes), so
 * the answer buffer is reallocated; k on both sides of n/4 (heap and full sort). */
static void test_score_large(void) {
    const size_t K = 20000, max_items = 10000, max_len = 200;
    sbuf all = {0};
    uint64_t *ends = xmalloc(K * sizeof *ends);
    for (size_t i = 0; i < K; i++) {
        const size_t target = i % 97 == 0 ? max_len : 8 + rnd_below(max_len - 7);
        const size_t start = all.len;
        sb_printf(&all, "id%05zu-", i);
        while (all.len - start < target) sb_char(&all, plain_char());
        ends[i] = all.len;
    }
    char *keys = exact_copy(all.p, all.len);
    mks_index *ix = mks_index_create(keys, ends, K, rnd());
    double *alpha = xmalloc((K + 1) * sizeof *alpha), *beta = xmalloc((K + 1) * sizeof *beta);
    for (size_t r = 0; r < K; r++) {
        alpha[r] = exp(-2.0 + 7.0 * rnd_unit());
        beta[r] = exp(-2.0 + 7.0 * rnd_unit());
    }
    alpha[K] = beta[K] = 1.0;
    betadist_rng *rng = betadist_rng_create(99), *twin = betadist_rng_create(99);
    bench_t t = {mks_scorer_create(max_items), rng, twin, ix, alpha, beta, K + 1};

    /* unknown ids, up to 200 bytes too */
    const size_t U = 2000;
    sbuf unk = {0};
    size_t *uends = xmalloc(U * sizeof *uends);
    for (size_t i = 0; i < U; i++) {
        const size_t target = i % 50 == 0 ? max_len : 8 + rnd_below(max_len - 7);
        const size_t start = unk.len;
        sb_printf(&unk, "zz%05zu-", i);
        while (unk.len - start < target) sb_char(&unk, plain_char());
        uends[i] = unk.len;
    }
    item_t *items = xmalloc(max_items * sizeof *items);
    char idbuf[201];
    const size_t sizes[] = {1, 2, 3, 17, 64, 100, 999, 2500, 5000, 10000, 7, 4001, 10000};
    long requests = 0;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const size_t n = sizes[s];
        size_t ks[6] = {1, n / 4 - 1, n / 4, n / 4 + 1, n, n + 5};
        for (size_t j = 0; j < 6; j++) {
            const size_t k = ks[j];
            if (k < 1 || k > n + 5 || (j > 0 && k == ks[j - 1])) continue;
            for (size_t i = 0; i < n; i++) {
                if (rnd_below(10) == 0) {
                    const size_t u = rnd_below(U), st = u ? uends[u - 1] : 0;
                    items[i].p = unk.p + st;
                    items[i].len = uends[u] - st;
                    items[i].row = -1;
                } else {
                    const size_t r = rnd_below(K), st = r ? (size_t)ends[r - 1] : 0;
                    items[i].p = keys + st;
                    items[i].len = (size_t)ends[r] - st;
                    items[i].row = (int64_t)r;
                }
            }
            const int proto = (requests & 1) ? MKS_V1 : MKS_V2;
            const size_t id_len = rnd_below(201);
            for (size_t i = 0; i < id_len; i++) idbuf[i] = plain_char();
            idbuf[id_len] = 0;
            const int topk_mode = 1 + (int)(requests % 2 == 0 && proto == MKS_V2);
            const int rc = score_and_check(__LINE__, &t, proto, items, n, k == n && j == 4 ? 0 : topk_mode,
                                           k, requests % 3 ? "seg" : NULL, requests % 4 ? idbuf : NULL,
                                           id_len, NULL);
            CHECK(rc == MKS_OK, "n %zu k %zu: rc %d", n, k, rc);
            requests++;
        }
    }
    CHECK(requests >= 50, "%ld requests", requests);
    mks_scorer_free(t.sc);
    mks_index_free(ix);
    betadist_rng_free(rng);
    betadist_rng_free(twin);
    free(alpha);
    free(beta);
    free(keys);
    free(ends);
    free(items);
    free(uends);
    sb_free(&all);
    sb_free(&unk);
}

/* ----------------------------------------------------------------------------- numbers -- */

static long format_ties;

/* One double through mks_format_double into an exact 32-byte buffer. */
static void check_format(double x) {
    char *buf = xmalloc(32);
    memset(buf, '#', 32);
    const size_t n = mks_format_double(x, buf);
    char s[40];
    CHECK(n >= 1 && n <= 31, "%a: length %zu", x, n);
    if (n < 1 || n > 31) {
        free(buf);
        return;
    }
    memcpy(s, buf, n);
    s[n] = 0;
    free(buf);
    if (isnan(x) || isinf(x)) {
        CHECK(strcmp(s, "null") == 0, "%a -> %s, want null", x, s);
        return;
    }
    CHECK(json_number_ok(s, n), "%.17g -> [%s] is not a JSON number", x, s);
    char *e;
    const double back = strtod(s, &e);
    CHECK(e == s + n && back == x, "%.17g -> [%s] reads back as %.17g", x, s, back);
    if (x >= 0x1p-19 && x < 1.0) {
        /* "0.", zeros, at most 17 significant digits, no trailing zero; and the digits are
         * those of %.16e (17 significant, correctly rounded), ties aside */
        size_t zeros = 0, digits = 0;
        const char *p = s + 2;
        while (*p == '0') {
            zeros++;
            p++;
        }
        digits = strlen(p);
        CHECK(s[0] == '0' && s[1] == '.' && digits >= 1 && digits <= 17 && s[n - 1] != '0',
              "%.17g -> [%s]", x, s);
        char ref[40];
        snprintf(ref, sizeof ref, "%.16e", x); /* d.dddddddddddddddde-XX */
        char rd[18];
        rd[0] = ref[0];
        memcpy(rd + 1, ref + 2, 16);
        rd[17] = 0;
        size_t rl = 17;
        while (rl > 1 && rd[rl - 1] == '0') rd[--rl] = 0;
        const int rexp = atoi(strchr(ref, 'e') + 1);
        if (!(rexp == -(int)zeros - 1 && strcmp(rd, p) == 0)) {
            /* only an exact tie may round the other way: digits 18.. of the exact value are
             * 5 then zeros (%.70e is exact for these doubles) */
            char ex[100];
            snprintf(ex, sizeof ex, "%.70e", x);
            const char *tail = ex + 2 + 16; /* after 17 significant digits */
            int tie = *tail == '5';
            for (const char *q = tail + 1; tie && *q != 'e'; q++) tie = *q == '0';
            CHECK(tie, "%.17g -> [%s], %%.16e gives %s", x, s, ref);
            /* printf rounds exact ties to even; mks_format_double rounds them up */
            char mine[18];
            memset(mine, '0', 17);
            mine[17] = 0;
            memcpy(mine, p, digits);
            char theirs[18];
            memcpy(theirs, ref, 1);
            memcpy(theirs + 1, ref + 2, 16);
            theirs[17] = 0;
            CHECK(rexp != -(int)zeros - 1 || strcmp(mine, theirs) > 0, "%.17g -> [%s]: tie rounded down", x, s);
            format_ties += tie;
        }
    }
}

static void test_format(void) {
    char buf[32];
    static const struct {
        double x;
        const char *s;
    } exact[] = {
        {0.0, "0.0"},
        {-0.0, "0.0"},
        {1.0, "1.0"},
        {0.5, "0.5"},
        {0.25, "0.25"},
        {0.1, "0.10000000000000001"},
        {0x1p-19, "0.0000019073486328125"},
        {0x1.fffffffffffffp-1, "0.99999999999999989"},
        {2.0, "2.0"},
        {1.5, "1.5"},
        {1e16, "10000000000000000.0"},
        {1e17, "1e+17"},
        {4.9406564584124654e-324, "4.9406564584124654e-324"},
        {1e-7, "9.9999999999999995e-08"},
    };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        const size_t n = mks_format_double(exact[i].x, buf);
        CHECK(n == strlen(exact[i].s) && memcmp(buf, exact[i].s, n) == 0, "%a -> %.*s, want %s",
              exact[i].x, (int)n, buf, exact[i].s);
    }
    CHECK(mks_format_double(NAN, buf) == 4 && memcmp(buf, "null", 4) == 0, "NaN");
    CHECK(mks_format_double(INFINITY, buf) == 4 && memcmp(buf, "null", 4) == 0, "inf");
    CHECK(mks_format_double(-INFINITY, buf) == 4 && memcmp(buf, "null", 4) == 0, "-inf");
    check_format(NAN);
    check_format(INFINITY);

    /* around the decimal boundaries of the fast path and its edges */
    const double pows[] = {1.0, 0.1, 0.01, 0.001, 1e-4, 1e-5, 1e-6, 1e-7, 0x1p-19, 0x1p-18, 0.5,
                           0.2, 0.3, 0.7, 0.9, 0.99, 0.999999, 0.000099999, 0.0000099999};
    for (size_t i = 0; i < sizeof pows / sizeof pows[0]; i++) {
        double up = pows[i], down = pows[i];
        check_format(pows[i]);
        for (int step = 0; step < 64; step++) {
            up = nextafter(up, 2.0);
            down = nextafter(down, 0.0);
            check_format(up);
            check_format(down);
        }
        /* values that round up to the next power of ten at 17 digits */
        check_format(pows[i] * (1 - 1e-17));
        check_format(pows[i] * (1 - 3e-17));
    }
    /* decimal ties: x = j * 2^-t with exactly 18 significant digits */
    for (uint64_t j = 26215; j < 26215 + 400; j++) check_format((double)j * 0x1p-18);
    for (uint64_t j = 1; j < 2000; j += 2) check_format((double)(j * 0x10001) * 0x1p-40);
    /* tiny, subnormal, large */
    const double others[] = {1e-300, DBL_MIN, DBL_MIN / 3, 4.9406564584124654e-324, 1e-310,
                             1e-20, 1.7e-6, 3.14159, 123.456, 1e15, 1e22, 1e23, 9007199254740993.0,
                             DBL_MAX, 1.0 + DBL_EPSILON, 100.0};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) check_format(others[i]);

    /* random doubles: uniform over the exponents of [2^-19, 1), then uniform on [0, 1) */
    const long draws = 1000000;
    for (long i = 0; i < draws; i++) {
        const uint64_t r = rnd();
        const uint64_t e = 1004 + (r >> 52) % 19; /* 2^-19 .. 2^-1 */
        const uint64_t bits = (e << 52) | (r & ((1ULL << 52) - 1));
        double x;
        memcpy(&x, &bits, sizeof x);
        check_format(x);
        if (i % 10 == 0) check_format(rnd_unit());
        if (i % 100 == 0) {
            const uint64_t any = rnd() & 0x7fffffffffffffffULL; /* every finite/non-finite */
            memcpy(&x, &any, sizeof x);
            check_format(x);
        }
    }
}

/* ---------------------------------------------------------------------------- ranking -- */

static int cmp_u128(const void *pa, const void *pb) {
    const u128 a = *(const u128 *)pa, b = *(const u128 *)pb;
    return (a > b) - (a < b);
}

static void test_sort_and_top(void) {
    static const size_t ns[] = {1, 2, 15, 16, 17, 31, 32, 33, 100, 1000, 4096, 5003};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        const size_t n = ns[t];
        const size_t ks[] = {1, n / 4 - 1, n / 4, n / 4 + 1, n - 1, n};
        for (int mode = 0; mode < 3; mode++) {
            for (size_t j = 0; j < sizeof ks / sizeof ks[0]; j++) {
                const size_t k = ks[j];
                if (k < 1 || k > n) continue;
                u128 *keys = xmalloc(n * sizeof *keys), *tmp = xmalloc(n * sizeof *tmp);
                u128 *ref = xmalloc(n * sizeof *ref);
                for (size_t i = 0; i < n; i++) {
                    double s;
                    switch (mode) {
                    case 0: /* random 128-bit keys */
                        keys[i] = ((u128)rnd() << 64) | rnd();
                        break;
                    case 1: /* rank keys of a few distinct scores: many ties */
                        s = (double)rnd_below(4) / 4.0;
                        keys[i] = rank_key(s, (uint32_t)i);
                        break;
                    default: /* descending input, the worst case for insertion */
                        keys[i] = (u128)(n - i) << 70;
                        break;
                    }
                    ref[i] = keys[i];
                }
                qsort(ref, n, sizeof *ref, cmp_u128);
                top_keys(keys, tmp, n, k);
                size_t bad = 0;
                for (size_t i = 0; i < k; i++) bad += keys[i] != ref[i];
                CHECK(bad == 0, "top_keys n %zu k %zu mode %d: %zu wrong", n, k, mode, bad);
                if (k == n) {
                    /* and sort_keys itself, on a fresh shuffle */
                    for (size_t i = n; i-- > 1;) {
                        const size_t r = rnd_below(i + 1);
                        const u128 x = keys[i];
                        keys[i] = keys[r];
                        keys[r] = x;
                    }
                    sort_keys(keys, tmp, n);
                    bad = 0;
                    for (size_t i = 0; i < n; i++) bad += keys[i] != ref[i];
                    CHECK(bad == 0, "sort_keys n %zu mode %d: %zu wrong", n, mode, bad);
                }
                free(keys);
                free(tmp);
                free(ref);
            }
        }
    }
    /* rank_key: higher score first, then earlier position */
    const double s[] = {0.0, 4.9406564584124654e-324, 1e-300, 0x1p-19, 0.5, 0.5, 0x1.fffffffffffffp-1, 1.0};
    for (size_t i = 0; i < 8; i++) {
        for (size_t j = 0; j < 8; j++) {
            const int want = s[i] > s[j] || (s[i] == s[j] && i < j);
            CHECK((rank_key(s[i], (uint32_t)i) < rank_key(s[j], (uint32_t)j)) == want,
                  "rank_key(%g, %zu) vs (%g, %zu)", s[i], i, s[j], j);
        }
    }
}

/* ------------------------------------------------------------------------------- misc -- */

static void test_misc(void) {
    CHECK(mks_scorer_create(0) == NULL, "max_items 0");
    CHECK(mks_scorer_create((size_t)UINT32_MAX - 4) == NULL, "max_items near 2^32");
    CHECK(mks_scorer_create(SIZE_MAX) == NULL, "max_items SIZE_MAX");
    mks_scorer_free(NULL);
    mks_index_free(NULL);
    betadist_rng_free(NULL);
    CHECK(mks_index_size(NULL) == 0, "size of NULL");
    CHECK(mks_index_find(NULL, "a", 1) == -1, "find in NULL");
    uint32_t o = 5, l = 6;
    mks_missing(NULL, 0, &o, &l);
    CHECK(o == 5 && l == 6, "mks_missing(NULL) must not write");
    mks_scorer *sc = mks_scorer_create(1);
    CHECK(sc != NULL, "max_items 1");
    mks_missing(sc, 0, NULL, &l);
    mks_missing(sc, 0, &o, NULL);
    mks_missing(sc, 0, &o, &l);
    CHECK(o == 0 && l == 0, "mks_missing on a fresh scorer: %u+%u", o, l);
    mks_scorer_free(sc);

    /* Empty spans passed as NULL: no library call may see the NULL (UBSan checks). */
    const uint64_t ends[2] = {0, 2};
    mks_index *ix = mks_index_create("ab", ends, 2, 1); /* ids "" and "ab" */
    CHECK(ix != NULL && mks_index_find(ix, NULL, 0) == 0, "the empty id, found as NULL + 0");
    mks_scorer *sc2 = mks_scorer_create(4);
    betadist_rng *rng = betadist_rng_create(3);
    mks_request req;
    static const char body[] = "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\","
                               "\"shape\":[1],\"data\":[\"ab\"]}]}";
    const double ab[3] = {1.0, 2.0, 1.0};
    const char *out = NULL;
    size_t out_len = 0, bad = 0;
    CHECK(mks_parse(sc2, MKS_V2, NULL, 0, &req) == MKS_FALLBACK, "NULL body of length 0");
    CHECK(mks_parse(sc2, MKS_V2, body, sizeof body - 1, &req) == MKS_OK, "plain body");
    CHECK(mks_score(sc2, rng, ix, ab, ab, 3, body, MKS_V2, &req, NULL, 0, &out, &out_len, &bad) ==
              MKS_OK,
          "v2 without a head");
    CHECK(out_len > 12 && memcmp(out, "\"outputs\":[{", 12) == 0, "the answer starts at outputs");
    betadist_rng_free(rng);
    mks_scorer_free(sc2);
    mks_index_free(ix);
}

/* ---------------------------------------------------------------------- binary tensors -- */

/* A binary request: JSON part (head) + the raw items (+ a 4-byte top_k when top_k >= 0). */
static char *binary_request(const char *const *ids, size_t n, long top_k, const char *params,
                            size_t *len, size_t *json_len) {
    sbuf raw = {0};
    for (size_t i = 0; i < n; i++) {
        uint32_t l = (uint32_t)strlen(ids[i]);
        char le[4] = {(char)l, (char)(l >> 8), (char)(l >> 16), (char)(l >> 24)};
        sb_add(&raw, le, 4);
        sb_puts(&raw, ids[i]);
    }
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[%zu],"
                      "\"parameters\":{\"binary_data_size\":%zu}}%s],\"id\":\"b7\"%s%s}",
                      n, raw.len,
                      top_k >= 0 ? ",{\"name\":\"top_k\",\"datatype\":\"INT32\",\"shape\":[1],"
                                   "\"parameters\":{\"binary_data_size\":4}}"
                                 : "",
                      params ? ",\"parameters\":" : "", params ? params : "");
    sbuf all = {0};
    sb_add(&all, head, (size_t)hl);
    sb_add(&all, raw.p, raw.len);
    if (top_k >= 0) {
        uint32_t k = (uint32_t)top_k;
        char le[4] = {(char)k, (char)(k >> 8), (char)(k >> 16), (char)(k >> 24)};
        sb_add(&all, le, 4);
    }
    *len = all.len;
    *json_len = (size_t)hl;
    char *body = exact_copy(all.p, all.len);
    free(raw.p);
    free(all.p);
    return body;
}

static void test_binary(void) {
    const char *names[] = {"apple", "banana", "cherry"};
    sbuf all = {0};
    uint64_t ends[3];
    for (size_t i = 0; i < 3; i++) {
        sb_puts(&all, names[i]);
        ends[i] = all.len;
    }
    char *keys = exact_copy(all.p, all.len);
    mks_index *ix = mks_index_create(keys, ends, 3, 11);
    const double alpha[4] = {1e6, 1.0, 1e3, 1e300}, beta[4] = {1.0, 1e6, 1e3, 1e300};
    betadist_rng *rng = betadist_rng_create(5), *twin = betadist_rng_create(5);
    mks_scorer *sc = mks_scorer_create(16);
    const char *ids[] = {"banana", "zzz", "apple", "cherry"};
    const char head[] = "{\"model_name\":\"m\",\"model_version\":\"1\",";
    size_t len, jl;
    mks_request r;
    const char *out;
    size_t out_len;

    /* accepted, binary answer: JSON part with sizes, then 4 doubles, then the top 2 ids */
    char *b = binary_request(ids, 4, 2, "{\"binary_data_output\":true}", &len, &jl);
    CHECK(mks_parse_binary(sc, b, len, jl, &r) == MKS_OK, "binary parse");
    CHECK(r.n_items == 4 && r.top_k == 2 && r.binary_output == 1, "n %u k %u", r.n_items, r.top_k);
    CHECK(mks_score(sc, rng, ix, alpha, beta, 4, b, MKS_V2_BINARY, &r, head, sizeof head - 1, &out,
                    &out_len, NULL) == MKS_OK,
          "binary score");
    const char json[] = "{\"model_name\":\"m\",\"model_version\":\"1\",\"outputs\":[{\"name\":"
                        "\"scores\",\"datatype\":\"FP64\",\"shape\":[4],\"parameters\":"
                        "{\"binary_data_size\":32}},{\"name\":\"ranking\",\"datatype\":\"BYTES\","
                        "\"shape\":[2],\"parameters\":{\"binary_data_size\":";
    CHECK(r.json_len > sizeof json && memcmp(out, json, sizeof json - 1) == 0, "head %.*s",
          (int)r.json_len, out);
    double want[4];
    const double a4[4] = {alpha[1], alpha[3], alpha[0], alpha[2]};
    const double b4[4] = {beta[1], beta[3], beta[0], beta[2]};
    betadist_sample_batch(twin, a4, b4, want, 4, NULL);
    double got[4];
    memcpy(got, out + r.json_len, sizeof got); /* x86-64 and aarch64 are little-endian */
    CHECK(memcmp(got, want, sizeof got) == 0, "scores equal the twin's");
    /* apple (~1) first; then cherry (~0.5) or zzz (prior, exactly 0.5) */
    const char *rk = out + r.json_len + 32;
    CHECK(out_len == r.json_len + 32 + (4 + 5) + 4 + (want[3] > 0.5 ? 6 : 3), "length %zu", out_len);
    CHECK(load4((const unsigned char *)rk) == 5 && memcmp(rk + 4, "apple", 5) == 0, "first");
    CHECK(memcmp(out + r.json_len - 10, "\"id\":\"b7\"}", 10) == 0, "id ends the JSON part");
    free(b);

    /* binary_data_output false (or absent): the JSON answer */
    b = binary_request(ids, 4, 2, "{\"binary_data_output\":false}", &len, &jl);
    CHECK(mks_parse_binary(sc, b, len, jl, &r) == MKS_OK && r.binary_output == 0, "json answer");
    CHECK(mks_score(sc, rng, ix, alpha, beta, 4, b, MKS_V2_BINARY, &r, head, sizeof head - 1, &out,
                    &out_len, NULL) == MKS_OK &&
              out_len > 20 && memcmp(out + out_len - 2, "\"}", 2) == 0 && r.json_len == 0,
          "json answer text %.*s", (int)out_len, out);
    betadist_sample_batch(twin, a4, b4, want, 4, NULL);
    free(b);
    b = binary_request(ids, 4, -1, NULL, &len, &jl);
    CHECK(mks_parse_binary(sc, b, len, jl, &r) == MKS_OK && r.top_k == 4 && !r.binary_output,
          "no top_k, no parameters");
    free(b);

    /* the fallbacks: each is a request the Python decoder must see */
    const char *quote[] = {"a\"b"}, *slash[] = {"a\\b"}, *high[] = {"caf\xc3\xa9"}, *ctl[] = {"a\tb"};
    const char *const *odd[] = {quote, slash, high, ctl};
    for (int i = 0; i < 4; i++) {
        b = binary_request(odd[i], 1, -1, NULL, &len, &jl);
        CHECK(mks_parse_binary(sc, b, len, jl, &r) == MKS_FALLBACK, "odd id %d", i);
        free(b);
    }
    b = binary_request(ids, 4, 0, NULL, &len, &jl);
    CHECK(mks_parse_binary(sc, b, len, jl, &r) == MKS_FALLBACK, "top_k 0");
    free(b);
    b = binary_request(ids, 4, 0x80000000L, NULL, &len, &jl);
    CHECK(mks_parse_binary(sc, b, len, jl, &r) == MKS_FALLBACK, "negative INT32 top_k");
    free(b);
    b = binary_request(ids, 4, 2, "{\"binary_data_output\":1}", &len, &jl);
    CHECK(mks_parse_binary(sc, b, len, jl, &r) == MKS_FALLBACK, "binary_data_output not a boolean");
    free(b);
    b = binary_request(ids, 4, 2, NULL, &len, &jl);
    for (size_t cut = 1; cut <= len - jl; cut++) {
        char *shorter = exact_copy(b, len - cut);
        CHECK(mks_parse_binary(sc, shorter, len - cut, jl, &r) == MKS_FALLBACK, "cut %zu", cut);
        free(shorter);
    }
    char *longer = xmalloc(len + 1);
    memcpy(longer, b, len);
    longer[len] = 0;
    CHECK(mks_parse_binary(sc, longer, len + 1, jl, &r) == MKS_FALLBACK, "a byte no input claims");
    CHECK(mks_parse_binary(sc, b, len, jl - 1, &r) == MKS_FALLBACK, "JSON part cut short");
    CHECK(mks_parse_binary(sc, b, len, jl + 1, &r) == MKS_FALLBACK, "JSON part too long");
    CHECK(mks_parse_binary(sc, b, len, len + 1, &r) == MKS_EARG, "json_len > len");
    CHECK(mks_parse_binary(sc, b, len, 0, &r) == MKS_FALLBACK, "json_len 0");
    CHECK(mks_parse(sc, MKS_V2, b, len, &r) == MKS_FALLBACK, "binary body as plain JSON");
    free(longer);
    free(b);
    /* binary_data_size in a plain (non-binary) request: not the plain shape */
    const char plain[] = "{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[1],"
                         "\"parameters\":{\"binary_data_size\":5}}]}";
    b = exact_copy(plain, sizeof plain - 1);
    CHECK(mks_parse(sc, MKS_V2, b, sizeof plain - 1, &r) == MKS_FALLBACK, "parameters in JSON mode");
    free(b);
    CHECK(betadist_rng_next_u64(rng) == betadist_rng_next_u64(twin), "draws in step");

    mks_scorer_free(sc);
    betadist_rng_free(rng);
    betadist_rng_free(twin);
    mks_index_free(ix);
    free(keys);
    free(all.p);
}

int main(void) {
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"hash_and_compare", test_hash_and_compare},
        {"index_small", test_index_small},
        {"index_large", test_index_large},
        {"special_bytes", test_special_bytes},
        {"str_direct", test_str_direct},
        {"str_in_bodies", test_str_in_bodies},
        {"parse_accept", test_parse_accept},
        {"parse_reject", test_parse_reject},
        {"score_small", test_score_small},
        {"score_large", test_score_large},
        {"format", test_format},
        {"sort_and_top", test_sort_and_top},
        {"misc", test_misc},
        {"binary", test_binary},
    };
    const size_t n_tests = sizeof tests / sizeof tests[0];
    for (size_t i = 0; i < n_tests; i++) {
        const int before = failures;
        tests[i].fn();
        if (failures != before) fprintf(stderr, "test_%s: %d failure(s)\n", tests[i].name, failures - before);
    }
    if (format_ties) printf("mks_format_double: %ld exact decimal ties rounded up (printf: to even)\n", format_ties);
    if (failures) {
        fprintf(stderr, "%d of %ld check(s) failed\n", failures, n_checks);
        return 1;
    }
    printf("all mks C tests passed (%zu tests, %ld checks)\n", n_tests, n_checks);
    return 0;
}
