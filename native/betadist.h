/*
 * libbetadist -- exact Beta(alpha, beta) sampling for Thompson-sampling bandits.
 *
 * Random numbers
 * --------------
 * Every draw comes from xoshiro256++ (period 2^256 - 1).  A 64-bit seed is expanded into the
 * 256-bit state with SplitMix64, so nearby seeds (0, 1, 2, ...) still give unrelated streams.
 * One betadist_rng owns a block of 2^192 consecutive outputs of the sequence: its scalar
 * stream starts at the block's offset 0 and its four AVX2 lane streams at offsets
 * 1..4 * 2^128 (jump polynomials), so the five never overlap.  betadist_rng_jump() moves to
 * the next block and betadist_rng_split() hands out successive blocks: every worker thread
 * or process that takes its own split draws numbers no other one draws.
 *
 * Algorithms (all exact: no approximation is ever used)
 * -----------------------------------------------------
 * Beta(a, b) = Ga / (Ga + Gb) with Ga ~ Gamma(a), Gb ~ Gamma(b) independent, except when
 * both a < 1 and b < 1 (see Johnk below).
 *
 *   Gamma(s), s >= 1: Marsaglia & Tsang (2000), "A simple method for generating gamma
 *     variables", with standard normals from a 256-layer ziggurat (Marsaglia & Tsang 2000,
 *     "The ziggurat method") whose layer index, sign and mantissa come from disjoint bits of
 *     one 64-bit draw (Doornik 2005), and the exact Marsaglia tail beyond r = 3.654...
 *   Gamma(s), s < 1: the boost Gamma(s) = Gamma(s + 1) * U^(1/s), carried out in log space
 *     (log Gamma(s + 1) + log(U) / s) so that it cannot underflow before the final ratio.
 *   Beta(a, b), a < 1 and b < 1: Johnk (1964): X = U^(1/a), Y = V^(1/b), accept when
 *     X + Y <= 1 and return X / (X + Y); evaluated entirely in log space, so it stays exact
 *     for tiny parameters such as a = b = 1e-3 where U^(1/a) underflows.  Its acceptance
 *     rate Gamma(a+1) Gamma(b+1) / Gamma(a+b+1) is above 1/2 in this region.
 *   Mixed case (one shape < 1): the gamma ratio is formed as exp(la - log(e^la + e^lb)).
 *
 * Results lie in [0, 1]: a true value below the smallest positive double rounds to 0 and one
 * within half an ulp of 1 rounds to 1 (this is what happens for parameters around 1e-3); the
 * output is never NaN.
 *
 * Speed: when the CPU has AVX2 and FMA (checked once at load time with
 * __builtin_cpu_supports; the library itself is compiled for baseline x86-64 and only the
 * vector functions carry target("avx2,fma")), batches of items with both shapes >= 1 run
 * four items at a time: each lane makes one Marsaglia-Tsang attempt using the ziggurat's
 * fast path (about 97% of attempts succeed there), and a lane that needs anything else -- a
 * ziggurat edge or tail, v <= 0, the log test, a rejection -- is finished by the scalar code
 * from the very same normal draw and uniform.  Every lane thus runs the exact algorithm; no
 * approximation is involved.  Items with a shape < 1 and the last n mod 4 items use the
 * scalar code.  The two backends consume random numbers differently, so one seed gives
 * different (equally valid) streams with and without AVX2; betadist_set_backend() pins one,
 * e.g. to reproduce a run on another machine.
 *
 * Thread safety: a betadist_rng must not be used by two threads at once; everything else is
 * thread-safe.  Python's mlkube.native keeps one state per thread.
 */
#ifndef BETADIST_H
#define BETADIST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define BETADIST_API __attribute__((visibility("default")))
#else
#define BETADIST_API
#endif

/* Error codes of betadist_sample_batch(). */
enum {
    BETADIST_OK = 0,
    BETADIST_EALPHA = 1, /* an alpha is <= 0, NaN or infinite; *bad_index says which */
    BETADIST_EBETA = 2,  /* a beta is <= 0, NaN or infinite; *bad_index says which */
    BETADIST_ENULL = 3,  /* a required pointer was NULL (with n > 0) */
};

