/* The ARR memory update, sample by sample in batch order (float32), for dnrt_core/arr.py.
 *
 * For each sample i with label k = y[i] >= 0:
 *     mu_k <- x_i                        if mu_k is unset
 *     mu_k <- (1-m)·mu_k + m·x_i         otherwise (m = 1 gives x_i exactly)
 *     diff_i = x_i - mu_k                (after: the updated mu_k; before: mu_k before it,
 *                                         0 for a first-seen class)
 * Ignored samples (k < 0) get diff_i = 0. This is the released code's loop, without its
 * per-sample host round trips: about B·d multiply-adds. Returns the number of labelled samples
 * and writes sum_i |diff_i|_1 to *abs_sum.
 * Labels must be < K (checked by the caller before the memory is touched).
 */
#include <math.h>
#include <stdint.h>

int64_t dnrt_arr_update(const float *restrict x, const int64_t *restrict y,
                        float *restrict memory, uint8_t *restrict initialized,
                        float *restrict diff, int64_t B, int64_t d, float momentum, int after,
                        double *abs_sum) {
    const float keep = 1.0f - momentum;
    int64_t n_valid = 0;
    double total = 0.0;
    for (int64_t i = 0; i < B; ++i) {
        const float *restrict xi = x + i * d;
        float *restrict di = diff + i * d;
        const int64_t k = y[i];
        if (k < 0) {
            for (int64_t j = 0; j < d; ++j) di[j] = 0.0f;
            continue;
        }
        ++n_valid;
        float *restrict mu = memory + k * d;
        if (!initialized[k]) {
            for (int64_t j = 0; j < d; ++j) {
                mu[j] = xi[j];
                di[j] = 0.0f;
            }
            initialized[k] = 1;
        } else if (after) {
            for (int64_t j = 0; j < d; ++j) {
                mu[j] = keep * mu[j] + momentum * xi[j];
                di[j] = xi[j] - mu[j];
            }
        } else {
            for (int64_t j = 0; j < d; ++j) {
                di[j] = xi[j] - mu[j];
                mu[j] = keep * mu[j] + momentum * xi[j];
            }
        }
        float row = 0.0f;
#pragma omp simd reduction(+ : row)
        for (int64_t j = 0; j < d; ++j) row += fabsf(di[j]);
        total += row;
    }
    *abs_sum = total;
    return n_valid;
}
