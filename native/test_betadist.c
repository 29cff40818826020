/*
 * C tests for libbetadist, run by `make -C native check` under AddressSanitizer and
 * UndefinedBehaviorSanitizer (any finding aborts the run).  Every output buffer is malloc'ed
 * at exactly its length, so a write past the end is caught.  The statistical checks here are
 * coarse on purpose (fixed seeds, bounds of many standard errors); the distribution itself is
 * tested against scipy in tests/unit/native.
 */
/* The library source is included, not linked, so that its internal helpers (the squeeze
 * bound below) can be tested directly; the public API is exercised all the same. */
#include "betadist.c"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond, ...)                                                                          \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            failures++;                                                                           \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);             \
            fprintf(stderr, __VA_ARGS__);                                                         \
            fputc('\n', stderr);                                                                  \
        }                                                                                         \
    } while (0)

static double *alloc_doubles(size_t n, double fill) {
    double *p = malloc((n ? n : 1) * sizeof *p);
    if (!p) {
        perror("malloc");
        exit(2);
    }
    for (size_t i = 0; i < n; i++) p[i] = fill;
    return p;
}

static int backends[2];
static int n_backends;

static void setup_backends(void) {
    n_backends = 0;
    backends[n_backends++] = BETADIST_BACKEND_SCALAR;
    if (betadist_set_backend(BETADIST_BACKEND_AVX2) == 0) backends[n_backends++] = BETADIST_BACKEND_AVX2;
    CHECK(betadist_set_backend(BETADIST_BACKEND_AUTO) == 0, "auto backend must always be accepted");
    printf("backends under test: scalar%s\n", n_backends == 2 ? " avx2" : "");
}

static void test_seeding(void) {
    betadist_rng *a = betadist_rng_create(42), *b = betadist_rng_create(42), *c = betadist_rng_create(43);
    CHECK(a && b && c, "create");
    int same = 1, differ = 0;
    for (int i = 0; i < 1000; i++) {
        const uint64_t x = betadist_rng_next_u64(a), y = betadist_rng_next_u64(b), z = betadist_rng_next_u64(c);
        same &= x == y;
        differ += x != z;
    }
    CHECK(same, "equal seeds must give equal streams");
    CHECK(differ == 1000, "seeds 42 and 43 agreed on %d of 1000 draws", 1000 - differ);
    betadist_rng_seed(a, 42);
    betadist_rng_seed(b, 42);
    CHECK(betadist_rng_next_u64(a) == betadist_rng_next_u64(b), "reseed restarts the stream");
    for (int i = 0; i < 1000; i++) {
        const double u = betadist_rng_uniform(a);
        CHECK(u > 0.0 && u < 1.0, "uniform %g outside (0, 1)", u);
    }
    betadist_rng_free(a);
    betadist_rng_free(b);
    betadist_rng_free(c);
    betadist_rng_free(NULL); /* like free(): a no-op */
}

static void test_split_and_jump(void) {
    betadist_rng *parent = betadist_rng_create(7), *reference = betadist_rng_create(7);
    betadist_rng *child = betadist_rng_split(parent);
    CHECK(child != NULL, "split");
    int child_is_old_parent = 1, parent_moved = 0;
    for (int i = 0; i < 100; i++) {
        const uint64_t r = betadist_rng_next_u64(reference);
        child_is_old_parent &= betadist_rng_next_u64(child) == r;
        parent_moved += betadist_rng_next_u64(parent) != r;
    }
    CHECK(child_is_old_parent, "a split continues the parent's stream");
    CHECK(parent_moved == 100, "the parent must jump away after a split");

    /* Jumps commute with draws: after the first split and 100 draws the parent stands at
     * seed 7 + 1 block + 100; a second split hands exactly that out and moves it one block. */
    betadist_rng *second = betadist_rng_split(parent);
    betadist_rng *p2 = betadist_rng_create(7);
    betadist_rng_jump(p2);
    for (int i = 0; i < 100; i++) (void)betadist_rng_next_u64(p2);
    CHECK(betadist_rng_next_u64(second) == betadist_rng_next_u64(p2), "split hands out the current block");
    betadist_rng_seed(reference, 7);
    betadist_rng_jump(reference);
    betadist_rng_jump(reference);
    for (int i = 0; i < 100; i++) (void)betadist_rng_next_u64(reference);
    CHECK(betadist_rng_next_u64(parent) == betadist_rng_next_u64(reference), "parent one block on");

    betadist_rng *m = betadist_rng_create(7), *n = betadist_rng_create(7);
    betadist_rng_reseed_mix(m, 1);
    betadist_rng_reseed_mix(n, 2);
    CHECK(betadist_rng_next_u64(m) != betadist_rng_next_u64(n), "different salts, different streams");
    betadist_rng_free(parent);
    betadist_rng_free(reference);
    betadist_rng_free(child);
    betadist_rng_free(second);
    betadist_rng_free(p2);
    betadist_rng_free(m);
    betadist_rng_free(n);
}

