#include "preprocess.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "pixels.h"

namespace posepipe {

Normalizer::Normalizer(const double mean[3], const double std[3], bool is_scale, bool rgb)
    : to_rgb(rgb) {
  const double scale = is_scale ? 1.0 / 255.0 : 1.0;
  for (int c = 0; c < 3; ++c) {
    const float alpha = static_cast<float>(scale / std[c]), beta = static_cast<float>(-mean[c] / std[c]);
    for (int v = 0; v < 256; ++v) {
      const float scaled = static_cast<float>(v) * alpha;
      lut[c][v] = scaled + beta;
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

void keep_ratio_size(int h, int w, int target_h, int target_w, int* rh, int* rw) {
  const double scale = std::min(static_cast<double>(std::max(target_h, target_w)) / std::max(h, w),
                                static_cast<double>(std::min(target_h, target_w)) / std::min(h, w));
  // std::nearbyint rounds half to even under the default rounding mode, as Python's round().
  *rh = std::max(1, static_cast<int>(std::nearbyint(h * scale)));
  *rw = std::max(1, static_cast<int>(std::nearbyint(w * scale)));
}

namespace {

constexpr int kCoefBits = 11;  // OpenCV's INTER_RESIZE_COEF_BITS
constexpr float kCoefScale = 1 << kCoefBits;

inline int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }
inline uint8_t sat_u8(int v) { return static_cast<uint8_t>(clampi(v, 0, 255)); }
// lrint rounds half to even like OpenCV's cvRound; with -fno-math-errno it is a single instruction.
inline int round_i(float v) { return static_cast<int>(std::lrint(v)); }
// The same rounding for |v| < 2^22 by the 1.5 * 2^23 trick, then saturation,
// all in float so the compiler can vectorize the row loops.
inline uint8_t round_u8(float v) {
  const float r = (v + 12582912.f) - 12582912.f;
  return static_cast<uint8_t>(static_cast<int>(std::min(std::max(r, 0.f), 255.f)));
}
inline int16_t sat_i16(int v) { return static_cast<int16_t>(clampi(v, SHRT_MIN, SHRT_MAX)); }
// OpenCV's saturate_cast<short>(float): round half to even, then saturate.
inline int16_t coef_short(float c) {
  return sat_i16(round_i(c * kCoefScale));
}

// OpenCV's interpolateCubic (A = -0.75), in float as OpenCV computes it.
void cubic_coeffs_f32(float x, float c[4]) {
  const float A = -0.75f;
  c[0] = ((A * (x + 1) - 5 * A) * (x + 1) + 8 * A) * (x + 1) - 4 * A;
  c[1] = ((A + 2) * x - (A + 3)) * x * x + 1;
  c[2] = ((A + 2) * (1 - x) - (A + 3)) * (1 - x) * (1 - x) + 1;
  c[3] = 1.f - c[0] - c[1] - c[2];
}

// The same Keys kernel evaluated in double at each tap distance; IPP behaves as
// if it used exact weights rounded once to float.
double keys(double t) {
  const double A = -0.75;
  t = std::fabs(t);
  if (t <= 1) return ((A + 2) * t - (A + 3)) * t * t + 1;
  if (t < 2) return ((A * t - 5 * A) * t + 8 * A) * t - 4 * A;
  return 0;
}

// One axis of a separable resampler: output i reads taps idx[i*k + t] with
// weights wf; the OpenCV paths also keep their fixed-point weights in wi (wf
// then holds the same integers).
struct Axis {
  int k = 0;
  std::vector<int> idx;
  std::vector<int16_t> wi;
  std::vector<float> wf;
  void fixed(float c) {
    wi.push_back(coef_short(c));
    wf.push_back(wi.back());
  }
};

// Bilinear taps as cv::resize builds them. Along x OpenCV pins the fraction to 0
// outside the image, along y it only clamps the rows; `area_mode` is INTER_AREA
// when upscaling, which OpenCV emulates with bilinear taps of its own fractions.
Axis linear_axis(int ssize, int dsize, bool area_mode, bool is_x) {
  Axis a;
  a.k = 2;
  const double inv_scale = static_cast<double>(dsize) / ssize, scale = 1.0 / inv_scale;
  for (int d = 0; d < dsize; ++d) {
    int s;
    float f;
    if (!area_mode) {
      f = static_cast<float>((d + 0.5) * scale - 0.5);
      s = static_cast<int>(std::floor(f));
      f -= static_cast<float>(s);
    } else {
      s = static_cast<int>(std::floor(d * scale));
      f = static_cast<float>((d + 1) - (s + 1) * inv_scale);
      f = f <= 0 ? 0.f : f - std::floor(f);
    }
    if (is_x && s < 0) s = 0, f = 0;
    if (is_x && s >= ssize - 1) s = ssize - 1, f = 0;
    a.idx.push_back(clampi(s, 0, ssize - 1));
    a.idx.push_back(clampi(s + 1, 0, ssize - 1));
    a.fixed(1.f - f);
    a.fixed(f);
  }
  return a;
}

Axis cubic_axis(int ssize, int dsize, CubicImpl impl) {
  Axis a;
  a.k = 4;
  const double scale = impl == CubicImpl::kOpenCV ? 1.0 / (static_cast<double>(dsize) / ssize)
                                                  : static_cast<double>(ssize) / dsize;
  for (int d = 0; d < dsize; ++d) {
    int s;
    if (impl == CubicImpl::kOpenCV) {
      float f = static_cast<float>((d + 0.5) * scale - 0.5);
      s = static_cast<int>(std::floor(f));
      f -= static_cast<float>(s);
      float c[4];
      cubic_coeffs_f32(f, c);
      for (float v : c) a.fixed(v);
    } else {
      const double pos = (d + 0.5) * scale - 0.5;
      s = static_cast<int>(std::floor(pos));
      const double f = pos - s;
      for (double t : {f + 1, f, 1 - f, 2 - f}) a.wf.push_back(static_cast<float>(keys(t)));
    }
    for (int t = -1; t < 3; ++t) a.idx.push_back(clampi(s + t, 0, ssize - 1));
  }
  return a;
}

// INTER_AREA decimation table (OpenCV's computeResizeAreaTab): output `di`
// gathers source `si` with weight `alpha`, entries in OpenCV's order.
struct AreaTap {
  int di, si;
  float alpha;
};

std::vector<AreaTap> area_taps(int ssize, int dsize, double scale) {
  std::vector<AreaTap> tab;
  for (int dx = 0; dx < dsize; ++dx) {
    const double fsx1 = dx * scale, fsx2 = fsx1 + scale;
    const double cell = std::min(scale, ssize - fsx1);
    int sx1 = static_cast<int>(std::ceil(fsx1)), sx2 = static_cast<int>(std::floor(fsx2));
    sx2 = std::min(sx2, ssize - 1);
    sx1 = std::min(sx1, sx2);
    if (sx1 - fsx1 > 1e-3) tab.push_back({dx, sx1 - 1, static_cast<float>((sx1 - fsx1) / cell)});
    for (int sx = sx1; sx < sx2; ++sx) tab.push_back({dx, sx, static_cast<float>(1.0 / cell)});
    if (fsx2 - sx2 > 1e-3)
      tab.push_back({dx, sx2, static_cast<float>(std::min(std::min(fsx2 - sx2, 1.), cell) / cell)});
  }
  return tab;
}

// Horizontal rows of the source computed on demand. A few slots suffice because
// output rows only move forward through the source.
class RowCache {
 public:
  RowCache(int slots, int width)
      : width_(width), tags_(slots, INT_MIN), data_(static_cast<size_t>(slots) * width) {}

  template <class Fill>
  void fetch(const int* rows, int k, const float** out, Fill&& fill) {
    const int slots = static_cast<int>(tags_.size());
    for (int t = 0; t < k; ++t) {
      int slot = static_cast<int>(std::find(tags_.begin(), tags_.end(), rows[t]) - tags_.begin());
      if (slot == slots) {
        for (slot = 0; slot < slots; ++slot)
          if (std::find(rows, rows + k, tags_[slot]) == rows + k) break;
        fill(rows[t], &data_[static_cast<size_t>(slot) * width_]);
        tags_[slot] = rows[t];
      }
      out[t] = &data_[static_cast<size_t>(slot) * width_];
    }
  }

 private:
  int width_;
  std::vector<int> tags_;
  std::vector<float> data_;
};

// The first three channels of pixel p of a CH-channel row (grey replicated).
template <int CH>
inline void load3(const uint8_t* row, int p, int v[3]) {
  const uint8_t* q = row + p * CH;
  v[0] = q[0];
  v[1] = q[CH == 1 ? 0 : 1];
  v[2] = q[CH == 1 ? 0 : 2];
}

// Produces rows of the resized 3-channel image (source channel order).
class Resampler {
 public:
  Resampler(const ImageU8& img, int rh, int rw, int interp, CubicImpl cubic, bool to_rgb)
      : img_(img), rw_(rw), to_rgb_(to_rgb) {
    const int H = img.height, W = img.width;
    if (rh == H && rw == W) {
      mode_ = Mode::kCopy;  // cv::resize copies when the size does not change
      return;
    }
    const double scale_x = 1.0 / (static_cast<double>(rw) / W);
    const double scale_y = 1.0 / (static_cast<double>(rh) / H);
    const int iscale_x = static_cast<int>(std::nearbyint(scale_x));
    const int iscale_y = static_cast<int>(std::nearbyint(scale_y));
    const bool area_fast = std::fabs(scale_x - iscale_x) < 2.220446049250313e-16 &&
                           std::fabs(scale_y - iscale_y) < 2.220446049250313e-16;
    // OpenCV turns an exact 2x bilinear downscale into its (rounding) 2x2 average.
    if (interp == kLinear && area_fast && iscale_x == 2 && iscale_y == 2) interp = kArea;

    if (interp == kNearest) {
      mode_ = Mode::kNearest;
      for (int x = 0; x < rw; ++x)
        xs_.idx.push_back(std::min(static_cast<int>(std::floor(x * scale_x)), W - 1));
      for (int y = 0; y < rh; ++y)
        ys_.idx.push_back(std::min(static_cast<int>(std::floor(y * scale_y)), H - 1));
    } else if (interp == kArea && scale_x >= 1 && scale_y >= 1) {
      if (area_fast) {
        mode_ = Mode::kAreaFast;
        ax_ = iscale_x, ay_ = iscale_y;
      } else {
        mode_ = Mode::kArea;
        xtaps_ = area_taps(W, rw, scale_x);
        ytaps_ = area_taps(H, rh, scale_y);
        yfirst_.assign(rh + 1, static_cast<int>(ytaps_.size()));
        for (int j = static_cast<int>(ytaps_.size()) - 1; j >= 0; --j) yfirst_[ytaps_[j].di] = j;
        hf_.resize(static_cast<size_t>(rw) * 3);
        acc_.resize(static_cast<size_t>(rw) * 3);
      }
    } else if (interp == kLinear || interp == kArea) {
      mode_ = Mode::kLinear;
      xs_ = linear_axis(W, rw, interp == kArea, true);
      ys_ = linear_axis(H, rh, interp == kArea, false);
      cache_.reset(new RowCache(2, rw * 3 + 1));
    } else if (cubic == CubicImpl::kIPP && W >= 4 && H >= 4) {
      mode_ = Mode::kCubicIPP;
      xs_ = cubic_axis(W, rw, CubicImpl::kIPP);
      ys_ = cubic_axis(H, rh, CubicImpl::kIPP);
      cache_.reset(new RowCache(4, rw * 3 + 1));
    } else {
      mode_ = Mode::kCubic;
      xs_ = cubic_axis(W, rw, CubicImpl::kOpenCV);
      ys_ = cubic_axis(H, rh, CubicImpl::kOpenCV);
      cache_.reset(new RowCache(4, rw * 3 + 1));
    }
  }

  // Writes resized row y (rw * 3 bytes).
  void row(int y, uint8_t* dst) {
    switch (img_.channels) {
      case 1: return row_ch<1>(y, dst);
      case 3: return row_ch<3>(y, dst);
      default: return row_ch<4>(y, dst);
    }
  }

 private:
  enum class Mode { kCopy, kNearest, kAreaFast, kArea, kLinear, kCubic, kCubicIPP };

  const uint8_t* src_row(int y) const {
    return img_.data + static_cast<size_t>(y) * img_.width * img_.channels;
  }

  template <int CH>
  void row_ch(int y, uint8_t* dst) {
    switch (mode_) {
      case Mode::kCopy: return gather_row<CH>(y, nullptr, dst);
      case Mode::kNearest: return gather_row<CH>(ys_.idx[y], xs_.idx.data(), dst);
      case Mode::kAreaFast: return area_fast_row<CH>(y, dst);
      case Mode::kArea: return area_row<CH>(y, dst);
      case Mode::kLinear: return linear_row<CH>(y, dst);
      case Mode::kCubic: return cubic_row<CH>(y, dst);
      case Mode::kCubicIPP: return cubic_ipp_row<CH>(y, dst);
    }
  }

  template <int CH>
  void gather_row(int sy, const int* xidx, uint8_t* dst) const {
    const uint8_t* s = src_row(sy);
    int v[3];
    for (int x = 0, n = rw_; x < n; ++x) {
      load3<CH>(s, xidx ? xidx[x] : x, v);
      for (int c = 0; c < 3; ++c) dst[x * 3 + c] = static_cast<uint8_t>(v[c]);
    }
  }

  template <int CH>
  void area_fast_row(int y, uint8_t* dst) const {
    const int area = ax_ * ay_;
    const float inv_area = 1.f / area;
    for (int x = 0, n = rw_; x < n; ++x) {
      int sum[3] = {0, 0, 0}, v[3];
      for (int dy = 0; dy < ay_; ++dy) {
        const uint8_t* s = src_row(y * ay_ + dy);
        for (int dx = 0; dx < ax_; ++dx) {
          load3<CH>(s, x * ax_ + dx, v);
          for (int c = 0; c < 3; ++c) sum[c] += v[c];
        }
      }
      // OpenCV's 2x2 path rounds half up in integers; the others round the float mean.
      for (int c = 0; c < 3; ++c)
        dst[x * 3 + c] = ax_ == 2 && ay_ == 2 ? static_cast<uint8_t>((sum[c] + 2) >> 2)
                                              : round_u8(static_cast<float>(sum[c]) * inv_area);
    }
  }

  template <int CH>
  void area_row(int y, uint8_t* dst) {
    int v[3];
    for (int j = yfirst_[y]; j < static_cast<int>(ytaps_.size()) && ytaps_[j].di == y; ++j) {
      const uint8_t* s = src_row(ytaps_[j].si);
      std::fill(hf_.begin(), hf_.end(), 0.f);
      for (const AreaTap& t : xtaps_) {
        load3<CH>(s, t.si, v);
        for (int c = 0; c < 3; ++c) hf_[t.di * 3 + c] += v[c] * t.alpha;
      }
      const float beta = ytaps_[j].alpha;
      if (j == yfirst_[y])
        for (size_t i = 0; i < hf_.size(); ++i) acc_[i] = beta * hf_[i];
      else
        for (size_t i = 0; i < hf_.size(); ++i) acc_[i] += beta * hf_[i];
    }
    for (size_t i = 0; i < acc_.size(); ++i) dst[i] = round_u8(acc_[i]);
  }

  // Horizontal pass of source row sy into d (3 floats per pixel, plus one
  // float of slack that the 4-lane stores spill into). OpenCV's fixed-point
  // sums are integers below 2^24, so float is exact for them too; IPP's float
  // sums are paired as (t0 + t1) + (t2 + t3).
  template <int CH, int K>
  void hpass(int sy, float* d) const {
    const uint8_t* s = src_row(sy);
    const int W = img_.width;
    const int* id = xs_.idx.data();
    const float* w = xs_.wf.data();
    for (int x = 0; x < rw_; ++x, id += K, w += K) {
      v4f acc = load_px<CH>(s, id[0], W) * splat(w[0]) + load_px<CH>(s, id[1], W) * splat(w[1]);
      if (K == 4)
        acc = acc + (load_px<CH>(s, id[2], W) * splat(w[2]) + load_px<CH>(s, id[3], W) * splat(w[3]));
      std::memcpy(d + x * 3, &acc, sizeof(acc));
    }
  }

  // The horizontally filtered source rows that output row y blends.
  template <int CH, int K>
  void fetch(int y, const float** rows) {
    cache_->fetch(&ys_.idx[static_cast<size_t>(y) * K], K, rows, [this](int sy, float* d) { hpass<CH, K>(sy, d); });
  }

  template <int CH>
  void linear_row(int y, uint8_t* dst) {
    const float* r[2];
    fetch<CH, 2>(y, r);
    const int b0 = ys_.wi[2 * y], b1 = ys_.wi[2 * y + 1];
    const float* __restrict r0 = r[0];
    const float* __restrict r1 = r[1];
    // OpenCV's SIMD vertical pass (which covers every pixel here): drop 4 bits,
    // keep the high 16 bits of each product, then round off the last 2 bits.
    // Its int16 saturations never bite: weights are >= 0 and sum to ~2048.
    uint8_t* __restrict out = dst;
    const int width = rw_ * 3;
    for (int i = 0; i < width; ++i) {
      const int v = (((static_cast<int>(r0[i]) >> 4) * b0) >> 16) + (((static_cast<int>(r1[i]) >> 4) * b1) >> 16);
      out[i] = static_cast<uint8_t>(std::min((v + 2) >> 2, 255));
    }
  }

  template <int CH>
  void cubic_row(int y, uint8_t* dst) {
    const float* r[4];
    fetch<CH, 4>(y, r);
    const int16_t* b = &ys_.wi[static_cast<size_t>(y) * 4];
    const float scale = 1.f / (kCoefScale * kCoefScale);
    const float b0 = b[0] * scale, b1 = b[1] * scale, b2 = b[2] * scale, b3 = b[3] * scale;
    const int width = rw_ * 3;
    const float *__restrict r0 = r[0], *__restrict r1 = r[1], *__restrict r2 = r[2], *__restrict r3 = r[3];
    uint8_t* __restrict out = dst;
    for (int i = 0; i < width; ++i) {
      const float s0 = r0[i], s1 = r1[i], s2 = r2[i], s3 = r3[i];
#if defined(__aarch64__)
      // OpenCV's v_muladd is a fused multiply-add on NEON.
      const float v = std::fma(s0, b0, std::fma(s1, b1, std::fma(s2, b2, s3 * b3)));
#else
      const float v = s0 * b0 + (s1 * b1 + (s2 * b2 + s3 * b3));
#endif
      out[i] = round_u8(v);
    }
    // OpenCV vectorizes this pass 8 values at a time in float (above) and
    // finishes the row's last (width % 8) values with exact integers, which
    // round differently. The position counts in the interleaved row PaddleX
    // resized, which is RGB when to_rgb.
    const int vec_end = width / 8 * 8;
    for (int i = std::max(0, vec_end - 2); i < width; ++i) {
      const int x = i / 3, c = i % 3;
      if (x * 3 + (to_rgb_ ? 2 - c : c) < vec_end) continue;
      int64_t acc = 0;
      for (int t = 0; t < 4; ++t) acc += static_cast<int64_t>(r[t][i]) * b[t];
      dst[i] = sat_u8(static_cast<int>((acc + (1 << (2 * kCoefBits - 1))) >> (2 * kCoefBits)));
    }
  }

  template <int CH>
  void cubic_ipp_row(int y, uint8_t* dst) {
    const float* r[4];
    fetch<CH, 4>(y, r);
    const float* w = &ys_.wf[static_cast<size_t>(y) * 4];
    const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
    const float *__restrict r0 = r[0], *__restrict r1 = r[1], *__restrict r2 = r[2], *__restrict r3 = r[3];
    uint8_t* __restrict out = dst;
    const int width = rw_ * 3;  // a local: the byte stores could otherwise alias rw_
    for (int i = 0; i < width; ++i) out[i] = round_u8((r0[i] * w0 + r1[i] * w1) + (r2[i] * w2 + r3[i] * w3));
  }

  ImageU8 img_;
  int rw_;
  bool to_rgb_;
  Mode mode_ = Mode::kCopy;
  Axis xs_, ys_;
  int ax_ = 1, ay_ = 1;
  std::vector<AreaTap> xtaps_, ytaps_;
  std::vector<int> yfirst_;
  std::vector<float> hf_, acc_;
  std::unique_ptr<RowCache> cache_;
};

}  // namespace

void resize_normalize(const ImageU8& img, int rh, int rw, int interp, CubicImpl cubic,
                      const Normalizer& norm, float* out, int out_h, int out_w, int row_begin,
                      int row_end) {
  const size_t plane = static_cast<size_t>(out_h) * out_w;
  const int img_end = std::min(row_end, rh);
  if (img_end > row_begin) {
    Resampler resampler(img, rh, rw, interp, cubic, norm.to_rgb);
    std::vector<uint8_t> line(static_cast<size_t>(rw) * 3);
    for (int y = row_begin; y < img_end; ++y) {
      resampler.row(y, line.data());
      float* o = out + static_cast<size_t>(y) * out_w;
      norm.write_row(line.data(), rw, o, plane);
      for (int p = 0; p < 3; ++p) std::fill(o + p * plane + rw, o + p * plane + out_w, 0.f);
    }
  }
  for (int y = std::max(row_begin, rh); y < row_end; ++y)
    for (int p = 0; p < 3; ++p) {
      float* o = out + p * plane + static_cast<size_t>(y) * out_w;
      std::fill(o, o + out_w, 0.f);
    }
}

}  // namespace posepipe
