#include "preprocess.h"

#include <algorithm>

namespace posepipe {

Normalizer::Normalizer(const double mean[3], const double std[3], bool is_scale, bool rgb)
    : to_rgb(rgb) {
  const double scale = is_scale ? 1.0 / 255.0 : 1.0;
  for (int c = 0; c < 3; ++c) {
    alpha[c] = static_cast<float>(scale / std[c]);
    beta[c] = static_cast<float>(-mean[c] / std[c]);
    for (int v = 0; v < 256; ++v) {
      const float scaled = static_cast<float>(v) * alpha[c];
      lut[c][v] = scaled + beta[c];
    }
  }
}

void Normalizer::write_row(const uint8_t* line, int width, float* out,
                           size_t plane_stride) const {
  float* __restrict o0 = out;
  float* __restrict o1 = out + plane_stride;
  float* __restrict o2 = out + 2 * plane_stride;
  const int s0 = source_channel(0), s2 = source_channel(2);
  for (int x = 0; x < width; ++x, line += 3) {
    o0[x] = lut[0][line[s0]];
    o1[x] = lut[1][line[1]];
    o2[x] = lut[2][line[s2]];
  }
}

void normalize_to_canvas(const ImageU8& img, const Normalizer& norm, float* out, int out_h, int out_w,
                         int row_begin, int row_end) {
  const size_t plane = static_cast<size_t>(out_h) * out_w;
  const size_t stride = static_cast<size_t>(img.width) * 3;
  const int img_end = std::min(row_end, img.height);
  for (int y = row_begin; y < img_end; ++y) {
    float* o = out + static_cast<size_t>(y) * out_w;
    norm.write_row(img.data + y * stride, img.width, o, plane);
    for (int p = 0; p < 3; ++p) std::fill(o + p * plane + img.width, o + p * plane + out_w, 0.f);
  }
  // Rows below the image: whole canvas rows of zeros in every plane.
  for (int y = std::max(row_begin, img.height); y < row_end; ++y)
    for (int p = 0; p < 3; ++p) {
      float* o = out + p * plane + static_cast<size_t>(y) * out_w;
      std::fill(o, o + out_w, 0.f);
    }
}

}  // namespace posepipe
