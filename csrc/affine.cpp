#include "affine.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

// OpenCV's bilinear weights are exact at 1/32 steps: tap (i, j) of the 2x2
// neighbourhood gets wy[i] * wx[j] * 32 out of 2^15, with wx = (32 - fx, fx)
// and wy = (32 - fy, fy), and the pixel is (sum + 2^14) >> 15. The common
// factor 32 cancels exactly: (sum' + 2^9) >> 10 with weights wy[i] * wx[j] of
// at most 1024, which fit the int16 lanes of a multiply-add.
constexpr int kWeightBits = 2 * kInterBits;

// Where one output pixel samples: the top-left tap (saturated to int16 as
// OpenCV stores it) and the 1/32-pixel fractions.
struct Sample {
  int sx, sy, fx, fy;
};

// Whether all four taps of a sample at (sx, sy) lie inside a W x H image.
inline bool taps_inside(int sx, int sy, int W, int H) {
  return (static_cast<unsigned>(sx) < static_cast<unsigned>(W - 1)) &
         (static_cast<unsigned>(sy) < static_cast<unsigned>(H - 1));
}

// Any pixel, taps outside the image reading the zero border; the first three
// channels (grey replicated) as 8-bit values. Used where the 2x2 taps straddle
// the border, and for every pixel where there is no SIMD path (hence the
// interior shortcut: the same sum, taken rows first).
template <int CH>
void sample_with_border(const ImageU8& img, const Sample& s, int v[3]) {
  const int W = img.width, H = img.height;
  const int wx[2] = {kTab - s.fx, s.fx}, wy[2] = {kTab - s.fy, s.fy};
  if (taps_inside(s.sx, s.sy, W, H)) {
    const size_t stride = static_cast<size_t>(W) * CH;
    const uint8_t* r0 = img.data + s.sy * stride + s.sx * CH;
    const uint8_t* r1 = r0 + stride;
    for (int c = 0; c < 3; ++c) {
      const int k = CH == 1 ? 0 : c;
      const int top = r0[k] * wx[0] + r0[CH + k] * wx[1], bottom = r1[k] * wx[0] + r1[CH + k] * wx[1];
      v[c] = (top * wy[0] + bottom * wy[1] + (1 << (kWeightBits - 1))) >> kWeightBits;
    }
    return;
  }
  int sum[3] = {0, 0, 0};
  for (int i = 0; i < 2; ++i) {
    const int ty = s.sy + i;
    if (ty < 0 || ty >= H) continue;
    for (int j = 0; j < 2; ++j) {
      const int tx = s.sx + j;
      if (tx < 0 || tx >= W) continue;
      const uint8_t* px = img.data + (static_cast<size_t>(ty) * W + tx) * CH;
      const int w = wy[i] * wx[j];
      for (int c = 0; c < 3; ++c) sum[c] += px[CH == 1 ? 0 : c] * w;
    }
  }
  for (int c = 0; c < 3; ++c) v[c] = (sum[c] + (1 << (kWeightBits - 1))) >> kWeightBits;
}

#if defined(__SSE2__)
// The bytes of one pixel in the low 32 bits (grey replicated to 4 lanes). A
// 3-channel pixel is read with a 4-byte load, except the image's very last
// pixel, whose 4th byte would lie past the buffer.
template <int CH>
inline __m128i load_pixel(const uint8_t* px, bool last_of_image) {
  uint32_t bytes;
  if (CH == 1)
    bytes = px[0] * 0x01010101u;
  else if (CH == 4 || !last_of_image)
    std::memcpy(&bytes, px, 4);
  else
    bytes = px[0] | px[1] << 8 | px[2] << 16;
  return _mm_cvtsi32_si128(static_cast<int>(bytes));
}

