/*
 * libbetadist: exact Beta sampling.  See betadist.h for the algorithms and their sources.
 */
#include "betadist.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct betadist_rng {
    uint64_t s[4];
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

/* 53 random bits mapped onto the open interval (0, 1): k * 2^-53 + 2^-54. */
static inline double u64_to_open01(uint64_t x) {
    return ((double)(x >> 11) + 0.5) * 0x1.0p-53;
}

static void seed_state(uint64_t s[4], uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) s[i] = splitmix64_next(&x);
    /* SplitMix64 is a bijection of its counter, so four consecutive outputs cannot all be
     * zero; the all-zero state (the one xoshiro must avoid) is unreachable. */
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

/* Characteristic-polynomial jumps of xoshiro256 (Blackman & Vigna): 2^128 and 2^192 steps. */
static const uint64_t JUMP_128[4] = {0x180ec6d33cfd0abaULL, 0xd5a61266f0c9392cULL,
                                     0xa9582618e03fc9aaULL, 0x39abdc4529b1661cULL};
static const uint64_t JUMP_192[4] = {0x76e15d3efefdcbbfULL, 0xc5004e441c522fb3ULL,
                                     0x77710069854ee241ULL, 0x39109bb02acbe635ULL};

betadist_rng *betadist_rng_create(uint64_t seed) {
    betadist_rng *rng = malloc(sizeof *rng);
    if (rng) seed_state(rng->s, seed);
    return rng;
}

void betadist_rng_seed(betadist_rng *rng, uint64_t seed) { seed_state(rng->s, seed); }

void betadist_rng_free(betadist_rng *rng) { free(rng); }

void betadist_rng_jump(betadist_rng *rng) { apply_jump(rng->s, JUMP_128); }

void betadist_rng_long_jump(betadist_rng *rng) { apply_jump(rng->s, JUMP_192); }

betadist_rng *betadist_rng_split(betadist_rng *parent) {
    betadist_rng *child = malloc(sizeof *child);
    if (!child) return NULL;
    *child = *parent;
    apply_jump(parent->s, JUMP_128);
    return child;
}

void betadist_rng_reseed_mix(betadist_rng *rng, uint64_t salt) {
    uint64_t h = salt;
    for (int i = 0; i < 4; i++) {
        h ^= rng->s[i];
        h = splitmix64_next(&h);
    }
    seed_state(rng->s, h);
}

uint64_t betadist_rng_next_u64(betadist_rng *rng) { return xoshiro_next(rng->s); }

double betadist_rng_uniform(betadist_rng *rng) { return u64_to_open01(xoshiro_next(rng->s)); }

/* ---------------------------------------------------------------- ziggurat ---- */
/*
 * 256 layers of equal area V under f(x) = exp(-x^2/2), x >= 0.  Layer 0 is the base strip
 * [0, R] x [0, f(R)] plus the tail beyond R; layer i >= 1 is the rectangle
 * [0, x[i-1]] x [f(x[i-1]), f(x[i])] with x[0] = R > x[1] > ... > x[255] = 0.
 *
 * For a draw in layer i we take u uniform in [0, 1) and x = u * zig_w[i]:
 *   u < zig_k[i]  -> x lies under the curve for sure (the fast path, ~99% of draws);
 *   layer 0       -> x beyond R: sample the tail exactly (Marsaglia 1964);
 *   otherwise     -> accept when a uniform height in the layer falls below f(x).
 */
#define ZIG_LAYERS 256
#define ZIG_R 3.6541528853610088
static double zig_w[ZIG_LAYERS];  /* x scale per layer (layer 0: V / f(R)) */
static double zig_k[ZIG_LAYERS];  /* fast-accept threshold on u */
static double zig_f0[ZIG_LAYERS]; /* f at the layer's bottom edge */
static double zig_f1[ZIG_LAYERS]; /* f at the layer's top edge */

static double zig_f(double x) { return exp(-0.5 * x * x); }

__attribute__((constructor)) static void zig_init(void) {
    const double r = ZIG_R;
    const double v = r * zig_f(r) + 1.2533141373155002512 /* sqrt(pi/2) */ * erfc(r / sqrt(2.0));
    double x[ZIG_LAYERS];
    x[0] = r;
    for (int i = 1; i < ZIG_LAYERS - 1; i++) {
        x[i] = sqrt(-2.0 * log(zig_f(x[i - 1]) + v / x[i - 1]));
    }
    x[ZIG_LAYERS - 1] = 0.0;
    zig_w[0] = v / zig_f(r);
    zig_k[0] = r / zig_w[0];
    zig_f0[0] = 0.0;
    zig_f1[0] = zig_f(r);
    for (int i = 1; i < ZIG_LAYERS; i++) {
        zig_w[i] = x[i - 1];
        zig_k[i] = x[i] / x[i - 1];
        zig_f0[i] = zig_f(x[i - 1]);
        zig_f1[i] = (i == ZIG_LAYERS - 1) ? 1.0 : zig_f(x[i]);
    }
}

static double normal_tail(uint64_t s[4]) {
    for (;;) {
        const double a = -log(u64_to_open01(xoshiro_next(s))) / ZIG_R;
        const double b = -log(u64_to_open01(xoshiro_next(s)));
        if (b + b > a * a) return ZIG_R + a;
    }
}

