// Top-down crop geometry (PaddleX's get_affine_transform / get_warp_matrix)
// and a cv2.warpAffine-compatible bilinear crop fused with normalization.
#pragma once

#include "preprocess.h"

namespace posepipe {

// cv2.getAffineTransform: the 2x3 matrix (row-major) taking src[i] to dst[i],
// solved by OpenCV's own LU so the doubles come out identical; all zeros when
// the points are degenerate, as OpenCV returns.
void affine_from_points(const float src[3][2], const float dst[3][2], double m[6]);

// The inverse of a 2x3 affine matrix as cv2.invertAffineTransform (and
// warpAffine internally) computes it; a singular matrix gives all zeros.
void invert_affine(const double m[6], double inv[6]);

// The crop matrix of one person box, image -> crop (or crop -> image when
// `inverse`), for an out_w x out_h crop.
//   udp == false: get_affine_transform(center, scale, 0, (out_w, out_h)); only
//     the width of `scale` is used and the point pairs are float32, as PaddleX
//     builds them.
//   udp == true: get_warp_matrix(0, center * 2, (out_w - 1, out_h - 1), scale),
//     a float32 matrix. `f32_inputs` says whether PaddleX's centre and scale
//     arrays were float32, which decides whether NumPy divides in float32 or
//     float64 there.
void topdown_matrix(double cx, double cy, double sw, double sh, int out_w, int out_h, bool udp,
                    bool inverse, bool f32_inputs, double m[6]);

// cv2.warpAffine(img, m, (out_w, out_h), flags=INTER_LINEAR) with a zero
// constant border, as OpenCV 4.10 computes it in fixed point (the version
// PaddleX 3.7.2 pins), then normalized into out[3][out_h][out_w].
void warp_crop(const ImageU8& img, const double m[6], int out_w, int out_h, const Normalizer& norm,
               float* out);

}  // namespace posepipe
