#include "affine.h"

#include "pixels.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace posepipe {

namespace {

constexpr int kInterBits = 5;  // OpenCV's INTER_BITS: 1/32-pixel sample positions
constexpr int kTab = 1 << kInterBits;
constexpr int kAbBits = 10;  // AB_BITS: fixed-point precision of the mapped coordinates
constexpr int kRemapBits = 15;  // INTER_REMAP_COEF_BITS

// x86 cvRound(double), i.e. saturate_cast<int>(double): round half to even;
// NaN and out-of-range values give INT_MIN, the cvtsd2si "integer indefinite".
inline int32_t cv_round(double v) {
  if (!(v > -2147483648.5 && v < 2147483647.5)) return INT32_MIN;
  return static_cast<int32_t>(std::nearbyint(v));
}

// OpenCV adds these in int and relies on two's complement wrap-around when a
// degenerate matrix produces INT_MIN; do the same without undefined behaviour.
inline int32_t wrap_add(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b));
}

inline int sat_i16(int v) { return std::min(std::max(v, SHRT_MIN), SHRT_MAX); }

// PaddleX's _get_3rd_point, in float32 as its arrays are.
void third_point(const float a[2], const float b[2], float out[2]) {
  const float dx = a[0] - b[0], dy = a[1] - b[1];
  out[0] = b[0] + -dy;
  out[1] = b[1] + dx;
}

}  // namespace

void affine_from_points(const float src[3][2], const float dst[3][2], double m[6]) {
  // cv::getAffineTransform's 6x6 system, solved by OpenCV's LU (partial
  // pivoting, eliminate with -1/pivot, back-substitute by division).
  double a[6][6] = {}, b[6];
  for (int i = 0; i < 3; ++i) {
    a[2 * i][0] = a[2 * i + 1][3] = src[i][0];
    a[2 * i][1] = a[2 * i + 1][4] = src[i][1];
    a[2 * i][2] = a[2 * i + 1][5] = 1;
    b[2 * i] = dst[i][0];
    b[2 * i + 1] = dst[i][1];
  }
  const double eps = 2.220446049250313e-16 * 100;
  for (int i = 0; i < 6; ++i) {
    int p = i;
    for (int j = i + 1; j < 6; ++j)
      if (std::fabs(a[j][i]) > std::fabs(a[p][i])) p = j;
    if (!(std::fabs(a[p][i]) >= eps)) {
      std::fill(m, m + 6, 0.0);
      return;
    }
    if (p != i) {
      for (int j = i; j < 6; ++j) std::swap(a[i][j], a[p][j]);
      std::swap(b[i], b[p]);
    }
    const double d = -1 / a[i][i];
    for (int j = i + 1; j < 6; ++j) {
      const double alpha = a[j][i] * d;
      for (int k = i + 1; k < 6; ++k) a[j][k] += alpha * a[i][k];
      b[j] += alpha * b[i];
    }
  }
  for (int i = 5; i >= 0; --i) {
    double s = b[i];
    for (int k = i + 1; k < 6; ++k) s -= a[i][k] * b[k];
    b[i] = s / a[i][i];
  }
  std::copy(b, b + 6, m);
}

void invert_affine(const double m[6], double inv[6]) {
  double d = m[0] * m[4] - m[1] * m[3];
  d = d != 0 ? 1. / d : 0;
  const double a11 = m[4] * d, a22 = m[0] * d, a12 = m[1] * -d, a21 = m[3] * -d;
  inv[0] = a11;
  inv[1] = a12;
  inv[2] = -a11 * m[2] - a12 * m[5];
  inv[3] = a21;
  inv[4] = a22;
  inv[5] = -a21 * m[2] - a22 * m[5];
}

void topdown_matrix(double cx, double cy, double sw, double sh, int out_w, int out_h, bool udp,
                    bool inverse, bool f32_inputs, double m[6]) {
  if (!udp) {
    float src[3][2], dst[3][2];
    src[0][0] = static_cast<float>(cx);
    src[0][1] = static_cast<float>(cy);
    src[1][0] = static_cast<float>(cx + 0.0);
    src[1][1] = static_cast<float>(cy + sw * -0.5);
    third_point(src[0], src[1], src[2]);
    const double hw = out_w * 0.5, hh = out_h * 0.5;
    dst[0][0] = static_cast<float>(hw);
    dst[0][1] = static_cast<float>(hh);
    dst[1][0] = static_cast<float>(hw + 0.0);
    dst[1][1] = static_cast<float>(hh + out_w * -0.5);
    third_point(dst[0], dst[1], dst[2]);
    if (inverse)
      affine_from_points(dst, src, m);
    else
      affine_from_points(src, dst, m);
    return;
  }
  // get_warp_matrix with theta = 0. NumPy divides float32 by float32 when the
  // centre/scale arrays are float32; everything else is float64 and then stored
  // in PaddleX's float32 matrix.
  double scale_x, scale_y;
  if (f32_inputs) {
    scale_x = static_cast<float>(out_w - 1) / static_cast<float>(sw);
    scale_y = static_cast<float>(out_h - 1) / static_cast<float>(sh);
  } else {
    scale_x = (out_w - 1.0) / sw;
    scale_y = (out_h - 1.0) / sh;
  }
  double fwd[6];
  fwd[0] = static_cast<float>(scale_x);
  fwd[1] = -0.0;
  fwd[2] = static_cast<float>(scale_x * ((-cx + 0.0) + 0.5 * sw));
  fwd[3] = 0.0;
  fwd[4] = static_cast<float>(scale_y);
  fwd[5] = static_cast<float>(scale_y * ((-cx * 0.0 - cy) + 0.5 * sh));
  if (inverse)
    invert_affine(fwd, m);
  else
    std::copy(fwd, fwd + 6, m);
}