static double normal_slow(uint64_t s[4], int layer, double x) {
    if (layer == 0) return normal_tail(s);
    const double y = zig_f0[layer] + u64_to_open01(xoshiro_next(s)) * (zig_f1[layer] - zig_f0[layer]);
    return (y < zig_f(x)) ? x : NAN; /* NAN: rejected, the caller draws again */
}

static inline double normal_draw(uint64_t s[4]) {
    for (;;) {
        const uint64_t r = xoshiro_next(s);
        const int layer = (int)(r & 0xff);
        const int negative = (int)((r >> 8) & 1);
        const double u = (double)(r >> 11) * 0x1.0p-53; /* bits 11..63: disjoint from above */
        double x = u * zig_w[layer];
        if (__builtin_expect(u >= zig_k[layer], 0)) {
            x = normal_slow(s, layer, x);
            if (isnan(x)) continue;
        }
        return negative ? -x : x;
    }
}

double betadist_rng_normal(betadist_rng *rng) { return normal_draw(rng->s); }

/* ---------------------------------------------------------------- gamma ---- */

/* Marsaglia-Tsang for shape >= 1; d = shape - 1/3, c = 1 / sqrt(9 d). */
static inline double gamma_mt(uint64_t s[4], double d, double c) {
    for (;;) {
        double x, v;
        do {
            x = normal_draw(s);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        const double u = u64_to_open01(xoshiro_next(s));
        const double x2 = x * x;
        if (u < 1.0 - 0.0331 * x2 * x2) return d * v;
        if (log(u) < 0.5 * x2 + d * (1.0 - v + log(v))) return d * v;
    }
}

static inline double gamma_ge1(uint64_t s[4], double shape) {
    const double d = shape - 1.0 / 3.0;
    return gamma_mt(s, d, 1.0 / sqrt(9.0 * d));
}

/* log Gamma(shape) for any shape > 0 (the boost in log space below 1). */
static double log_gamma_draw(uint64_t s[4], double shape) {
    if (shape >= 1.0) return log(gamma_ge1(s, shape));
    const double g = gamma_ge1(s, shape + 1.0);
    return log(g) + log(u64_to_open01(xoshiro_next(s))) / shape;
}

double betadist_rng_gamma(betadist_rng *rng, double shape) {
    if (!(shape > 0.0) || isinf(shape)) return NAN;
    if (shape >= 1.0) return gamma_ge1(rng->s, shape);
    return exp(log_gamma_draw(rng->s, shape));
}

/* ---------------------------------------------------------------- beta ---- */

static inline double log_add(double a, double b) {
    const double m = a > b ? a : b;
    const double n = a > b ? b : a;
    return m + log1p(exp(n - m));
}

/* Johnk's algorithm in log space, for a < 1 and b < 1. */
static double beta_johnk(uint64_t s[4], double a, double b) {
    for (;;) {
        const double lx = log(u64_to_open01(xoshiro_next(s))) / a;
        const double ly = log(u64_to_open01(xoshiro_next(s))) / b;
        const double lsum = log_add(lx, ly);
        if (lsum <= 0.0) return exp(lx - lsum);
    }
}

static inline double beta_scalar(uint64_t s[4], double a, double b) {
    if (a >= 1.0 && b >= 1.0) {
        const double ga = gamma_ge1(s, a);
        const double gb = gamma_ge1(s, b);
        return ga / (ga + gb);
    }
    if (a < 1.0 && b < 1.0) return beta_johnk(s, a, b);
    const double la = log_gamma_draw(s, a);
    const double lb = log_gamma_draw(s, b);
    return exp(la - log_add(la, lb));
}

static inline int bad_param(double p) { return !(p > 0.0) || isinf(p); }

static int backend_selected = BETADIST_BACKEND_SCALAR;

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
    for (size_t i = 0; i < n; i++) out[i] = beta_scalar(s, alpha[i], beta[i]);
    memcpy(rng->s, s, sizeof s);
    return BETADIST_OK;
}

int betadist_sample_fill(betadist_rng *rng, double alpha, double beta, double *out, size_t n) {
    if (n == 0) return BETADIST_OK;
    if (!rng || !out) return BETADIST_ENULL;
    if (bad_param(alpha)) return BETADIST_EALPHA;
    if (bad_param(beta)) return BETADIST_EBETA;
    uint64_t s[4];
    memcpy(s, rng->s, sizeof s);
    for (size_t i = 0; i < n; i++) out[i] = beta_scalar(s, alpha, beta);
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
    if (backend == BETADIST_BACKEND_AUTO || backend == BETADIST_BACKEND_SCALAR) {
        backend_selected = BETADIST_BACKEND_SCALAR;
        return 0;
    }
    return -1;
}

int betadist_backend(void) { return backend_selected; }

double beta_sample(double alpha, double beta, long seed) {
    if (bad_param(alpha) || bad_param(beta)) return NAN;
    uint64_t s[4];
    seed_state(s, (uint64_t)seed);
    return beta_scalar(s, alpha, beta);
}