/* The ziggurat is exact only if its 256 layers have equal areas (the top layer closes the
 * recursion from r = 3.654..., so it checks the constant too). */
static void test_ziggurat_layers(void) {
    const double base = zig_w[0] * 0x1.0p52 * zig_f1[0];
    for (int i = 1; i < ZIG_LAYERS; i++) {
        const double area = zig_w[i] * 0x1.0p52 * (zig_f1[i] - zig_f0[i]);
        CHECK(fabs(area / base - 1.0) < 1e-12, "layer %d area %.17g, base %.17g", i, area, base);
        CHECK(zig_f0[i] < zig_f1[i] && zig_k[i] < 0x1.0p52, "layer %d ordering", i);
    }
}

static void test_normal_and_gamma(void) {
    betadist_rng *rng = betadist_rng_create(11);
    const int n = 400000;
    double s1 = 0, s2 = 0, s4 = 0;
    int tail = 0, far = 0;
    for (int i = 0; i < n; i++) {
        const double x = betadist_rng_normal(rng);
        s1 += x;
        s2 += x * x;
        s4 += x * x * x * x;
        tail += fabs(x) > 3.6541528853610088;
        far += fabs(x) > 4.0;
    }
    const double mean = s1 / n, var = s2 / n - mean * mean, kurt = s4 / n;
    CHECK(fabs(mean) < 0.01, "normal mean %g", mean);
    CHECK(fabs(var - 1.0) < 0.01, "normal variance %g", var);
    CHECK(fabs(kurt - 3.0) < 0.06, "normal fourth moment %g", kurt);
    /* P(|X| > r) = 2.58e-4: expect ~103 of 400000, the tail sampler must be reached. */
    CHECK(tail > 60 && tail < 150, "normal tail count %d", tail);
    /* P(|X| > 4) = 6.3e-5: ~25 expected; only the exact tail sampler gets beyond the base strip. */
    CHECK(far > 8 && far < 50, "normal count beyond 4: %d", far);

    const double shapes[] = {0.01, 0.5, 1.0, 2.5, 100.0, 1e6};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const double a = shapes[k];
        double m = 0;
        const int draws = 100000;
        for (int i = 0; i < draws; i++) {
            const double g = betadist_rng_gamma(rng, a);
            CHECK(g >= 0.0 && isfinite(g), "gamma(%g) gave %g", a, g);
            m += g;
        }
        m /= draws;
        CHECK(fabs(m - a) < 6.0 * sqrt(a / draws), "gamma(%g) mean %g", a, m);
    }
    CHECK(isnan(betadist_rng_gamma(rng, 0.0)) && isnan(betadist_rng_gamma(rng, -1.0)) &&
              isnan(betadist_rng_gamma(rng, NAN)) && isnan(betadist_rng_gamma(rng, INFINITY)),
          "invalid gamma shapes give NaN");
    betadist_rng_free(rng);
}

