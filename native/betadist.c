/*
 * libbetadist: exact Beta sampling.  See betadist.h for the algorithms and their sources.
 *
 * Layout of one generator state (betadist_rng): a scalar xoshiro256++ state `s` and four
 * lane states for the AVX2 path.  The state owns a block of 2^192 draws of the xoshiro256++
 * sequence: `s` starts at offset 0 and lane j at offset (j + 1) * 2^128, so the five streams
 * never overlap (each may draw up to 2^128 numbers).  The lanes are derived lazily, on the
 * first AVX2 batch, because deriving them costs four jumps (~1000 generator steps).
 */
#include "betadist.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define BETADIST_HAVE_AVX2 1
#include <immintrin.h>
#else
#define BETADIST_HAVE_AVX2 0
#endif

#define LANES 4

struct betadist_rng {
    uint64_t s[4];
    uint64_t lane[4][LANES]; /* lane[word][lane]: word k of all lanes is contiguous */
    int lanes_ready;
};

/* ---------------------------------------------------------------- generator ---- */

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t splitmix64_next(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t xoshiro_next(uint64_t s[4]) {
    const uint64_t result = rotl64(s[0] + s[3], 23) + s[0];
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* The top 52 bits as an integer-valued double in [0, 2^52). */
static inline double top52(uint64_t x) { return (double)(x >> 12); }

/* Uniform on the open interval (0, 1): (k + 1/2) * 2^-52 for the top 52 bits k.  The same
 * mapping is used by the AVX2 path, so a lane's draw can be finished by the scalar code. */
static inline double open01(uint64_t x) { return (top52(x) + 0.5) * 0x1.0p-52; }

static void seed_state(uint64_t s[4], uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) s[i] = splitmix64_next(&x);
    /* SplitMix64 outputs are a bijection of its counter, so four consecutive outputs are
     * never all zero: the all-zero state, which xoshiro must avoid, is unreachable. */
}

static void apply_jump(uint64_t s[4], const uint64_t poly[4]) {
    uint64_t acc[4] = {0, 0, 0, 0};
    for (int i = 0; i < 4; i++) {
        for (int b = 0; b < 64; b++) {
            if (poly[i] & (UINT64_C(1) << b)) {
                acc[0] ^= s[0];
                acc[1] ^= s[1];
                acc[2] ^= s[2];
                acc[3] ^= s[3];
            }
            (void)xoshiro_next(s);
        }
    }
    memcpy(s, acc, sizeof acc);
}

/* Jump polynomials of xoshiro256 (Blackman & Vigna): 2^128 and 2^192 steps ahead. */
static const uint64_t JUMP_128[4] = {0x180ec6d33cfd0abaULL, 0xd5a61266f0c9392cULL,
                                     0xa9582618e03fc9aaULL, 0x39abdc4529b1661cULL};
static const uint64_t JUMP_192[4] = {0x76e15d3efefdcbbfULL, 0xc5004e441c522fb3ULL,
                                     0x77710069854ee241ULL, 0x39109bb02acbe635ULL};

static void lanes_init(betadist_rng *rng) {
    uint64_t t[4];
    memcpy(t, rng->s, sizeof t);
    for (int j = 0; j < LANES; j++) {
        apply_jump(t, JUMP_128);
        for (int k = 0; k < 4; k++) rng->lane[k][j] = t[k];
    }
    rng->lanes_ready = 1;
}

betadist_rng *betadist_rng_create(uint64_t seed) {
    betadist_rng *rng = malloc(sizeof *rng);
    if (rng) betadist_rng_seed(rng, seed);
    return rng;
}

void betadist_rng_seed(betadist_rng *rng, uint64_t seed) {
    memset(rng, 0, sizeof *rng);
    seed_state(rng->s, seed);
}

void betadist_rng_free(betadist_rng *rng) { free(rng); }

void betadist_rng_jump(betadist_rng *rng) {
    apply_jump(rng->s, JUMP_192);
    rng->lanes_ready = 0;
}

betadist_rng *betadist_rng_split(betadist_rng *parent) {
    betadist_rng *child = malloc(sizeof *child);
    if (!child) return NULL;
    memcpy(child, parent, sizeof *child);
    betadist_rng_jump(parent);
    return child;
}

void betadist_rng_reseed_mix(betadist_rng *rng, uint64_t salt) {
    uint64_t h = salt;
    for (int i = 0; i < 4; i++) {
        h ^= rng->s[i];
        h = splitmix64_next(&h);
    }
    betadist_rng_seed(rng, h);
}

uint64_t betadist_rng_next_u64(betadist_rng *rng) { return xoshiro_next(rng->s); }

double betadist_rng_uniform(betadist_rng *rng) { return open01(xoshiro_next(rng->s)); }

/* ---------------------------------------------------------------- ziggurat ---- */
/*
 * 256 layers of equal area V under f(x) = exp(-x^2/2), x >= 0.  Layer 0 is the base strip
 * [0, R] x [0, f(R)] plus the tail beyond R; layer i >= 1 is the rectangle
 * [0, x[i-1]] x [f(x[i-1]), f(x[i])] with x[0] = R > x[1] > ... > x[255] = 0.
 *
 * One 64-bit draw r gives the layer (bits 0-7), the sign (bit 8) and m = r >> 12 (52 bits);
 * x = m * zig_w[layer] where zig_w is the layer width scaled by 2^-52.
 *   m < zig_k[layer] -> x is under the curve for sure (the fast path, ~99% of draws);
 *   layer 0          -> x is beyond R: sample the tail exactly (Marsaglia 1964);
 *   otherwise        -> accept when a uniform height inside the layer falls below f(x).
 */
#define ZIG_LAYERS 256
#define ZIG_R 3.6541528853610088
static double zig_w[ZIG_LAYERS];  /* layer width * 2^-52 (layer 0: V / f(R) * 2^-52) */
static double zig_k[ZIG_LAYERS];  /* fast-accept threshold on m */
static double zig_f0[ZIG_LAYERS]; /* f at the layer's bottom edge */
static double zig_f1[ZIG_LAYERS]; /* f at the layer's top edge */
static int have_avx2;             /* CPU check, done once at load */
static int backend_selected = BETADIST_BACKEND_SCALAR; /* accessed with __atomic builtins */

static double zig_f(double x) { return exp(-0.5 * x * x); }

__attribute__((constructor)) static void betadist_init(void) {
    const double r = ZIG_R;
    const double v = r * zig_f(r) + 1.2533141373155002512 /* sqrt(pi/2) */ * erfc(r / sqrt(2.0));
    double x[ZIG_LAYERS];
    x[0] = r;
    for (int i = 1; i < ZIG_LAYERS - 1; i++) {
        x[i] = sqrt(-2.0 * log(zig_f(x[i - 1]) + v / x[i - 1]));
    }
    x[ZIG_LAYERS - 1] = 0.0;
    const double width0 = v / zig_f(r);
    zig_w[0] = width0 * 0x1.0p-52;
    zig_k[0] = floor(r / width0 * 0x1.0p52);
    zig_f0[0] = 0.0;
    zig_f1[0] = zig_f(r);
    for (int i = 1; i < ZIG_LAYERS; i++) {
        zig_w[i] = x[i - 1] * 0x1.0p-52;
        zig_k[i] = floor(x[i] / x[i - 1] * 0x1.0p52);
        zig_f0[i] = zig_f(x[i - 1]);
        zig_f1[i] = (i == ZIG_LAYERS - 1) ? 1.0 : zig_f(x[i]);
    }
#if BETADIST_HAVE_AVX2
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    __atomic_store_n(&backend_selected, have_avx2 ? BETADIST_BACKEND_AVX2 : BETADIST_BACKEND_SCALAR,
                     __ATOMIC_RELAXED);
}

static double normal_tail(uint64_t s[4]) {
    for (;;) {
        const double a = -log(open01(xoshiro_next(s))) / ZIG_R;
        const double b = -log(open01(xoshiro_next(s)));
        if (b + b > a * a) return ZIG_R + a;
    }
}

/* One normal whose first 64-bit draw is `r` (already taken, possibly by an AVX2 lane);
 * anything more it needs comes from `s`. */
static double normal_from(uint64_t s[4], uint64_t r) {
    for (;;) {
        const int layer = (int)(r & 0xff);
        const double m = top52(r);
        double x = m * zig_w[layer];
        if (__builtin_expect(m >= zig_k[layer], 0)) {
            if (layer == 0) {
                x = normal_tail(s);
            } else {
                const double f0 = zig_f0[layer];
                const double y = f0 + open01(xoshiro_next(s)) * (zig_f1[layer] - f0);
                if (!(y < zig_f(x))) {
                    r = xoshiro_next(s);
                    continue;
                }
            }
        }
        return (r & 0x100) ? -x : x;
    }
}

static inline double normal_draw(uint64_t s[4]) { return normal_from(s, xoshiro_next(s)); }

double betadist_rng_normal(betadist_rng *rng) { return normal_draw(rng->s); }

/* ---------------------------------------------------------------- gamma ---- */

/*
 * Squeezes for the Marsaglia-Tsang test log(u) < h, h = x^2/2 + d (1 - v + log v), both
 * implying it (so acceptance stays exact):
 *  - Marsaglia & Tsang's u < 1 - 0.0331 x^4, tuned for small d;
 *  - u < 1 - c^2 x^4 / 6 when |c x| <= 1/2.  With t = c x and 9 d c^2 = 1,
 *    h / d = 1 - (1 + t)^3 + 3 log(1 + t) + 9 t^2 / 2 = 3 sum_{k>=4} (-1)^(k+1) t^k / k,
 *    so |h| <= (3/4) d t^4 / (1 - |t|) <= (3/2) d t^4 = c^2 x^4 / 6 for |t| <= 1/2, and
 *    u < 1 + h <= e^h.  For large shapes h is tiny and this squeeze catches nearly every
 *    accepted draw, where the first one misses about one in ten.
 */
static inline double squeeze_bound(double c, double x) {
    const double x2 = x * x;
    const double mt = 1.0 - 0.0331 * x2 * x2;
    const double t = c * x;
    if (t < -0.5 || t > 0.5) return mt;
    const double ours = 1.0 - c * c * (1.0 / 6.0) * x2 * x2;
    return ours > mt ? ours : mt;
}

/* The acceptance test of Marsaglia-Tsang for normal x and uniform u; *g gets d v^3. */
static inline int mt_accept(double d, double c, double x, double u, double *g) {
    double v = 1.0 + c * x;
    if (v <= 0.0) return 0;
    v = v * v * v;
    *g = d * v;
    if (u < squeeze_bound(c, x)) return 1;
    return log(u) < 0.5 * x * x + d * (1.0 - v + log(v));
}

/* Marsaglia-Tsang for shape >= 1 with d = shape - 1/3, c = 1 / sqrt(9 d). */
static double gamma_mt(uint64_t s[4], double d, double c) {
    double g;
    for (;;) {
        const double x = normal_draw(s);
        if (mt_accept(d, c, x, open01(xoshiro_next(s)), &g)) return g;
    }
}

static inline double gamma_ge1(uint64_t s[4], double shape) {
    const double d = shape - 1.0 / 3.0;
    return gamma_mt(s, d, 1.0 / sqrt(9.0 * d));
}

/* log Gamma(shape) draw for any shape > 0 (the boost, in log space, below 1). */
static double log_gamma_draw(uint64_t s[4], double shape) {
    if (shape >= 1.0) return log(gamma_ge1(s, shape));
    const double g = gamma_ge1(s, shape + 1.0);
    return log(g) + log(open01(xoshiro_next(s))) / shape;
}

static inline int bad_param(double p) { return !(p > 0.0) || isinf(p); }

double betadist_rng_gamma(betadist_rng *rng, double shape) {
    if (bad_param(shape)) return NAN;
    if (shape >= 1.0) return gamma_ge1(rng->s, shape);
    return exp(log_gamma_draw(rng->s, shape));
}

/* ---------------------------------------------------------------- beta ---- */

/* X / (X + Y) from l = log X - log Y: the logistic function, without overflow. */
static inline double logistic(double l) {
    if (l >= 0.0) return 1.0 / (1.0 + exp(-l));
    const double e = exp(l);
    return e / (1.0 + e);
}

/*
 * Johnk's algorithm in log space, for a < 1 and b < 1.  log X = log(U) / a overflows to
 * -inf for subnormal a, so everything is scaled by m = min(a, b): sx = m log X and
 * sy = m log Y are finite, the acceptance test log(X + Y) <= 0 becomes
 * max(sx, sy) + m log(1 + exp(-|log X - log Y|)) <= 0, and the result depends only on
 * log X - log Y = (sx - sy) / m, which may be +-inf (giving exactly 1 or 0).
 */
static double beta_johnk(uint64_t s[4], double a, double b) {
    const double m = a < b ? a : b;
    const double ra = m / a, rb = m / b;
    for (;;) {
        const double sx = log(open01(xoshiro_next(s))) * ra;
        const double sy = log(open01(xoshiro_next(s))) * rb;
        const double diff = (sx - sy) / m;
        const double top = sx > sy ? sx : sy;
        if (top + m * log1p(exp(-fabs(diff))) <= 0.0) return logistic(diff);
    }
}

/* Ga / (Ga + Gb) for Gamma draws of shapes >= 1: halving first (exact: Gamma draws of such
 * shapes are far above the subnormal range) keeps the sum finite up to DBL_MAX shapes. */
static inline double gamma_ratio(double ga, double gb) {
    const double ha = 0.5 * ga;
    return ha / (ha + 0.5 * gb);
}

static double beta_scalar(uint64_t s[4], double a, double b) {
    if (a >= 1.0 && b >= 1.0) {
        const double ga = gamma_ge1(s, a);
        const double gb = gamma_ge1(s, b);
        return gamma_ratio(ga, gb);
    }
    if (a < 1.0 && b < 1.0) return beta_johnk(s, a, b);
    /* la or lb may be -inf (shape so small that U^(1/shape) underflows even in log);
     * the other one is finite, so la - lb is +-inf or finite, never NaN. */
    const double la = log_gamma_draw(s, a);
    const double lb = log_gamma_draw(s, b);
    return logistic(la - lb);
}

static void batch_scalar(uint64_t s[4], const double *alpha, const double *beta, double *out,
                         size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = beta_scalar(s, alpha[i], beta[i]);
}

/* ---------------------------------------------------------------- AVX2 ---- */
#if BETADIST_HAVE_AVX2
#define AVX2 __attribute__((target("avx2,fma")))

typedef struct {
    __m256i s0, s1, s2, s3;
} lanes4;

AVX2 static inline __m256i rotl4(__m256i x, int k) {
    return _mm256_or_si256(_mm256_slli_epi64(x, k), _mm256_srli_epi64(x, 64 - k));
}

AVX2 static inline __m256i xoshiro4(lanes4 *l) {
    const __m256i result = _mm256_add_epi64(rotl4(_mm256_add_epi64(l->s0, l->s3), 23), l->s0);
    const __m256i t = _mm256_slli_epi64(l->s1, 17);
    l->s2 = _mm256_xor_si256(l->s2, l->s0);
    l->s3 = _mm256_xor_si256(l->s3, l->s1);
    l->s1 = _mm256_xor_si256(l->s1, l->s2);
    l->s0 = _mm256_xor_si256(l->s0, l->s3);
    l->s2 = _mm256_xor_si256(l->s2, t);
    l->s3 = rotl4(l->s3, 45);
    return result;
}

/* top52() for four lanes: 2^52 + m assembled in the bits, minus 2^52 (exact). */
AVX2 static inline __m256d top52x4(__m256i r) {
    const __m256i bits = _mm256_or_si256(_mm256_srli_epi64(r, 12),
                                         _mm256_set1_epi64x(0x4330000000000000LL));
    return _mm256_sub_pd(_mm256_castsi256_pd(bits), _mm256_set1_pd(0x1.0p52));
}

/*
 * Four Gamma(shape[j]) draws (every shape >= 1), one per lane.  Each lane makes one
 * Marsaglia-Tsang attempt with the ziggurat's fast path; a lane whose attempt needs anything
 * else (ziggurat edge or tail, v <= 0, the log test, a rejection) is finished by the scalar
 * code from the same normal draw and uniform, so every lane runs the exact algorithm.
 */
AVX2 static inline __m256d gamma4(lanes4 *l, uint64_t s[4], __m256d shape) {
    const __m256d d = _mm256_sub_pd(shape, _mm256_set1_pd(1.0 / 3.0));
    const __m256d c = _mm256_div_pd(_mm256_set1_pd(1.0),
                                    _mm256_sqrt_pd(_mm256_mul_pd(_mm256_set1_pd(9.0), d)));
    const __m256i rn = xoshiro4(l);
    const __m256i ru = xoshiro4(l);
    const __m256i layer = _mm256_and_si256(rn, _mm256_set1_epi64x(0xff));
    const __m256d m = top52x4(rn);
    const __m256d w = _mm256_i64gather_pd(zig_w, layer, 8);
    const __m256d k = _mm256_i64gather_pd(zig_k, layer, 8);
    const __m256i sign = _mm256_slli_epi64(_mm256_srli_epi64(rn, 8), 63);
    const __m256d x = _mm256_xor_pd(_mm256_mul_pd(m, w), _mm256_castsi256_pd(sign));
    const __m256d u = _mm256_mul_pd(_mm256_add_pd(top52x4(ru), _mm256_set1_pd(0.5)),
                                    _mm256_set1_pd(0x1.0p-52));
    const __m256d one = _mm256_set1_pd(1.0);
    const __m256d v1 = _mm256_fmadd_pd(c, x, one);
    const __m256d v = _mm256_mul_pd(_mm256_mul_pd(v1, v1), v1);
    const __m256d x2 = _mm256_mul_pd(x, x);
    const __m256d x4 = _mm256_mul_pd(x2, x2);
    /* squeeze_bound(), both squeezes: the second holds where |c x| <= 1/2 */
    const __m256d sq_mt = _mm256_fnmadd_pd(_mm256_set1_pd(0.0331), x4, one);
    const __m256d q = _mm256_mul_pd(_mm256_mul_pd(c, c), _mm256_set1_pd(1.0 / 6.0));
    const __m256d sq_ours = _mm256_max_pd(_mm256_fnmadd_pd(q, x4, one), sq_mt);
    const __m256d abs_t = _mm256_andnot_pd(_mm256_set1_pd(-0.0), _mm256_mul_pd(c, x));
    const __m256d squeeze =
        _mm256_blendv_pd(sq_mt, sq_ours, _mm256_cmp_pd(abs_t, _mm256_set1_pd(0.5), _CMP_LE_OQ));
    const __m256d ok = _mm256_and_pd(
        _mm256_and_pd(_mm256_cmp_pd(m, k, _CMP_LT_OQ), _mm256_cmp_pd(v1, _mm256_setzero_pd(), _CMP_GT_OQ)),
        _mm256_cmp_pd(u, squeeze, _CMP_LT_OQ));
    __m256d g = _mm256_mul_pd(d, v);
    const int mask = _mm256_movemask_pd(ok);
    if (__builtin_expect(mask != 0xf, 0)) {
        double gs[LANES], ds[LANES], cs[LANES], us[LANES];
        uint64_t rs[LANES];
        _mm256_storeu_pd(gs, g);
        _mm256_storeu_pd(ds, d);
        _mm256_storeu_pd(cs, c);
        _mm256_storeu_pd(us, u);
        _mm256_storeu_si256((__m256i *)rs, rn);
        for (int j = 0; j < LANES; j++) {
            if (mask & (1 << j)) continue;
            const double xj = normal_from(s, rs[j]);
            if (!mt_accept(ds[j], cs[j], xj, us[j], &gs[j])) gs[j] = gamma_mt(s, ds[j], cs[j]);
        }
        g = _mm256_loadu_pd(gs);
    }
    return g;
}

AVX2 static void batch_avx2(betadist_rng *rng, uint64_t s[4], const double *alpha,
                            const double *beta, double *out, size_t n) {
    if (!rng->lanes_ready) lanes_init(rng);
    lanes4 l = {
        _mm256_loadu_si256((const __m256i *)rng->lane[0]),
        _mm256_loadu_si256((const __m256i *)rng->lane[1]),
        _mm256_loadu_si256((const __m256i *)rng->lane[2]),
        _mm256_loadu_si256((const __m256i *)rng->lane[3]),
    };
    const __m256d one = _mm256_set1_pd(1.0);
    size_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        const __m256d a = _mm256_loadu_pd(alpha + i);
        const __m256d b = _mm256_loadu_pd(beta + i);
        const __m256d small = _mm256_or_pd(_mm256_cmp_pd(a, one, _CMP_LT_OQ),
                                           _mm256_cmp_pd(b, one, _CMP_LT_OQ));
        if (__builtin_expect(_mm256_movemask_pd(small) != 0, 0)) {
            batch_scalar(s, alpha + i, beta + i, out + i, LANES);
            continue;
        }
        const __m256d ga = gamma4(&l, s, a);
        const __m256d gb = gamma4(&l, s, b);
        const __m256d half = _mm256_set1_pd(0.5);
        const __m256d ha = _mm256_mul_pd(half, ga);
        _mm256_storeu_pd(out + i, _mm256_div_pd(ha, _mm256_fmadd_pd(half, gb, ha))); /* gamma_ratio */
    }
    batch_scalar(s, alpha + i, beta + i, out + i, n - i);
    _mm256_storeu_si256((__m256i *)rng->lane[0], l.s0);
    _mm256_storeu_si256((__m256i *)rng->lane[1], l.s1);
    _mm256_storeu_si256((__m256i *)rng->lane[2], l.s2);
    _mm256_storeu_si256((__m256i *)rng->lane[3], l.s3);
}
#endif

