// Keypoint heatmap post-processing: PaddleX's KptPostProcess.get_final_preds
// and the flip-test merge, computed without modifying the input.
#pragma once

#include <cstdint>
#include <vector>

namespace posepipe {

// cv2.getGaussianKernel(ksize, 0) in double (ksize odd, >= 3).
std::vector<double> gaussian_kernel(int ksize);

// NumPy's float32 np.log on x86 with AVX2/AVX-512 (its own vectorized
// rational approximation, up to ~4 ULP from the correctly rounded log): DARK
// takes differences of logs, so reproducing NumPy's exact values matters.
float numpy_logf(float x);

// One person: heatmaps[K][H][W] (the model's crop of centre/scale) ->
// out[K][3] = (x, y, maxval) in image coordinates. `gauss` is the DARK blur
// kernel (ignored when !use_dark).
void decode_person(const float* heatmaps, int K, int H, int W, double cx, double cy, double sw,
                   double sh, bool use_dark, const std::vector<double>& gauss, float* out);

// PaddleX's flip_back for K maps of H x W: mirror each map, take map perm[k]
// for slot k (the left/right swap), optionally PP-TinyPose's one-pixel shift
// (out[:, 1:] = out[:, :-1]). With `base`, writes (base + flipped) * 0.5 instead.
void flip_back_person(const float* flipped, int K, int H, int W, const int* perm, bool shift,
                      const float* base, float* out);

}  // namespace posepipe