/* Every invalid parameter is reported with its index; out and the generator are untouched. */
static void test_invalid(void) {
    const double bad[] = {0.0, -0.0, -1.0, -INFINITY, INFINITY, NAN};
    const size_t n = 9;
    betadist_rng *rng = betadist_rng_create(5), *twin = betadist_rng_create(5);
    for (int be = 0; be < n_backends; be++) {
        betadist_set_backend(backends[be]);
        for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
            for (int which = 0; which < 2; which++) {
                double *alpha = alloc_doubles(n, 2.0), *beta = alloc_doubles(n, 3.0);
                double *out = alloc_doubles(n, -7.0);
                (which ? beta : alpha)[6] = bad[k];
                (which ? beta : alpha)[8] = bad[k];
                size_t index = 12345;
                const int rc = betadist_sample_batch(rng, alpha, beta, out, n, &index);
                CHECK(rc == (which ? BETADIST_EBETA : BETADIST_EALPHA), "rc %d for %s=%g", rc,
                      which ? "beta" : "alpha", bad[k]);
                CHECK(index == 6, "first bad index %zu, want 6", index);
                for (size_t i = 0; i < n; i++) CHECK(out[i] == -7.0, "out[%zu] written on error", i);
                CHECK(betadist_sample_batch(rng, alpha, beta, out, n, NULL) == rc, "NULL bad_index");
                free(alpha);
                free(beta);
                free(out);
            }
        }
        /* alpha is reported before beta for the same item, earlier items before later ones. */
        double alpha[3] = {1, 1, -1}, beta[3] = {1, NAN, NAN}, out[3];
        size_t index = 0;
        CHECK(betadist_sample_batch(rng, alpha, beta, out, 3, &index) == BETADIST_EBETA && index == 1,
              "first bad item wins");
        alpha[1] = 0.0;
        CHECK(betadist_sample_batch(rng, alpha, beta, out, 3, &index) == BETADIST_EALPHA && index == 1,
              "alpha before beta");
        CHECK(betadist_sample_batch(NULL, alpha, beta, out, 3, &index) == BETADIST_ENULL, "NULL rng");
        CHECK(betadist_sample_batch(rng, NULL, beta, out, 3, &index) == BETADIST_ENULL, "NULL alpha");
        CHECK(betadist_sample_batch(rng, alpha, beta, NULL, 3, &index) == BETADIST_ENULL, "NULL out");
        CHECK(betadist_sample_batch(rng, NULL, NULL, NULL, 0, NULL) == BETADIST_OK, "n == 0 is fine");
    }
    betadist_set_backend(BETADIST_BACKEND_AUTO);
    CHECK(betadist_rng_next_u64(rng) == betadist_rng_next_u64(twin), "failed calls draw nothing");
    CHECK(isnan(beta_sample(0.0, 1.0, 1)) && isnan(beta_sample(1.0, INFINITY, 1)) &&
              isnan(beta_sample(NAN, 1.0, 1)),
          "beta_sample flags invalid parameters with NaN");
    CHECK(strcmp(betadist_strerror(BETADIST_EALPHA), "alpha must be finite and > 0") == 0, "strerror");
    CHECK(strcmp(betadist_strerror(99), "unknown error code") == 0, "strerror unknown");
    CHECK(betadist_set_backend(17) == -1, "unknown backend refused");
    betadist_rng_free(rng);
    betadist_rng_free(twin);
}

/* Valid output for every length 1..13 (vector body + scalar tail) and a mix of parameter
 * regimes inside one batch, with buffers of exactly n items. */