/* Backends for betadist_set_backend() / betadist_backend(). */
enum {
    BETADIST_BACKEND_AUTO = 0,   /* AVX2 when the CPU supports it, scalar otherwise */
    BETADIST_BACKEND_SCALAR = 1, /* always the portable scalar loop */
    BETADIST_BACKEND_AVX2 = 2,   /* AVX2+FMA; refused (returns -1) when the CPU lacks it */
};

typedef struct betadist_rng betadist_rng;

/* A new generator seeded with `seed` (SplitMix64-expanded); NULL when out of memory.
 * Release it with betadist_rng_free(). */
BETADIST_API betadist_rng *betadist_rng_create(uint64_t seed);
/* Reset `rng` to the state betadist_rng_create(seed) would give. */
BETADIST_API void betadist_rng_seed(betadist_rng *rng, uint64_t seed);
/* Release a generator; NULL is ignored. */
BETADIST_API void betadist_rng_free(betadist_rng *rng);
/* Move to the next block: 2^192 draws ahead, 2^64 blocks in the whole period. */
BETADIST_API void betadist_rng_jump(betadist_rng *rng);
/* A new generator that takes over `parent`'s current block; `parent` then jumps to the next
 * one.  Successive splits therefore never overlap.  NULL when out of memory. */
BETADIST_API betadist_rng *betadist_rng_split(betadist_rng *parent);
/* Replace the state by one derived from the current state and `salt` through SplitMix64.
 * Used after fork(): the child mixes in fresh entropy, so it leaves its parent's sequence. */
BETADIST_API void betadist_rng_reseed_mix(betadist_rng *rng, uint64_t salt);
/* Single draws from the scalar stream, for tests and for callers that need a uniform,
 * normal or gamma variate next to their Beta draws. */
BETADIST_API uint64_t betadist_rng_next_u64(betadist_rng *rng);
/* Uniform on the open interval (0, 1): (k + 1/2) * 2^-52 for a 52-bit k. */
BETADIST_API double betadist_rng_uniform(betadist_rng *rng);
/* One standard normal from the ziggurat (exposed so the tests can check it directly). */
BETADIST_API double betadist_rng_normal(betadist_rng *rng);
/* One Gamma(shape, 1) draw; NaN when shape is not finite and > 0. */
BETADIST_API double betadist_rng_gamma(betadist_rng *rng, double shape);

/* Fill out[i] ~ Beta(alpha[i], beta[i]) for i < n.
 * Every parameter is checked before anything is drawn: on an invalid one the call returns
 * BETADIST_EALPHA or BETADIST_EBETA, stores the index of the first bad item in *bad_index
 * (when bad_index is not NULL; alpha is reported before beta for the same item) and leaves
 * `out` and `rng` untouched.  n == 0 is valid and does nothing.  alpha, beta and out may
 * not overlap except that out may equal alpha or beta. */
BETADIST_API int betadist_sample_batch(betadist_rng *rng, const double *alpha, const double *beta,
                                       double *out, size_t n, size_t *bad_index);

/* A static, human-readable description of an error code. */
BETADIST_API const char *betadist_strerror(int code);

/* Select the batch backend (BETADIST_BACKEND_*); process-wide.  Returns 0, or -1 when the
 * CPU cannot run the requested backend (nothing changes then). */
BETADIST_API int betadist_set_backend(int backend);
/* The backend batch calls use now: BETADIST_BACKEND_SCALAR or BETADIST_BACKEND_AVX2. */
BETADIST_API int betadist_backend(void);

/* Drop-in single draw for existing Go/cgo callers: one Beta(alpha, beta) variate from a
 * fresh generator seeded with `seed` (the same seed always gives the same value).  Returns
 * NaN when alpha or beta is not finite and > 0 -- the only way this signature can report it. */
BETADIST_API double beta_sample(double alpha, double beta, long seed);

#ifdef __cplusplus
}
#endif

#endif /* BETADIST_H */
