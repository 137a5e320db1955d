// Detector preprocessing: cv2.resize-compatible resampling fused with
// PaddleX's Normalize and the HWC -> CHW permute.
#pragma once

#include <cstddef>
#include <cstdint>

namespace posepipe {

// An HWC uint8 image with contiguous rows: 1 (grey), 3 (BGR) or 4 (BGRA) channels.
struct ImageU8 {
  const uint8_t* data = nullptr;
  int height = 0;
  int width = 0;
  int channels = 0;
};

// PaddleX's Normalize evaluates float32(float32(x * alpha) + beta) with
// alpha = scale / std and beta = -mean / std formed in double and then rounded
// to float32; keeping that order is what makes the output bit-identical. With
// 8-bit input that is a table per channel.
struct Normalizer {
  float lut[3][256];  // the result for every byte value, per output plane
  bool to_rgb;        // the source is BGR and output plane 0 is R
  Normalizer(const double mean[3], const double std[3], bool is_scale, bool to_rgb);
  int source_channel(int plane) const { return to_rgb ? 2 - plane : plane; }
  // Normalizes one interleaved 3-channel row (source channel order) into the
  // three output planes, `plane_stride` floats apart.
  void write_row(const uint8_t* line, int width, float* out, size_t plane_stride) const;
};

enum Interp : int { kNearest = 0, kLinear = 1, kCubic = 2, kArea = 3 };

// OpenCV has two 8-bit bicubic resizers: its own fixed-point one, and Intel
// IPP's, which the x86 opencv-python wheels call instead whenever the source
// is at least 4x4. They differ by one grey level on a few percent of pixels.
enum class CubicImpl { kOpenCV, kIPP };

// PaddleX's keep_ratio size: scale = min(max(target) / max(img), min(target) /
// min(img)), each side rounded half to even as Python's round() does (at least 1).
void keep_ratio_size(int h, int w, int target_h, int target_w, int* rh, int* rw);

// Resizes `img` to rh x rw as cv2.resize(interpolation=interp) does on the
// 3-channel image (grey is replicated, alpha dropped), normalizes it and writes
// the planes to out[3][out_h][out_w] with the image at the top-left and 0.0
// elsewhere. Only canvas rows [row_begin, row_end) are written, so one image
// can be split across threads.
void resize_normalize(const ImageU8& img, int rh, int rw, int interp, CubicImpl cubic,
                      const Normalizer& norm, float* out, int out_h, int out_w,
                      int row_begin, int row_end);

}  // namespace posepipe