namespace {

template <int CH>
void warp_rows(const ImageU8& img, const double im[6], int out_w, int out_h, const Normalizer& norm,
               float* out) {
  const int W = img.width, H = img.height;
  const int32_t round_delta = (1 << kAbBits) / kTab / 2;
  std::vector<int32_t> adelta(out_w), bdelta(out_w);
  for (int x = 0; x < out_w; ++x) {
    adelta[x] = cv_round(im[0] * x * (1 << kAbBits));
    bdelta[x] = cv_round(im[3] * x * (1 << kAbBits));
  }
  std::vector<uint8_t> line(static_cast<size_t>(out_w) * 3 + 1);
  const size_t plane = static_cast<size_t>(out_w) * out_h;
  const size_t stride = static_cast<size_t>(W) * CH;
  const v4f half = splat(1 << (kRemapBits - 1)), unit = splat(1.f / (1 << kRemapBits));
  for (int y = 0; y < out_h; ++y) {
    const int32_t X0 = wrap_add(cv_round((im[1] * y + im[2]) * (1 << kAbBits)), round_delta);
    const int32_t Y0 = wrap_add(cv_round((im[4] * y + im[5]) * (1 << kAbBits)), round_delta);
    for (int x = 0; x < out_w; ++x) {
      const int32_t X = wrap_add(X0, adelta[x]) >> (kAbBits - kInterBits);
      const int32_t Y = wrap_add(Y0, bdelta[x]) >> (kAbBits - kInterBits);
      const int sx = sat_i16(X >> kInterBits), sy = sat_i16(Y >> kInterBits);
      const int fx = X & (kTab - 1), fy = Y & (kTab - 1);
      // OpenCV's bilinear table is exact at 1/32 steps: weights
      // (32-fy)(32-fx)*32 etc., summing to 2^15. Sums stay below 2^24, so
      // float is exact and the final shift is a floor.
      const float w00 = (kTab - fy) * (kTab - fx) * 32, w01 = (kTab - fy) * fx * 32;
      const float w10 = fy * (kTab - fx) * 32, w11 = fy * fx * 32;
      v4f acc;
      if (static_cast<unsigned>(sx) < static_cast<unsigned>(W - 1) &&
          static_cast<unsigned>(sy) < static_cast<unsigned>(H - 1)) {
        const uint8_t* r0 = img.data + sy * stride;
        const uint8_t* r1 = r0 + stride;
        acc = (load_px<CH>(r0, sx, W) * splat(w00) + load_px<CH>(r0, sx + 1, W) * splat(w01)) +
              (load_px<CH>(r1, sx, W) * splat(w10) + load_px<CH>(r1, sx + 1, W) * splat(w11));
      } else {  // straddles the border: outside taps read the zero border value
        acc = splat(0);
        const float w[4] = {w00, w01, w10, w11};
        for (int t = 0; t < 4; ++t) {
          const int tx = sx + (t & 1), ty = sy + (t >> 1);
          if (tx >= 0 && tx < W && ty >= 0 && ty < H) acc += load_px<CH>(img.data + ty * stride, tx, W) * splat(w[t]);
        }
      }
      const v4f v = (acc + half) * unit;
      for (int c = 0; c < 3; ++c) line[x * 3 + c] = static_cast<uint8_t>(v[c]);
    }
    norm.write_row(line.data(), out_w, out + static_cast<size_t>(y) * out_w, plane);
  }
}

}  // namespace

void warp_crop(const ImageU8& img, const double m[6], int out_w, int out_h, const Normalizer& norm,
               float* out) {
  double im[6];
  invert_affine(m, im);  // warpAffine samples the source through the inverse map
  switch (img.channels) {
    case 1: return warp_rows<1>(img, im, out_w, out_h, norm, out);
    case 3: return warp_rows<3>(img, im, out_w, out_h, norm, out);
    default: return warp_rows<4>(img, im, out_w, out_h, norm, out);
  }
}

}  // namespace posepipe