static void test_batch_ranges(void) {
    const double params[] = {1e-3, 0.02, 0.5, 0.999, 1.0, 1.0000001, 2.0, 37.5, 1e3, 1e5, 1e6, 1e9};
    const size_t np = sizeof params / sizeof params[0];
    for (int be = 0; be < n_backends; be++) {
        betadist_set_backend(backends[be]);
        betadist_rng *rng = betadist_rng_create(99);
        for (size_t n = 1; n <= 13; n++) {
            for (size_t rep = 0; rep < 40; rep++) {
                double *alpha = alloc_doubles(n, 0), *beta = alloc_doubles(n, 0), *out = alloc_doubles(n, -1);
                for (size_t i = 0; i < n; i++) {
                    alpha[i] = params[(i * 7 + rep) % np];
                    beta[i] = params[(i * 5 + rep * 3) % np];
                }
                size_t index = 0;
                CHECK(betadist_sample_batch(rng, alpha, beta, out, n, &index) == BETADIST_OK, "batch");
                for (size_t i = 0; i < n; i++) {
                    CHECK(out[i] >= 0.0 && out[i] <= 1.0, "Beta(%g, %g) gave %g", alpha[i], beta[i], out[i]);
                }
                free(alpha);
                free(beta);
                free(out);
            }
        }
        /* in place: out may alias alpha */
        double a[5] = {2, 2, 2, 2, 2}, b[5] = {3, 3, 3, 3, 3};
        CHECK(betadist_sample_batch(rng, a, b, a, 5, NULL) == BETADIST_OK, "aliasing batch");
        for (int i = 0; i < 5; i++) CHECK(a[i] > 0.0 && a[i] < 1.0, "aliased out %g", a[i]);
        betadist_rng_free(rng);
    }
    betadist_set_backend(BETADIST_BACKEND_AUTO);
}

/* The whole valid range, subnormal to DBL_MAX: every draw is in [0, 1] and the call returns
 * (Johnk with subnormal shapes once looped forever on NaN; huge shapes overflowed Ga + Gb). */
static void test_extreme_parameters(void) {
    const double params[] = {4.9406564584124654e-324, 1e-310, 1e-300, 1e-200, 1e-20, 0.5,
                             1.0, 2.0, 1e300, 1e308, 1.7976931348623157e308};
    const size_t np = sizeof params / sizeof params[0], n = 64;
    double *alpha = alloc_doubles(n, 0), *beta = alloc_doubles(n, 0), *out = alloc_doubles(n, 0);
    for (int be = 0; be < n_backends; be++) {
        betadist_set_backend(backends[be]);
        betadist_rng *rng = betadist_rng_create(31);
        for (size_t i = 0; i < np; i++) {
            for (size_t j = 0; j < np; j++) {
                for (size_t k = 0; k < n; k++) {
                    alpha[k] = params[i];
                    beta[k] = params[j];
                }
                CHECK(betadist_sample_batch(rng, alpha, beta, out, n, NULL) == BETADIST_OK, "batch");
                double lo = 2.0, hi = -1.0;
                for (size_t k = 0; k < n; k++) {
                    CHECK(out[k] >= 0.0 && out[k] <= 1.0, "Beta(%g, %g) gave %g", params[i], params[j], out[k]);
                    lo = out[k] < lo ? out[k] : lo;
                    hi = out[k] > hi ? out[k] : hi;
                }
                if (i == j && params[i] >= 1e300) CHECK(lo == 0.5 && hi == 0.5, "Beta(huge, huge) %g..%g", lo, hi);
                if (i == j && params[i] <= 1e-300) CHECK(lo == 0.0 && hi == 1.0, "Beta(tiny, tiny) %g..%g", lo, hi);
                if (params[i] <= 1e-20 && params[j] >= 1.0) CHECK(hi < 1e-100, "Beta(tiny, %g) max %g", params[j], hi);
            }
            const double g = betadist_rng_gamma(rng, params[i]);
            CHECK(g >= 0.0 && isfinite(g), "gamma(%g) gave %g", params[i], g);
        }
        betadist_rng_free(rng);
    }
    betadist_set_backend(BETADIST_BACKEND_AUTO);
    free(alpha);
    free(beta);
    free(out);
}

