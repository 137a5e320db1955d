#include "heatmap.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "affine.h"
#include "pixels.h"

namespace posepipe {

std::vector<double> gaussian_kernel(int ksize) {
  // OpenCV's fixed small kernels (sigma <= 0); larger sizes use its sigma rule.
  static const double small[3][7] = {
      {0.25, 0.5, 0.25},
      {0.0625, 0.25, 0.375, 0.25, 0.0625},
      {0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125}};
  std::vector<double> k(ksize);
  if (ksize <= 7) {
    for (int i = 0; i < ksize; ++i) k[i] = small[ksize / 2 - 1][i];
    return k;
  }
  const double sigma = ((ksize - 1) * 0.5 - 1) * 0.3 + 0.8;
  const double scale2 = -0.5 / (sigma * sigma);
  double sum = 0;
  for (int i = 0; i < ksize; ++i) {
    const double x = i - (ksize - 1) * 0.5;
    k[i] = std::exp(scale2 * x * x);
    sum += k[i];
  }
  for (double& v : k) v *= 1. / sum;
  return k;
}

float numpy_logf(float x) {
  if (std::isnan(x)) return std::numeric_limits<float>::quiet_NaN();
  if (x < 0) return -std::numeric_limits<float>::quiet_NaN();
  if (x == 0) return -std::numeric_limits<float>::infinity();
  if (std::isinf(x)) return x;
  // NumPy's coefficients (a 5/5 rational minimax fit of log(1 + m)).
  const float p[6] = {0.0f, 9.999999999999998702752e-01f, 2.112677543073053063722e+00f,
                      1.480000633576506585156e+00f, 3.808837741388407920751e-01f,
                      2.589979117907922693523e-02f};
  const float q[6] = {1.0f, 2.612677543073109236779e+00f, 2.453006071784736363091e+00f,
                      9.864942958519418960339e-01f, 1.546476374983906719538e-01f,
                      5.875095403124574342950e-03f};
  int e;
  float m = std::frexp(x, &e);  // x = m * 2^e, m in [0.5, 1)
  float ex = static_cast<float>(e);
  if (m <= 0.707106781186547524400844362104849039f) {
    m = m + m;
    ex = ex - 1.0f;
  }
  m = m - 1.0f;
  float num = std::fma(p[5], m, p[4]), den = std::fma(q[5], m, q[4]);
  for (int i = 3; i >= 0; --i) {
    num = std::fma(num, m, p[i]);
    den = std::fma(den, m, q[i]);
  }
  return std::fma(ex, 0.693147180559945309417232121458176568f, num / den);
}

namespace {

// np.maximum / np.max semantics: NaN wins.
inline float nan_max(float a, float b) {
  if (std::isnan(a)) return a;
  if (std::isnan(b)) return b;
  return a > b ? a : b;
}

typedef int32_t v4i __attribute__((vector_size(16)));

// np.max over p[0..n): the maximum, or NaN when any value is NaN.
float np_max(const float* p, int n) {
  v4f m = splat(-std::numeric_limits<float>::infinity());
  v4i nan = {0, 0, 0, 0};
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    v4f v;
    std::memcpy(&v, p + i, sizeof(v));
    nan |= v != v;
    m = v > m ? v : m;
  }
  float mx = std::max(std::max(m[0], m[1]), std::max(m[2], m[3]));
  bool any_nan = nan[0] | nan[1] | nan[2] | nan[3];
  for (; i < n; ++i) {
    any_nan |= std::isnan(p[i]);
    mx = p[i] > mx ? p[i] : mx;
  }
  return any_nan ? std::numeric_limits<float>::quiet_NaN() : mx;
}

// The blurred map exactly as PaddleX's gaussian_blur builds it: the heatmap
// zero-padded by k/2, cv2.GaussianBlur'd in float64 (row pass summed left to
// right, symmetric column pass centre first), cropped and stored as float32.
// Returns the map's maximum as np.max does (NaN if any value is NaN).
// K is the kernel size when known at compile time (0: runtime g.size()).
template <int K>
float dark_blur(const float* hm, int H, int W, const std::vector<double>& gv, std::vector<double>& rows,
                std::vector<double>& padded, std::vector<float>& out) {
  const int k = K ? K : static_cast<int>(gv.size()), b = k / 2;
  const double* g = gv.data();
  rows.assign(static_cast<size_t>(H + 2 * b) * W, 0.0);  // the zero padding rows stay 0
  padded.assign(W + 2 * b, 0.0);
  for (int y = 0; y < H; ++y) {
    for (int x = 0; x < W; ++x) padded[b + x] = hm[static_cast<size_t>(y) * W + x];
    const double* p = padded.data();
    double* __restrict r = &rows[static_cast<size_t>(y + b) * W];
    for (int x = 0; x < W; ++x) {
      double s = g[0] * p[x];
      for (int t = 1; t < k; ++t) s += g[t] * p[x + t];
      r[x] = s;
    }
  }
  out.resize(static_cast<size_t>(H) * W);
  for (int y = 0; y < H; ++y) {
    const double* c = &rows[static_cast<size_t>(y + b) * W];
    float* __restrict o = &out[static_cast<size_t>(y) * W];
    for (int x = 0; x < W; ++x) {
      double s = g[b] * c[x] + 0.0;
      for (int t = 1; t <= b; ++t) s += g[b + t] * (c[x + t * W] + c[x - t * W]);
      o[x] = static_cast<float>(s);
    }
  }
  return np_max(out.data(), H * W);
}

// numpy.linalg.inv of the float32 Hessian: LAPACK's partially pivoted LU in
// float64, rounded back to float32. False when LAPACK would find it singular.
bool inverse_2x2(float a, float b, float c, float d, float inv[4]) {
  double m[2][2] = {{a, b}, {c, d}};
  int perm[2] = {0, 1};
  if (std::fabs(m[1][0]) > std::fabs(m[0][0])) {
    std::swap(m[0][0], m[1][0]);
    std::swap(m[0][1], m[1][1]);
    std::swap(perm[0], perm[1]);
  }
  if (m[0][0] == 0) return false;
  const double l = m[1][0] * (1.0 / m[0][0]);
  const double u11 = m[1][1] - l * m[0][1];
  if (u11 == 0) return false;
  for (int j = 0; j < 2; ++j) {
    const double y0 = perm[0] == j ? 1.0 : 0.0;
    const double y1 = (perm[1] == j ? 1.0 : 0.0) - l * y0;
    const double x1 = y1 / u11;
    const double x0 = (y0 - m[0][1] * x1) / m[0][0];
    inv[j] = static_cast<float>(x0);
    inv[2 + j] = static_cast<float>(x1);
  }
  return true;
}

}  // namespace