// A pixel whose four taps are all inside the image, normalized: lanes hold the
// source channels (the 4th is junk). Integer multiply-adds give OpenCV's exact
// sums; the normalization is the float32 multiply and add the LUT holds.
template <int CH>
inline __m128 interior_pixel(const ImageU8& img, const Sample& s, __m128 alpha, __m128 beta) {
  const size_t stride = static_cast<size_t>(img.width) * CH;
  const uint8_t* r0 = img.data + s.sy * stride + s.sx * CH;
  const uint8_t* r1 = r0 + stride;
  const bool last = s.sy + 2 == img.height && s.sx + 2 == img.width;  // r1's right tap ends the image
  const __m128i zero = _mm_setzero_si128();
  // int16 (top, bottom) pairs per channel: left taps and right taps.
  const __m128i left = _mm_unpacklo_epi8(_mm_unpacklo_epi8(load_pixel<CH>(r0, false), load_pixel<CH>(r1, false)), zero);
  const __m128i right =
      _mm_unpacklo_epi8(_mm_unpacklo_epi8(load_pixel<CH>(r0 + CH, false), load_pixel<CH>(r1 + CH, last)), zero);
  // Matching int16 (top, bottom) weight pairs: wx * (32 - fy) low, wx * fy high;
  // each at most 1024, so the packed product carries nothing across halves.
  const int32_t wy = (kTab - s.fy) | s.fy << 16;
  const __m128i sum = _mm_add_epi32(_mm_madd_epi16(left, _mm_set1_epi32((kTab - s.fx) * wy)),
                                    _mm_madd_epi16(right, _mm_set1_epi32(s.fx * wy)));
  const __m128i v = _mm_srai_epi32(_mm_add_epi32(sum, _mm_set1_epi32(1 << (kWeightBits - 1))), kWeightBits);
  return _mm_add_ps(_mm_mul_ps(_mm_cvtepi32_ps(v), alpha), beta);
}
#endif

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
  // The current row's samples and whether all four taps of each lie inside
  // the image, computed in one (vectorizable) pass before the sampling.
  std::vector<int32_t> sxs(out_w), sys(out_w), fxs(out_w), fys(out_w);
  std::vector<uint8_t> inside(out_w);
  const auto sample = [&](int x) { return Sample{sxs[x], sys[x], fxs[x], fys[x]}; };
  // Channel c of the source goes to output plane source_channel(c) (the
  // mapping is its own inverse).
  int plane_of[3];
  for (int c = 0; c < 3; ++c) plane_of[c] = norm.source_channel(c);
#if defined(__SSE2__)
  alignas(16) float a4[4] = {0, 0, 0, 0}, b4[4] = {0, 0, 0, 0};
  for (int c = 0; c < 3; ++c) a4[c] = norm.alpha[plane_of[c]], b4[c] = norm.beta[plane_of[c]];
  const __m128 alpha = _mm_load_ps(a4), beta = _mm_load_ps(b4);
#endif
  const size_t plane = static_cast<size_t>(out_w) * out_h;
  for (int y = 0; y < out_h; ++y) {
    const int32_t X0 = wrap_add(cv_round((im[1] * y + im[2]) * (1 << kAbBits)), round_delta);
    const int32_t Y0 = wrap_add(cv_round((im[4] * y + im[5]) * (1 << kAbBits)), round_delta);
    for (int x = 0; x < out_w; ++x) {
      const int32_t X = wrap_add(X0, adelta[x]) >> (kAbBits - kInterBits);
      const int32_t Y = wrap_add(Y0, bdelta[x]) >> (kAbBits - kInterBits);
      sxs[x] = sat_i16(X >> kInterBits), sys[x] = sat_i16(Y >> kInterBits);
      fxs[x] = X & (kTab - 1), fys[x] = Y & (kTab - 1);
      inside[x] = taps_inside(sxs[x], sys[x], W, H);
    }
    float* row = out + static_cast<size_t>(y) * out_w;
    float* lane_out[3] = {row + plane_of[0] * plane, row + plane_of[1] * plane, row + plane_of[2] * plane};
    // The row alternates between runs of interior pixels (all taps inside)
    // and border pixels; OpenCV splits it the same way.
    for (int x = 0; x < out_w;) {
      const void* stop = std::memchr(inside.data() + x, 0, out_w - x);  // the run's end
      const int end = stop ? static_cast<int>(static_cast<const uint8_t*>(stop) - inside.data()) : out_w;
#if defined(__SSE2__)
      for (; x + 4 <= end; x += 4) {  // 4 pixels, transposed into 3 plane stores
        __m128 p0 = interior_pixel<CH>(img, sample(x), alpha, beta);
        __m128 p1 = interior_pixel<CH>(img, sample(x + 1), alpha, beta);
        __m128 p2 = interior_pixel<CH>(img, sample(x + 2), alpha, beta);
        __m128 p3 = interior_pixel<CH>(img, sample(x + 3), alpha, beta);
        _MM_TRANSPOSE4_PS(p0, p1, p2, p3);
        _mm_storeu_ps(lane_out[0] + x, p0);
        _mm_storeu_ps(lane_out[1] + x, p1);
        _mm_storeu_ps(lane_out[2] + x, p2);
      }
      for (; x < end; ++x) {
        alignas(16) float v[4];
        _mm_store_ps(v, interior_pixel<CH>(img, sample(x), alpha, beta));
        for (int c = 0; c < 3; ++c) lane_out[c][x] = v[c];
      }
#endif
      // Without SSE2 the interior run lands here too; then the border run.
      for (; x < out_w && (x < end || !inside[x]); ++x) {
        int v[3];
        sample_with_border<CH>(img, sample(x), v);
        for (int c = 0; c < 3; ++c) lane_out[c][x] = norm.lut[plane_of[c]][v[c]];
      }
    }
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