/* Mean and variance of large batches on both backends. */
static void test_moments(void) {
    const double pairs[][2] = {{1.0, 1.0}, {2.0, 5.0}, {500.0, 5000.0}, {0.5, 0.5}, {0.2, 40.0}, {1.0, 1e5}};
    const size_t n = 200000;
    double *alpha = alloc_doubles(n, 0), *beta = alloc_doubles(n, 0), *out = alloc_doubles(n, 0);
    for (int be = 0; be < n_backends; be++) {
        betadist_set_backend(backends[be]);
        betadist_rng *rng = betadist_rng_create(2024);
        for (size_t k = 0; k < sizeof pairs / sizeof pairs[0]; k++) {
            const double a = pairs[k][0], b = pairs[k][1];
            for (size_t i = 0; i < n; i++) {
                alpha[i] = a;
                beta[i] = b;
            }
            CHECK(betadist_sample_batch(rng, alpha, beta, out, n, NULL) == BETADIST_OK, "batch");
            double s1 = 0, s2 = 0;
            for (size_t i = 0; i < n; i++) s1 += out[i];
            const double mean = s1 / n;
            for (size_t i = 0; i < n; i++) s2 += (out[i] - mean) * (out[i] - mean);
            const double var = s2 / (n - 1);
            const double tmean = a / (a + b), tvar = a * b / ((a + b) * (a + b) * (a + b + 1));
            CHECK(fabs(mean - tmean) < 6.0 * sqrt(tvar / n), "backend %d Beta(%g,%g) mean %g want %g",
                  backends[be], a, b, mean, tmean);
            CHECK(fabs(var / tvar - 1.0) < 0.05, "backend %d Beta(%g,%g) var %g want %g", backends[be],
                  a, b, var, tvar);
        }
        betadist_rng_free(rng);
    }
    betadist_set_backend(BETADIST_BACKEND_AUTO);
    free(alpha);
    free(beta);
    free(out);
}

/* The extra Marsaglia-Tsang squeeze may only accept what the exact test accepts:
 * squeeze_bound(c, x) <= exp(h) wherever v > 0 (h evaluated in long double). */
static void test_squeeze_bound(void) {
    volatile long double tiny = 0x1.0p-60L;
    if ((long double)1.0L + tiny == 1.0L) {
        /* valgrind runs x87 long double arithmetic at double precision */
        puts("skipping the squeeze grid: long double has no extra precision here");
        return;
    }
    const double shapes[] = {1.0, 1.5, 3.0, 10.0, 100.0, 1e4, 1e7};
    long checked = 0;
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const double d = shapes[k] - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
        for (double x = -8.0; x <= 8.0; x += 1.0 / 1024) {
            const long double t = (long double)c * x;
            if (t <= -1.0L || fabsl(t) < 1e-4L) continue;
            const long double v = (1.0L + t) * (1.0L + t) * (1.0L + t);
            const long double h = d * (1.0L - v + 3.0L * log1pl(t)) + 0.5L * x * x;
            CHECK(h <= 1e-12L, "h = %Lg > 0 at shape %g, x %g", h, shapes[k], x);
            const double bound = squeeze_bound(c, x);
            CHECK(bound <= expl(h) + 1e-15L, "squeeze %.17g > exp(h) %.17Lg at shape %g, x %g", bound,
                  expl(h), shapes[k], x);
            checked++;
        }
    }
    CHECK(checked > 90000, "checked %ld points", checked);
}

static void test_beta_sample(void) {
    const double x = beta_sample(3.0, 4.0, 123), y = beta_sample(3.0, 4.0, 123), z = beta_sample(3.0, 4.0, 124);
    CHECK(x == y, "same seed, same draw");
    CHECK(x != z, "different seed, different draw");
    CHECK(x > 0.0 && x < 1.0, "draw %g", x);
    CHECK(beta_sample(1e-3, 1e-3, -5) >= 0.0, "negative seeds are fine");
}

int main(void) {
    setup_backends();
    test_seeding();
    test_split_and_jump();
    test_ziggurat_layers();
    test_normal_and_gamma();
    test_invalid();
    test_batch_ranges();
    test_extreme_parameters();
    test_moments();
    test_squeeze_bound();
    test_beta_sample();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    puts("all libbetadist C tests passed");
    return 0;
}