void decode_person(const float* heatmaps, int K, int H, int W, double cx, double cy, double sw,
                   double sh, bool use_dark, const std::vector<double>& gauss, float* out) {
  double back[6];  // heatmap -> image, as transform_preds builds it (never UDP)
  topdown_matrix(cx, cy, sw, sh, W, H, false, true, false, back);
  std::vector<float> blurred;
  std::vector<double> rows, padded;
  const int n = H * W;
  for (int k = 0; k < K; ++k) {
    const float* hm = heatmaps + static_cast<size_t>(k) * n;
    // np.amax / np.argmax: the maximum and its first index, or NaN and the first NaN.
    const float maxval = np_max(hm, n);
    int idx = 0;
    if (std::isnan(maxval))
      while (!std::isnan(hm[idx])) ++idx;
    else
      while (hm[idx] != maxval) ++idx;
    float px = std::fmod(static_cast<float>(idx), static_cast<float>(W));
    float py = std::floor(static_cast<float>(idx) / static_cast<float>(W));
    if (!(maxval > 0)) px = py = 0;

    if (use_dark) {
      const int ix = static_cast<int>(px), iy = static_cast<int>(py);
      if (1 < ix && ix < W - 2 && 1 < iy && iy < H - 2) {
        const float bmax = gauss.size() == 3 ? dark_blur<3>(hm, H, W, gauss, rows, padded, blurred)
                                             : dark_blur<0>(hm, H, W, gauss, rows, padded, blurred);
        const float ratio = maxval / bmax;
        auto L = [&](int y, int x) {
          return numpy_logf(nan_max(blurred[static_cast<size_t>(y) * W + x] * ratio, 1e-10f));
        };
        const float c = L(iy, ix);
        const float dx = 0.5f * (L(iy, ix + 1) - L(iy, ix - 1));
        const float dy = 0.5f * (L(iy + 1, ix) - L(iy - 1, ix));
        const float dxx = 0.25f * ((L(iy, ix + 2) - 2 * c) + L(iy, ix - 2));
        const float dxy =
            0.25f * (((L(iy + 1, ix + 1) - L(iy - 1, ix + 1)) - L(iy + 1, ix - 1)) + L(iy - 1, ix - 1));
        const float dyy = 0.25f * ((L(iy + 2, ix) - 2 * c) + L(iy - 2, ix));
        float inv[4];
        // PaddleX skips the step only when the float32 determinant is exactly 0
        // (a NaN determinant still steps); where NumPy would raise on an exactly
        // singular float64 LU we skip too.
        if (dxx * dyy - dxy * dxy != 0 && inverse_2x2(dxx, dxy, dxy, dyy, inv)) {
          px += -inv[0] * dx + -inv[1] * dy;
          py += -inv[2] * dx + -inv[3] * dy;
        }
      }
    } else {
      const int ix = static_cast<int>(std::floor(px + 0.5f)), iy = static_cast<int>(std::floor(py + 0.5f));
      if (1 < ix && ix < W - 1 && 1 < iy && iy < H - 1) {
        auto sign = [](float v) { return std::isnan(v) ? v : static_cast<float>((v > 0) - (v < 0)); };
        px += sign(hm[iy * W + ix + 1] - hm[iy * W + ix - 1]) * 0.25f;
        py += sign(hm[(iy + 1) * W + ix] - hm[(iy - 1) * W + ix]) * 0.25f;
      }
    }
    const double x = px, y = py;
    out[3 * k + 0] = static_cast<float>(back[0] * x + back[1] * y + back[2]);
    out[3 * k + 1] = static_cast<float>(back[3] * x + back[4] * y + back[5]);
    out[3 * k + 2] = maxval;
  }
}

void flip_back_person(const float* flipped, int K, int H, int W, const int* perm, bool shift,
                      const float* base, float* out) {
  const size_t n = static_cast<size_t>(H) * W;
  for (int k = 0; k < K; ++k) {
    const float* src = flipped + perm[k] * n;
    float* dst = out + k * n;
    const float* b = base ? base + k * n : nullptr;
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        // mirrored[x] = src[W-1-x]; shifted[x] = mirrored[x-1], column 0 kept.
        const int sx = shift ? (x == 0 ? W - 1 : W - x) : W - 1 - x;
        const float v = src[static_cast<size_t>(y) * W + sx];
        const size_t i = static_cast<size_t>(y) * W + x;
        dst[i] = b ? (b[i] + v) * 0.5f : v;
      }
  }
}

}  // namespace posepipe
