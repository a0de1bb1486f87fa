/* Runs flashkern's attention, matmul and add-layer-norm through the C ABI on random data and
 * checks each against naive C loops (double accumulation). Exits non-zero on any mismatch.
 * Build: see build.sh beside this file. */
#include "flashkern.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned long long rng_state = 42;
static float uniform(void) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rng_state >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}
static float *random_buffer(size_t n) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = uniform();
    return p;
}
static fk_tensor contiguous(float *data, int ndim, const int64_t *shape) {
    fk_tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = FK_F32;
    t.ndim = ndim;
    int64_t step = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        t.shape[d] = shape[d];
        t.strides[d] = step;
        step *= shape[d];
    }
    return t;
}
static int failures = 0;
static void check(const char *what, const float *got, const double *want, size_t n, double tol) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs(got[i] - want[i]);
        if (!(err <= worst)) worst = err;
    }
    int ok = worst <= tol;
    printf("%-34s max |err| = %.3g (tolerance %.1g) %s\n", what, worst, tol, ok ? "ok" : "FAILED");
    failures += !ok;
}
static void expect_status(const char *what, fk_status got, fk_status want) {
    int ok = got == want;
    printf("%-34s %s%s%s\n", what, fk_status_string(got), got == FK_OK ? "" : ": ", got == FK_OK ? "" : fk_last_error());
    if (!ok) printf("%-34s FAILED: expected %s\n", "", fk_status_string(want));
    failures += !ok;
}

static void run_attention(void) {
    enum { B = 1, H = 4, N = 37, D = 32 };
    int64_t shape[4] = {B, H, N, D};
    float *q = random_buffer(B * H * N * D), *k = random_buffer(B * H * N * D), *v = random_buffer(B * H * N * D);
    float *out = malloc(sizeof(float) * B * H * N * D);
    fk_tensor tq = contiguous(q, 4, shape), tk = contiguous(k, 4, shape), tv = contiguous(v, 4, shape);
    fk_tensor to = contiguous(out, 4, shape);
    fk_attention_params params;
    memset(&params, 0, sizeof params);
    params.causal = FK_CAUSAL_TOP_LEFT;
    params.window_left = -1;
    fk_status s = fk_attention(&tq, &tk, &tv, &to, &params);
    expect_status("fk_attention (causal)", s, FK_OK);
    double *want = calloc(B * H * N * D, sizeof(double));
    double scores[N];
    for (int h = 0; h < H; h++)
        for (int i = 0; i < N; i++) {
            double max = -INFINITY, sum = 0;
            for (int j = 0; j <= i; j++) {
                double dot = 0;
                for (int c = 0; c < D; c++) dot += (double)q[(h * N + i) * D + c] * k[(h * N + j) * D + c];
                scores[j] = dot / sqrt((double)D);
                if (scores[j] > max) max = scores[j];
            }
            for (int j = 0; j <= i; j++) sum += exp(scores[j] - max);
            for (int j = 0; j <= i; j++)
                for (int c = 0; c < D; c++)
                    want[(h * N + i) * D + c] += exp(scores[j] - max) / sum * v[(h * N + j) * D + c];
        }
    check("attention vs naive C", out, want, B * H * N * D, 1e-5);

    /* Bad descriptors: each gets its own status and message. */
    fk_tensor bad = tq;
    bad.ndim = 5;
    expect_status("attention with ndim 5", fk_attention(&bad, &tk, &tv, &to, &params), FK_ERR_SHAPE);
    bad = tk;
    bad.shape[3] = D + 1;
    expect_status("attention with mismatched D", fk_attention(&tq, &bad, &tv, &to, &params), FK_ERR_SHAPE);
    bad = to;
    bad.data = NULL;
    expect_status("attention with NULL out data", fk_attention(&tq, &tk, &tv, &bad, &params), FK_ERR_INVALID_ARGUMENT);
    bad = to;
    bad.strides[2] = 0;
    expect_status("attention with overlapping out", fk_attention(&tq, &tk, &tv, &bad, &params), FK_ERR_INVALID_ARGUMENT);
    expect_status("attention with out aliasing q", fk_attention(&tq, &tk, &tv, &tq, &params), FK_ERR_INVALID_ARGUMENT);
    free(q), free(k), free(v), free(out), free(want);
}