/* ---------------------------------------------------------------- public ---- */

int betadist_sample_batch(betadist_rng *rng, const double *alpha, const double *beta, double *out,
                          size_t n, size_t *bad_index) {
    if (n == 0) return BETADIST_OK;
    if (!rng || !alpha || !beta || !out) return BETADIST_ENULL;
    for (size_t i = 0; i < n; i++) {
        const int ea = bad_param(alpha[i]);
        if (ea || bad_param(beta[i])) {
            if (bad_index) *bad_index = i;
            return ea ? BETADIST_EALPHA : BETADIST_EBETA;
        }
    }
    uint64_t s[4];
    memcpy(s, rng->s, sizeof s);
#if BETADIST_HAVE_AVX2
    if (__atomic_load_n(&backend_selected, __ATOMIC_RELAXED) == BETADIST_BACKEND_AVX2) {
        batch_avx2(rng, s, alpha, beta, out, n);
    } else
#endif
    {
        batch_scalar(s, alpha, beta, out, n);
    }
    memcpy(rng->s, s, sizeof s);
    return BETADIST_OK;
}

const char *betadist_strerror(int code) {
    switch (code) {
    case BETADIST_OK:
        return "success";
    case BETADIST_EALPHA:
        return "alpha must be finite and > 0";
    case BETADIST_EBETA:
        return "beta must be finite and > 0";
    case BETADIST_ENULL:
        return "NULL pointer argument";
    default:
        return "unknown error code";
    }
}

int betadist_set_backend(int backend) {
    switch (backend) {
    case BETADIST_BACKEND_AUTO:
        backend = have_avx2 ? BETADIST_BACKEND_AVX2 : BETADIST_BACKEND_SCALAR;
        break;
    case BETADIST_BACKEND_SCALAR:
        break;
    case BETADIST_BACKEND_AVX2:
        if (!have_avx2) return -1;
        break;
    default:
        return -1;
    }
    __atomic_store_n(&backend_selected, backend, __ATOMIC_RELAXED);
    return 0;
}

int betadist_backend(void) { return __atomic_load_n(&backend_selected, __ATOMIC_RELAXED); }

double beta_sample(double alpha, double beta, long seed) {
    if (bad_param(alpha) || bad_param(beta)) return NAN;
    uint64_t s[4];
    seed_state(s, (uint64_t)seed);
    return beta_scalar(s, alpha, beta);
}