static void run_matmul(void) {
    enum { M = 33, K = 70, N = 19 };
    float *a = random_buffer(M * K), *b = random_buffer(N * K), *bias = random_buffer(N);
    float *c = malloc(sizeof(float) * M * N), *c2 = malloc(sizeof(float) * M * N);
    int64_t sa[2] = {M, K}, sb[2] = {N, K}, sc[2] = {M, N}, sbias[1] = {N};
    fk_tensor ta = contiguous(a, 2, sa), tb = contiguous(b, 2, sb), tc = contiguous(c, 2, sc);
    fk_tensor tbias = contiguous(bias, 1, sbias), tc2 = contiguous(c2, 2, sc);
    expect_status("fk_matmul", fk_matmul(&ta, &tb, &tbias, 1.0f, 0.0f, &tc), FK_OK);
    double *want = malloc(sizeof(double) * M * N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double dot = 0;
            for (int p = 0; p < K; p++) dot += (double)a[i * K + p] * b[j * K + p];
            want[i * N + j] = dot + bias[j];
        }
    check("matmul vs naive C", c, want, M * N, 1e-4);
    fk_packed *packed = NULL;
    expect_status("fk_pack_weights", fk_pack_weights(&tb, &packed), FK_OK);
    expect_status("fk_matmul_packed", fk_matmul_packed(&ta, packed, &tbias, 1.0f, 0.0f, &tc2), FK_OK);
    check("packed matmul vs naive C", c2, want, M * N, 1e-4);
    fk_packed_free(packed);
    fk_tensor bad = tb;
    bad.dtype = (fk_dtype)7;
    expect_status("matmul with unknown dtype", fk_matmul(&ta, &bad, NULL, 1.0f, 0.0f, &tc), FK_ERR_DTYPE);
    bad = tb;
    bad.strides[0] = -1;
    expect_status("matmul with negative stride", fk_matmul(&ta, &bad, NULL, 1.0f, 0.0f, &tc), FK_ERR_INVALID_ARGUMENT);
    free(a), free(b), free(bias), free(c), free(c2), free(want);
}

static void run_layer_norm(void) {
    enum { ROWS = 9, HIDDEN = 100 };
    float *x = random_buffer(ROWS * HIDDEN), *r = random_buffer(ROWS * HIDDEN);
    float *gamma = random_buffer(HIDDEN), *beta = random_buffer(HIDDEN);
    float *out = malloc(sizeof(float) * ROWS * HIDDEN), *sum = malloc(sizeof(float) * ROWS * HIDDEN);
    int64_t s2[2] = {ROWS, HIDDEN}, s1[1] = {HIDDEN};
    fk_tensor tx = contiguous(x, 2, s2), tr = contiguous(r, 2, s2), tg = contiguous(gamma, 1, s1);
    fk_tensor tb = contiguous(beta, 1, s1), to = contiguous(out, 2, s2), ts = contiguous(sum, 2, s2);
    expect_status("fk_add_layer_norm", fk_add_layer_norm(&tx, &tr, NULL, &tg, &tb, 1e-5f, &to, &ts), FK_OK);
    double *want = malloc(sizeof(double) * ROWS * HIDDEN);
    for (int i = 0; i < ROWS; i++) {
        double mean = 0, var = 0;
        for (int c = 0; c < HIDDEN; c++) mean += (double)x[i * HIDDEN + c] + r[i * HIDDEN + c];
        mean /= HIDDEN;
        for (int c = 0; c < HIDDEN; c++) {
            double d = (double)x[i * HIDDEN + c] + r[i * HIDDEN + c] - mean;
            var += d * d;
        }
        var /= HIDDEN;
        for (int c = 0; c < HIDDEN; c++)
            want[i * HIDDEN + c] =
                ((double)x[i * HIDDEN + c] + r[i * HIDDEN + c] - mean) / sqrt(var + 1e-5) * gamma[c] + beta[c];
    }
    check("add_layer_norm vs naive C", out, want, ROWS * HIDDEN, 1e-5);
    fk_tensor bad = tg;
    bad.shape[0] = HIDDEN - 1;
    expect_status("layer norm with short gamma", fk_add_layer_norm(&tx, &tr, NULL, &bad, &tb, 1e-5f, &to, NULL), FK_ERR_SHAPE);
    free(x), free(r), free(gamma), free(beta), free(out), free(sum), free(want);
}

int main(void) {
    printf("flashkern %s, ISA %s\n", fk_version(), fk_isa());
    expect_status("fk_set_num_threads(2)", fk_set_num_threads(2), FK_OK);
    run_attention();
    run_matmul();
    run_layer_norm();
    expect_status("fk_set_max_isa(\"avx2\")", fk_set_max_isa("avx2"), FK_OK);
    printf("ISA now %s\n", fk_isa());
    run_matmul();
    expect_status("fk_set_max_isa(\"sse9\")", fk_set_max_isa("sse9"), FK_ERR_INVALID_ARGUMENT);
    printf("%s\n", failures ? "C example: FAILED" : "C example: all checks passed");
    return failures != 0;
}
